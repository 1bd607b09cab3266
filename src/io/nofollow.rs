//! Reads, truncations and removals that never follow a link at the last component and never
//! block on a FIFO or device: the primitives every read of a file someone else may have put in
//! our directories goes through. They answer `std::io` errors, saying what a path is instead.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

/// Removes a lock file that no one holds: taken without waiting first (a holder keeps it), never
/// through a link (a link at its name is removed itself).
pub fn remove_idle_lock(path: &Path) -> std::io::Result<()> {
    let file = match std::fs::OpenOptions::new().write(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => return remove_entry(path),
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        // Removed while held, so a spawn that opened it before sees it gone only after this.
        Ok(_held) => remove_entry(path),
        Err(_) => Ok(()),
    }
}

/// Opens `path` for reading if it is a regular file: see [`open_regular_as`].
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular_as(path, std::fs::OpenOptions::new().read(true))
}

/// Opens `path` for appending, created 0600 when missing, if it is a regular file (see
/// [`open_regular_as`]): an agent's log, its times.
pub fn open_appending(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular_as(path, std::fs::OpenOptions::new().append(true).create(true).mode(0o600))
}

/// Opens `path` as `how` says (read, write, append, create) if it is a regular file: not through
/// a link at its last component (`O_NOFOLLOW`), never blocking on a FIFO or device
/// (`O_NONBLOCK`), checked with `fstat` on what was opened. The error says what the path is
/// instead.
pub fn open_regular_as(path: &Path, how: &mut std::fs::OpenOptions) -> std::io::Result<std::fs::File> {
    let f = how
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(explain)?;
    let t = f.metadata()?.file_type();
    if t.is_file() {
        return Ok(f);
    }
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("not a regular file ({what})")))
}

/// Truncates `path` to nothing if it is a regular file (not through a link, never blocking).
pub fn empty_regular(path: &Path) -> std::io::Result<()> {
    open_regular_as(path, std::fs::OpenOptions::new().write(true))?.set_len(0)
}

/// A regular file of at most `max` bytes, read whole (see [`open_regular`]).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(buf)
}

const LINK: &str = "a symbolic link, not followed";

/// `O_NOFOLLOW` on a link fails with ELOOP, whose text ("too many levels of symbolic links")
/// misleads: say what it is.
fn explain(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, LINK)
    } else {
        e
    }
}

/// Removes what `path` itself is: a directory tree (whose links are removed, never followed), or
/// a file, socket or link (the link, not its target). Missing is fine.
pub fn remove_entry(path: &Path) -> std::io::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `path` is a directory itself (not a link to one).
pub fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}
