//! Claims on stage keys: who computes a stage when several runs need it.
//!
//! A claim is an exclusive lock on `claims/<key>` (flock). Each claim opens
//! its own file description, so the lock excludes other threads of this
//! process (parallel sweep trials) as well as other processes (a second
//! terminal, Slurm jobs on other nodes: Linux maps flock onto NFS locks). The
//! first to claim a key computes it; the others wait, then find it cached
//! instead of computing it again into the same checkpoint folder. The kernel
//! drops the lock when its holder dies, so a killed run never leaves a stale
//! claim behind.

use std::fs::{self, File, TryLockError};
use std::path::Path;

use super::{io_err, CacheError};

/// A stage key claimed for computing; released on drop.
pub struct Claim {
    _file: File,
    /// With a shared object store: the lease that keeps other machines
    /// from computing the key meanwhile.
    pub(super) _lease: Option<super::remote::Lease>,
}

/// Claims `key` under `dir`, calling `on_wait` once if someone else holds it
/// (so the user learns why nothing happens) and then waiting for it.
pub fn claim(dir: &Path, key: &str, on_wait: impl FnOnce()) -> Result<Claim, CacheError> {
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let path = dir.join(key);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            on_wait();
            file.lock().map_err(io_err("cannot lock", &path))?;
        }
        Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &path)(e)),
    }
    Ok(Claim {
        _file: file,
        _lease: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_second_claim_waits_for_the_first_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), "k", || panic!("nobody holds it yet")).unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let waited = Arc::new(AtomicBool::new(false));
        let (r, w, d) = (released.clone(), waited.clone(), dir.path().to_path_buf());
        let second = std::thread::spawn(move || {
            let _c = claim(&d, "k", || w.store(true, Ordering::SeqCst)).unwrap();
            // Only after the first claim was dropped.
            assert!(r.load(Ordering::SeqCst));
        });
        std::thread::sleep(Duration::from_millis(200));
        released.store(true, Ordering::SeqCst);
        drop(first);
        second.join().unwrap();
        assert!(waited.load(Ordering::SeqCst));
        // Another key is independent.
        let _a = claim(dir.path(), "a", || {}).unwrap();
        let _b = claim(dir.path(), "b", || panic!("keys are independent")).unwrap();
    }
}
