//! What makes a folder a seqpipe cache: the marker `SEQPIPE_CACHE.toml`
//! (with the cache layout's version), written when the cache is created,
//! beside a standard `CACHEDIR.TAG` so that backup and archiving tools skip
//! the cache.
//!
//! seqpipe deletes inside its cache (`gc` removes artifacts, claims and
//! staging; every open cleans `tmp/`), so a folder that is not one must never
//! be taken for one: `--cache ~/data` would otherwise lose the user's
//! `tmp/`, `claims/` or `objects/`. The rules, checked before anything in the
//! folder is created or removed:
//!
//! - a missing or empty folder becomes a cache, marked at once (before its
//!   `LOCK` or any subfolder, so a second process starting beside the first
//!   sees either nothing or the marker);
//! - a marked folder is a cache if this seqpipe knows its layout version;
//! - an unmarked folder holding only seqpipe's own entries and a sled index
//!   (`index/conf`) is a cache made by a seqpipe from before markers: a run,
//!   `status` or `show` marks it and goes on, but `gc` refuses it until then;
//! - anything else is refused, naming the folder and what it holds.

use std::fs;
use std::io;
use std::path::Path;

use super::{io_err, records::write_atomic, Access, CacheError};

/// The marker file at the cache root.
pub const MARKER: &str = "SEQPIPE_CACHE.toml";

/// The version of the cache layout this seqpipe reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// The standard cache-directory tag (<https://bford.info/cachedir/>).
const TAG: &str = "CACHEDIR.TAG";
const TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
     # This file is a cache directory tag created by seqpipe.\n\
     # For information about cache directory tags, see https://bford.info/cachedir/\n";

/// Every entry seqpipe itself puts at a cache root, in any version.
const OWN_ENTRIES: [&str; 13] = [
    MARKER,
    TAG,
    "LOCK",
    "objects",
    "records",
    "latest",
    "claims",
    "tmp",
    "checkpoints",
    "runs",
    "index",
    "jobs",
    "sweeps",
];

/// Checks that `root` is a seqpipe cache, or makes it one when it is missing
/// or empty (see the module doc). Touches nothing in a folder it refuses.
pub(super) fn ensure(root: &Path, access: Access) -> Result<(), CacheError> {
    let marker = root.join(MARKER);
    match fs::read_to_string(&marker) {
        Ok(text) => {
            check_version(root, &text)?;
            // A marked cache without its tag (the checkout's own `cache/`
            // is committed with the marker alone) gets one; a read-only
            // cache can do without.
            let _ = tag(root);
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(CacheError::NotACache {
                path: root.to_path_buf(),
                holds: "it is a file, not a folder".into(),
            })
        }
        Err(e) => return Err(io_err("cannot read", &marker)(e)),
    }
    let entries = match fs::read_dir(root) {
        Ok(listing) => {
            let mut names = Vec::new();
            for entry in listing {
                let name = entry.map_err(io_err("cannot list", root))?.file_name();
                let name = name.to_string_lossy().to_string();
                // Another process's marker on its way in (`write_atomic`).
                if !name.starts_with(&format!(".{MARKER}.")) {
                    names.push(name);
                }
            }
            names.sort();
            names
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err("cannot list", root)(e)),
    };
    if !entries.is_empty() {
        let own = entries.iter().all(|n| OWN_ENTRIES.contains(&n.as_str()))
            && root.join("index").join("conf").is_file();
        if !own {
            return Err(CacheError::NotACache {
                path: root.to_path_buf(),
                holds: describe(root, &entries),
            });
        }
        if access == Access::Exclusive {
            return Err(CacheError::Unmarked {
                path: root.to_path_buf(),
            });
        }
        tracing::info!(
            "{} is a cache from an older seqpipe; marking it with {MARKER}",
            root.display()
        );
    }
    mark(root)
}

/// Writes the marker (atomically) and the cache-directory tag.
fn mark(root: &Path) -> Result<(), CacheError> {
    let text = format!(
        "# This folder is a seqpipe cache: `seqpipe gc` deletes in it what no run\n\
         # references. seqpipe refuses to use a folder without this file.\n\
         seqpipe_cache = {LAYOUT_VERSION}\n"
    );
    write_atomic(&root.join(MARKER), text.as_bytes())?;
    tag(root)
}

/// Writes `CACHEDIR.TAG` unless there is one.
fn tag(root: &Path) -> Result<(), CacheError> {
    let tag = root.join(TAG);
    match fs::File::create_new(&tag) {
        Ok(mut file) => {
            io::Write::write_all(&mut file, TAG_TEXT.as_bytes())
                .map_err(io_err("cannot write", &tag))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("cannot create", &tag)(e)),
    }
    Ok(())
}

fn check_version(root: &Path, text: &str) -> Result<(), CacheError> {
    let unreadable = |detail: String| CacheError::BadMarker {
        path: root.join(MARKER),
        detail,
    };
    let table: toml::Table = text.parse().map_err(|e| unreadable(format!("{e}")))?;
    let version = table
        .get("seqpipe_cache")
        .and_then(toml::Value::as_integer)
        .ok_or_else(|| unreadable("it has no `seqpipe_cache = <version>`".into()))?;
    if version != i64::from(LAYOUT_VERSION) {
        return Err(unreadable(format!(
            "its cache layout version is {version}, and this seqpipe reads version \
             {LAYOUT_VERSION} (use the seqpipe that made it, or another cache folder)"
        )));
    }
    Ok(())
}

/// "claims/, notes.txt, objects/ and 2 more".
fn describe(root: &Path, entries: &[String]) -> String {
    let shown: Vec<String> = entries
        .iter()
        .take(3)
        .map(|n| {
            if root.join(n).is_dir() {
                format!("{n}/")
            } else {
                n.clone()
            }
        })
        .collect();
    let more = entries.len().saturating_sub(shown.len());
    let mut text = format!("it holds {}", shown.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_folder_is_marked_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        ensure(&root, Access::Shared).unwrap();
        let marker = fs::read_to_string(root.join(MARKER)).unwrap();
        assert!(marker.contains("seqpipe_cache = 1"), "{marker}");
        let tag = fs::read_to_string(root.join(TAG)).unwrap();
        assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
        // Marked: gc may open it, and opening again changes nothing.
        ensure(&root, Access::Exclusive).unwrap();
        assert_eq!(fs::read_to_string(root.join(MARKER)).unwrap(), marker);
        // A marked cache that lacks the tag gets it back.
        fs::remove_file(root.join(TAG)).unwrap();
        ensure(&root, Access::Shared).unwrap();
        assert!(root.join(TAG).is_file());
    }

    #[test]
    fn a_folder_with_other_files_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["claims/x", "objects/y", "tmp/z"] {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "mine").unwrap();
        }
        for access in [Access::Shared, Access::Exclusive] {
            let e = ensure(dir.path(), access).unwrap_err();
            assert!(matches!(e, CacheError::NotACache { .. }), "{e}");
            assert!(
                e.to_string().contains("it holds claims/, objects/, tmp/"),
                "{e}"
            );
        }
        assert!(!dir.path().join(MARKER).exists());
        assert!(!dir.path().join(TAG).exists());
    }

    #[test]
    fn an_older_cache_is_adopted_by_a_run_but_not_by_gc() {
        let dir = tempfile::tempdir().unwrap();
        sled::open(dir.path().join("index"))
            .unwrap()
            .flush()
            .unwrap();
        fs::create_dir_all(dir.path().join("records/ab")).unwrap();
        let e = ensure(dir.path(), Access::Exclusive).unwrap_err();
        assert!(matches!(e, CacheError::Unmarked { .. }), "{e}");
        ensure(dir.path(), Access::Shared).unwrap();
        assert!(dir.path().join(MARKER).is_file());
        ensure(dir.path(), Access::Exclusive).unwrap();
    }

    #[test]
    fn a_newer_or_damaged_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MARKER), "seqpipe_cache = 2\n").unwrap();
        let e = ensure(dir.path(), Access::Shared).unwrap_err();
        assert!(e.to_string().contains("layout version is 2"), "{e}");
        fs::write(dir.path().join(MARKER), "nonsense [").unwrap();
        assert!(matches!(
            ensure(dir.path(), Access::Shared),
            Err(CacheError::BadMarker { .. })
        ));
    }
}
