//! The artifact store on local disk: `objects/ab/<hash>/`, one read-only
//! folder per artifact, named by the hash of its files.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_err, ArtifactStore, CacheError};
use crate::key::Hash;

/// The artifact store on local disk. `memo` is the file-hash memo: absent
/// when another process on this machine holds the local index (files are
/// then hashed in full, which costs time, never correctness).
pub struct LocalStore {
    pub(super) objects: PathBuf,
    pub(super) memo: Option<sled::Tree>,
}

/// Removes a folder tree, restoring write permission on the way (published
/// artifacts are read-only).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        let mut perms = entry.metadata()?.permissions();
        if perms.readonly() {
            perms.set_mode(perms.mode() | 0o200);
            let _ = fs::set_permissions(entry.path(), perms);
        }
    }
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

impl LocalStore {
    fn object_path(&self, id: &str) -> PathBuf {
        let prefix = id.get(..2).unwrap_or("__");
        self.objects.join(prefix).join(id)
    }

    fn memo_get(&self, path: &Path, meta: &fs::Metadata) -> Option<[u8; 32]> {
        let stored = self
            .memo
            .as_ref()?
            .get(path.as_os_str().as_encoded_bytes())
            .ok()??;
        let stamp = memo_stamp(meta);
        (stored.len() == stamp.len() + 32 && stored[..stamp.len()] == stamp[..]).then(|| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&stored[stamp.len()..]);
            h
        })
    }

    fn memo_put(&self, path: &Path, meta: &fs::Metadata, hash: &[u8; 32]) {
        let Some(memo) = &self.memo else { return };
        let mut value = memo_stamp(meta);
        value.extend_from_slice(hash);
        let _ = memo.insert(path.as_os_str().as_encoded_bytes(), value);
    }

    /// The content hash of a folder; `memo` consults and fills the memo.
    pub(super) fn hash_folder(&self, dir: &Path, memo: bool) -> Result<Hash, CacheError> {
        let mut listing = blake3::Hasher::new();
        let mut files = 0usize;
        // A single file is its own listing; links in raw data folders are
        // followed (artifacts hold none).
        let walker = walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .follow_links(true)
            .min_depth(if dir.is_file() { 0 } else { 1 });
        for entry in walker {
            let entry = entry.map_err(|e| CacheError::Io {
                action: "cannot list",
                path: dir.to_path_buf(),
                source: e.into(),
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| CacheError::Io {
                action: "cannot stat",
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            let cached = if memo {
                self.memo_get(path, &meta)
            } else {
                None
            };
            let hash = match cached {
                Some(h) => h,
                None => {
                    let h = hash_file(path)?;
                    if memo && !recently_modified(&meta) {
                        self.memo_put(path, &meta, &h);
                    }
                    h
                }
            };
            let rel = match path.strip_prefix(dir) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy(),
                _ => path.file_name().unwrap_or_default().to_string_lossy(),
            };
            listing.update(rel.as_bytes());
            listing.update(&[0]);
            listing.update(&meta.len().to_le_bytes());
            listing.update(&hash);
            files += 1;
        }
        listing.update(&files.to_le_bytes());
        Ok(listing.finalize().to_hex().to_string())
    }
}

/// A file modified in the last two seconds is not memoised: another write in
/// the same clock tick could leave size, mtime and inode unchanged (an edit
/// that keeps the length, on a filesystem with coarse timestamps), and the
/// memo would then hide it. Like git's "racily clean" entries, such a file
/// is simply hashed again next time.
fn recently_modified(meta: &fs::Metadata) -> bool {
    let Ok(modified) = meta.modified() else {
        return true;
    };
    match std::time::SystemTime::now().duration_since(modified) {
        Ok(age) => age < std::time::Duration::from_secs(2),
        Err(_) => true, // modified "in the future": clock skew, trust nothing
    }
}

fn memo_stamp(meta: &fs::Metadata) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&meta.len().to_le_bytes());
    v.extend_from_slice(&meta.mtime().to_le_bytes());
    v.extend_from_slice(&meta.mtime_nsec().to_le_bytes());
    v.extend_from_slice(&meta.ino().to_le_bytes());
    v
}

/// blake3 of a file's bytes, streamed.
pub fn hash_file(path: &Path) -> Result<[u8; 32], CacheError> {
    let mut file = File::open(path).map_err(io_err("cannot open", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

fn set_read_only(dir: &Path) {
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file() {
            if let Ok(meta) = entry.metadata() {
                let mut perms = meta.permissions();
                perms.set_mode(perms.mode() & !0o222);
                let _ = fs::set_permissions(entry.path(), perms);
            }
        }
    }
}

impl ArtifactStore for LocalStore {
    fn publish(&self, staged: &Path) -> Result<Hash, CacheError> {
        let id = self.hash_folder(staged, false)?;
        let target = self.object_path(&id);
        if target.exists() {
            // Same bytes already stored, unless the stored copy is damaged.
            if self.verify(&id).is_ok() {
                remove_tree(staged).map_err(io_err("cannot remove", staged))?;
                return Ok(id);
            }
            remove_tree(&target).map_err(io_err("cannot remove", &target))?;
        }
        let parent = target.parent().expect("objects/ab");
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        set_read_only(staged);
        if let Err(e) = fs::rename(staged, &target) {
            // Two stages of one run may produce the same bytes at once: the
            // other one published first, and its copy is ours.
            if target.is_dir() && self.verify(&id).is_ok() {
                remove_tree(staged).map_err(io_err("cannot remove", staged))?;
                return Ok(id);
            }
            return Err(io_err("cannot publish into", &target)(e));
        }
        // Fill the memo for the published paths (rename keeps mtime and inode).
        self.hash_folder(&target, true)?;
        Ok(id)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.object_path(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.object_path(id).is_dir()
    }

    fn verify(&self, id: &str) -> Result<(), CacheError> {
        let path = self.object_path(id);
        if !path.is_dir() {
            return Err(CacheError::Corrupt {
                id: id.to_string(),
                detail: format!("{} is missing", path.display()),
            });
        }
        let actual = self.hash_folder(&path, true)?;
        if actual != id {
            return Err(CacheError::Corrupt {
                id: id.to_string(),
                detail: format!("its files hash to {actual}"),
            });
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), CacheError> {
        let path = self.object_path(id);
        remove_tree(&path).map_err(io_err("cannot remove", &path))
    }

    fn list(&self) -> Result<Vec<Hash>, CacheError> {
        let mut ids = Vec::new();
        let prefixes = fs::read_dir(&self.objects).map_err(io_err("cannot list", &self.objects))?;
        for prefix in prefixes.flatten() {
            for entry in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}
