//! Reading a plugin file without trusting what is at its path.
//!
//! `source = "/dev/zero"` would read forever and `source = "some.fifo"` would
//! block forever in a plain `std::fs::read`. So the file is opened
//! non-blocking (opening a FIFO for reading does not wait for a writer),
//! the *opened* file must be a regular file (so a path swapped between a
//! check and the open changes nothing), its size must be within the cap, and
//! at most cap + 1 bytes are ever read (a file that grows while being read
//! is refused too).

use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::path::Path;

use crate::FileKind;

pub(crate) enum ReadError {
    NotAFile(FileKind),
    TooLarge(u64),
    Io(std::io::Error),
}

fn kind(ft: &FileType) -> FileKind {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return FileKind::Fifo;
        }
        if ft.is_char_device() {
            return FileKind::CharDevice;
        }
        if ft.is_block_device() {
            return FileKind::BlockDevice;
        }
        if ft.is_socket() {
            return FileKind::Socket;
        }
    }
    if ft.is_dir() {
        FileKind::Directory
    } else {
        FileKind::Other
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK);
    }
    opts.open(path)
}

/// Read the regular file at `path`, of at most `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, ReadError> {
    // Refuse what is not a regular file before opening it (a device may act
    // on open); then check again what was actually opened.
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(kind(&meta.file_type())));
    }
    let file = open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(kind(&meta.file_type())));
    }
    let max64 = u64::try_from(max).unwrap_or(u64::MAX);
    if meta.len() > max64 {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(max));
    file.take(max64.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > max {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}
