//! The one way baton writes a file atomically and locks a directory.
//!
//! Owns [`write_atomic`] (temporary file, fsync, rename, fsync of the
//! directory: after a crash the file is the old one or the new one, never
//! a mix), [`replace_quietly`] (the same without the fsyncs, for files
//! nothing relies on after a crash), [`sync_dir`] and [`lock_dir`] (an
//! advisory `flock` on `<dir>/lock`, held for as long as the returned file
//! lives). Every journal, task directory, data dir and cache file goes
//! through these, so each kind of file makes one promise wherever it is
//! written. It must not know what the files mean.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A file operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FsError {
    /// What was being done ("write", "rename into", …).
    pub action: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Wraps an I/O error with what was done to which file.
pub fn fs_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably: to `<path>.tmp`,
/// fsynced, renamed over `path`, and the directory fsynced.
///
/// # Errors
///
/// [`FsError`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with `bytes` atomically (readers see the old file or the
/// new one) but without fsync: for a file rewritten every second that
/// nothing relies on after a crash (an agent's `status.json`), where
/// forcing the disk each time would only cost.
///
/// # Errors
///
/// [`FsError`] naming the file.
pub fn replace_quietly(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(fs_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(fs_err("rename into", path))
}

/// [`write_atomic`] for contents written piece by piece by `write` (through
/// a small buffer: a large piece goes straight to the file), so that a
/// large file is never assembled in memory first.
///
/// # Errors
///
/// [`FsError`] naming the file; `write`'s own error is reported as a
/// failed write of the temporary file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let tmp = path.with_extension("tmp");
    let f = File::create(&tmp).map_err(fs_err("create", &tmp))?;
    let mut w = io::BufWriter::with_capacity(64 << 10, &f);
    write(&mut w)
        .and_then(|()| w.flush())
        .map_err(fs_err("write", &tmp))?;
    drop(w);
    f.sync_all().map_err(fs_err("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fs_err("rename into", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory, so that a rename or a new file in it is durable.
///
/// # Errors
///
/// [`FsError`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fs_err("sync directory", dir))
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is in use by another process", .0.display())]
    Busy(PathBuf),
    /// The lock file could not be opened.
    #[error(transparent)]
    Io(#[from] FsError),
}

/// Takes the exclusive advisory lock of `dir` (`<dir>/lock`) without
/// waiting. The lock is held until the returned file is dropped or the
/// process ends (even by kill -9: the kernel releases it).
///
/// # Errors
///
/// [`LockError::Busy`] if another process holds it.
pub fn lock_dir(dir: &Path) -> Result<File, LockError> {
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fs_err("open", &path))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(LockError::Busy(dir.to_path_buf()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        assert!(matches!(lock_dir(dir.path()), Err(LockError::Busy(_))));
        drop(held);
        assert!(lock_dir(dir.path()).is_ok());
    }
}
