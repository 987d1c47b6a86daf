//! Output files never replace what a command reads.

use crate::failure::{Failure, Result};
use std::path::{Path, PathBuf};

/// Refuses an output path that names one of `protected` (the files a command reads: its
/// input, the model's files): the same location once links and `..` are resolved, or on
/// unix the same device and inode (a hard link). A protected file that does not exist yet
/// (a model's absent `preprocessor_config.json`) is protected by its location, so an
/// output cannot plant one either.
pub fn refuse_overwriting(output: &Path, protected: &[PathBuf]) -> Result<()> {
    let output_location = location(output);
    let output_identity = identity(output);
    for file in protected {
        let same_location = output_location.is_some() && output_location == location(file);
        let same_file = output_identity.is_some() && output_identity == identity(file);
        if same_location || same_file {
            return Err(Failure::Usage(format!(
                "refusing to write {}: it is {}, which this command reads",
                output.display(),
                file.display()
            )));
        }
    }
    Ok(())
}

/// Where `path` is, with every link and `..` resolved: the file's canonical path, or for
/// a file that does not exist (yet) its folder's canonical path and its name.
fn location(path: &Path) -> Option<PathBuf> {
    if let Ok(canonical) = path.canonicalize() {
        return Some(canonical);
    }
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(folder.join(path.file_name()?))
}

/// The device and inode of an existing file (through links).
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Only unix exposes a file's identity; elsewhere the location alone is compared.
#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<(u64, u64)> {
    None
}
