//! Keeping an on-disk cache to a size: every entry's modification time is
//! when it was last used, and storing an entry drops the least recently
//! used ones beyond the cache's budget. Without it, every model update or
//! server upgrade adds an entry for good, until the disk is full.

use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Marks the entry at `path` (a file or a folder) as used now.
pub(crate) fn mark_used(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.set_modified(SystemTime::now())
}

/// Removes the least recently used entries of `dir` (the files and folders
/// `is_entry` accepts by name) until those left add up to at most
/// `max_bytes`, sparing `kept` (the one just stored). Other names, such as
/// another process's half-written entry, are left alone.
pub(crate) fn trim(
    dir: &Path,
    kept: &Path,
    max_bytes: u64,
    is_entry: impl Fn(&str) -> bool,
) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_str().is_some_and(&is_entry) {
            continue;
        }
        let path = entry.path();
        let used = entry.metadata()?.modified()?;
        let folder = entry.file_type()?.is_dir();
        entries.push((used, size(&path)?, folder, path));
    }
    let mut total: u64 = entries.iter().map(|(_, len, _, _)| len).sum();
    entries.sort();
    for (_, len, folder, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == kept {
            continue;
        }
        let removed = if folder {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), bytes = len, "dropped the least recently used cache entry")
            }
            // Another process sharing the folder removed it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total -= len;
    }
    Ok(())
}

/// Bytes of the files at or under `path`; links are not followed.
fn size(path: &Path) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += size(&entry?.path())?;
    }
    Ok(total)
}
