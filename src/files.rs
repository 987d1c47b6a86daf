//! Opening the files the engine is handed: only regular files are read, and the JSON
//! files are read whole only up to a cap, so a FIFO, a device or `/dev/zero` behind a
//! link ends in an error rather than a hang or an exhausted memory.

use crate::error::{io_error, Error, Result};
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// The largest `config.json`, `preprocessor_config.json` or sharded index read: an
/// ImageNet-21k `id2label` is about 1 MiB.
pub const MAX_JSON_BYTES: u64 = 8 << 20;

/// Opens `path` for reading if it is a regular file (a link is followed). The kind is
/// checked before opening, so that a FIFO or a device is never opened (opening some
/// devices acts on them), and again on the open file, in case the path was replaced in
/// between; on unix the open does not wait for a FIFO's writer either.
pub fn open_regular(path: &Path) -> Result<File> {
    let before = std::fs::metadata(path).map_err(io_error(path))?;
    refuse_unless_regular(path, &before)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on a regular file's reads.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io_error(path))?;
    let opened = file.metadata().map_err(io_error(path))?;
    refuse_unless_regular(path, &opened)?;
    Ok(file)
}

/// The text of a small JSON file, refusing one over [`MAX_JSON_BYTES`].
pub fn read_json_text(path: &Path) -> Result<String> {
    let file = open_regular(path)?;
    let too_large = || Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than the {} MiB a JSON file may hold",
                MAX_JSON_BYTES >> 20
            ),
        ),
    };
    if file.metadata().map_err(io_error(path))?.len() > MAX_JSON_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    // The cap holds even for a file that grows while it is read.
    file.take(MAX_JSON_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_error(path))?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

fn refuse_unless_regular(path: &Path, metadata: &Metadata) -> Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {}, not a regular file", kind_of(metadata)),
        ),
    })
}

/// What a file that is not a regular file is, with its article.
fn kind_of(metadata: &Metadata) -> &'static str {
    if metadata.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = metadata.file_type();
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_named_and_refused() {
        let err = open_regular(Path::new("/")).unwrap_err().to_string();
        assert_eq!(err, "/: is a directory, not a regular file");
        #[cfg(unix)]
        {
            let err = read_json_text(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert_eq!(err, "/dev/zero: is a device, not a regular file");
        }
    }
}
