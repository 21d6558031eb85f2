//! Unpacking a downloaded bundle and placing its model folder into the
//! repository: the file-system half of [`super::BundleStore`].

use std::cell::Cell;
use std::io::Read;
use std::path::{Component, Path};
use std::rc::Rc;

use super::{BundleError, MARKER_FILE, Sha256Hex};

/// Unpacks a tar (gzipped or not) into `dest`, refusing links, absolute
/// paths, `..`, more than one top-level folder and more than `max_bytes` of
/// content. Returns the model folder's name.
pub(crate) fn unpack(
    mut archive: std::fs::File,
    dest: &Path,
    url: &str,
    max_bytes: u64,
) -> Result<String, BundleError> {
    let mut magic = [0u8; 2];
    let gzipped = archive.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    std::io::Seek::rewind(&mut archive).map_err(|source| BundleError::Io {
        path: dest.to_owned(),
        source,
    })?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let allowance = Rc::new(Cell::new(FRAMING_LIMIT));
    let stream = Metered {
        inner: reader,
        left: allowance.clone(),
    };
    let result = unpack_entries(stream, &allowance, dest, url, max_bytes);
    if result.is_err() && allowance.get() == 0 {
        return Err(BundleError::Archive {
            url: url.to_owned(),
            message: format!(
                "its tar headers, names and padding exceed {} MiB",
                FRAMING_LIMIT >> 20
            ),
        });
    }
    result
}

/// How many bytes of an unpacked bundle may be tar's own (headers, long
/// names, pax records, padding) rather than file contents. The tar crate
/// reads a long name or pax record whole into memory at the size its
/// header claims, so without this a small gzipped header could expand to
/// gigabytes in memory.
const FRAMING_LIMIT: u64 = 16 << 20;

/// Reads at most `left` bytes from `inner`; the unpacker raises `left` by
/// each file's size before copying it, so what remains bounds the framing.
struct Metered<R> {
    inner: R,
    left: Rc<Cell<u64>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left.get();
        if left == 0 && !buf.is_empty() {
            return Err(std::io::Error::other(
                "the archive's framing exceeds its allowance",
            ));
        }
        let room = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        self.left.set(left - n as u64);
        Ok(n)
    }
}

/// Unpacks the entries of the tar `stream` into `dest` (see [`unpack`]),
/// raising `allowance` by each file's contents as it copies them.
fn unpack_entries(
    stream: impl Read,
    allowance: &Cell<u64>,
    dest: &Path,
    url: &str,
    max_bytes: u64,
) -> Result<String, BundleError> {
    let bad = |message: String| BundleError::Archive {
        url: url.to_owned(),
        message,
    };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    let mut tar = tar::Archive::new(stream);
    let mut model: Option<String> = None;
    let mut total = 0u64;
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("cannot read the archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read the archive: {e}")))?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            // pax metadata for the whole archive (e.g. from `git archive`).
            continue;
        }
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |message: &str| BundleError::UnsafeEntry {
            url: url.to_owned(),
            entry: shown.clone(),
            message: message.into(),
        };
        let path = entry
            .path()
            .map_err(|_| unsafe_entry("the path is not valid UTF-8"))?
            .into_owned();
        // Only plain names: no root, no `..`, so nothing escapes `dest`.
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_owned()),
                Component::CurDir => {}
                _ => return Err(unsafe_entry("absolute paths and '..' are not allowed")),
            }
        }
        let Some(top) = parts.first() else {
            continue;
        };
        let top = top
            .to_str()
            .ok_or_else(|| unsafe_entry("the path is not valid UTF-8"))?;
        if !crate::repository::valid_entry_name(top) {
            return Err(bad(format!(
                "the top-level folder '{top}' is not a model name (letters, digits, '-', '_', '.')"
            )));
        }
        match &model {
            None => model = Some(top.to_owned()),
            Some(name) if name != top => {
                return Err(bad(format!(
                    "it holds more than one top-level folder ('{name}', '{top}'); a bundle holds one model"
                )));
            }
            Some(_) => {}
        }
        let target = parts.iter().fold(dest.to_owned(), |p, part| p.join(part));
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if kind.is_file() {
            if parts.len() < 2 {
                return Err(bad(format!(
                    "'{shown}' is a file at the top level; files belong inside the model folder"
                )));
            }
            let parent = target.parent().expect("a joined path has a parent");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            let mut out = std::fs::File::create(&target).map_err(io(&target))?;
            // Counts what is really written, whatever the header claims, so
            // a decompression bomb stops at the limit.
            let budget = max_bytes.saturating_sub(total);
            // The contents and the padding after them are not framing.
            let contents = entry.size().min(budget.saturating_add(1)) + 512;
            allowance.set(allowance.get().saturating_add(contents));
            let written = std::io::copy(&mut (&mut entry).take(budget.saturating_add(1)), &mut out)
                .map_err(|e| bad(format!("cannot unpack '{shown}': {e}")))?;
            total += written;
            if total > max_bytes {
                return Err(BundleError::TooLarge {
                    url: url.to_owned(),
                    limit: max_bytes,
                });
            }
        } else {
            return Err(unsafe_entry(
                "only files and folders are allowed (no links or devices)",
            ));
        }
    }
    model.ok_or_else(|| bad("it is empty".into()))
}

/// Installs the unpacked model folder `from` as `<repository>/<name>`,
/// marked with `digest`; replaces only a folder an earlier bundle installed.
pub(super) fn place(
    from: &Path,
    repository: &Path,
    name: &str,
    digest: &Sha256Hex,
) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    let target = repository.join(name);
    let marker = target.join(MARKER_FILE);
    if target.exists() {
        match std::fs::read_to_string(&marker) {
            Ok(installed) if installed.trim() == digest.as_str() => return Ok(()),
            Ok(_) => {}
            Err(_) => {
                return Err(BundleError::Occupied {
                    name: name.to_owned(),
                    path: target,
                });
            }
        }
    }
    std::fs::create_dir_all(repository).map_err(io(repository))?;
    // Assembled in a hidden folder (the repository skips those), then
    // swapped in, so a reload never sees a half-copied model.
    let staging = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(repository)
        .map_err(io(repository))?;
    link_tree(from, staging.path())?;
    std::fs::write(staging.path().join(MARKER_FILE), digest.as_str())
        .map_err(io(staging.path()))?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    std::fs::rename(staging.path(), &target).map_err(io(&target))?;
    let _ = staging.keep();
    Ok(())
}

/// Mirrors `from` into `to` with hard links (weights can be large), copying
/// where linking is not possible (another filesystem).
fn link_tree(from: &Path, to: &Path) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(io(&source))?.is_dir() {
            link_tree(&source, &target)?;
        } else if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses '..', which is the point of some tests:
            // write the name bytes directly.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8], max: u64) -> (tempfile::TempDir, Result<String, BundleError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive");
        std::fs::write(&path, bytes).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let result = unpack(std::fs::File::open(&path).unwrap(), &out, "test://b", max);
        (dir, result)
    }

    #[test]
    fn unpacks_one_model_folder_plain_or_gzipped() {
        let tar = tar_of(&[
            ("m/config.toml", b"instances = 1"),
            ("m/1/model.wasm", b"x"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        for bytes in [tar.clone(), gz.finish().unwrap()] {
            let (dir, result) = unpack_bytes(&bytes, 1 << 20);
            assert_eq!(result.unwrap(), "m");
            assert!(dir.path().join("out/m/1/model.wasm").is_file());
        }
    }

    #[test]
    fn refuses_traversal_two_models_and_oversize() {
        let (dir, result) = unpack_bytes(&tar_of(&[("m/../../evil", b"x")]), 1 << 20);
        let err = result.unwrap_err();
        assert!(matches!(err, BundleError::UnsafeEntry { .. }), "{err}");
        assert!(!dir.path().join("evil").exists());
        let (_, result) = unpack_bytes(&tar_of(&[("/abs/x", b"x")]), 1 << 20);
        assert!(matches!(result, Err(BundleError::UnsafeEntry { .. })));
        let (_, result) = unpack_bytes(&tar_of(&[("a/1/x", b"x"), ("b/1/x", b"x")]), 1 << 20);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("more than one top-level folder"), "{err}");
        let (_, result) = unpack_bytes(&tar_of(&[("m/1/model.wasm", &[0; 100])]), 10);
        assert!(matches!(result, Err(BundleError::TooLarge { .. })));
    }

    #[test]
    fn a_long_name_that_expands_past_the_framing_limit_is_refused_unread() {
        // A GNU long-name record claiming 64 MiB, gzipped to 64 KiB: tar
        // would read it whole into memory.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(64 << 20);
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, header.as_bytes()).unwrap();
        for _ in 0..64 {
            std::io::Write::write_all(&mut gz, &[b'a'; 1 << 20]).unwrap();
        }
        let (_, result) = unpack_bytes(&gz.finish().unwrap(), 1 << 30);
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("tar headers, names and padding exceed 16 MiB"),
            "{err}"
        );
    }
}
