//! The task's file descriptor table.
//!
//! This file owns descriptor numbering and what each descriptor refers to
//! (stdio, a directory or a file of the virtual FS, with its position and
//! flags). Numbering follows wasmtime: 0, 1, 2 are stdio, preopens follow
//! from 3 in order, a new descriptor reuses the highest closed number if any
//! and otherwise takes one more than the highest in use. It must not touch
//! file contents or guest memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::abi::{Errno, WasiResult};
use super::vfs::Ino;

/// Most descriptors a task may hold open at once (`EMFILE` beyond).
pub(crate) const MAX_FDS: usize = 16_384;

/// What a descriptor refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Desc {
    /// Standard input: the in-memory stdin.
    Stdin,
    /// Standard output: the output sink.
    Stdout,
    /// Standard error: the output sink.
    Stderr,
    /// A directory.
    Dir {
        ino: Ino,
        /// The guest path it was preopened as; `None` if opened by the task.
        preopen: Option<String>,
        /// Opened with `fd_read` rights.
        read: bool,
    },
    /// A regular file.
    File {
        ino: Ino,
        /// The current position.
        pos: u64,
        read: bool,
        write: bool,
        /// `fdflags` (append, nonblock, sync flags as requested).
        flags: u16,
    },
}

impl Desc {
    /// The node this descriptor refers to, if any.
    pub(crate) fn ino(&self) -> Option<Ino> {
        match self {
            Desc::Dir { ino, .. } | Desc::File { ino, .. } => Some(*ino),
            _ => None,
        }
    }
}

/// Open descriptors by number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FdTable {
    used: BTreeMap<u32, Desc>,
    free: BTreeSet<u32>,
}

impl FdTable {
    /// A table with stdin, stdout and stderr open.
    pub(crate) fn new() -> Self {
        let used = BTreeMap::from([(0, Desc::Stdin), (1, Desc::Stdout), (2, Desc::Stderr)]);
        FdTable {
            used,
            free: BTreeSet::new(),
        }
    }

    /// Whether another descriptor may be opened.
    pub(crate) fn has_room(&self) -> bool {
        self.used.len() < MAX_FDS
    }

    /// Opens a descriptor for `desc`; returns its number.
    pub(crate) fn push(&mut self, desc: Desc) -> WasiResult<u32> {
        if !self.has_room() {
            return Err(Errno::Mfile);
        }
        let fd = match self.free.pop_last() {
            Some(fd) => fd,
            None => match self.used.last_key_value() {
                Some((&last, _)) => match last.checked_add(1) {
                    Some(fd) => fd,
                    None => (0..u32::MAX)
                        .rev()
                        .find(|fd| !self.used.contains_key(fd))
                        .ok_or(Errno::Mfile)?,
                },
                None => 0,
            },
        };
        self.used.insert(fd, desc);
        Ok(fd)
    }

    /// The descriptor `fd` (`EBADF` if not open).
    pub(crate) fn get(&self, fd: u32) -> WasiResult<&Desc> {
        self.used.get(&fd).ok_or(Errno::Badf)
    }

    /// The descriptor `fd`, mutably.
    pub(crate) fn get_mut(&mut self, fd: u32) -> WasiResult<&mut Desc> {
        self.used.get_mut(&fd).ok_or(Errno::Badf)
    }

    /// The directory inode behind `fd`: `ENOTDIR` for a file, `EBADF` otherwise.
    pub(crate) fn dir(&self, fd: u32) -> WasiResult<Ino> {
        match self.get(fd)? {
            Desc::Dir { ino, .. } => Ok(*ino),
            Desc::File { .. } => Err(Errno::Notdir),
            _ => Err(Errno::Badf),
        }
    }

    /// Closes `fd`, returning what it referred to.
    pub(crate) fn remove(&mut self, fd: u32) -> WasiResult<Desc> {
        let desc = self.used.remove(&fd).ok_or(Errno::Badf)?;
        self.free.insert(fd);
        Ok(desc)
    }

    /// `fd_renumber`: moves `from` to `to`, returning the descriptor that was
    /// at `to` (now closed), if any.
    pub(crate) fn renumber(&mut self, from: u32, to: u32) -> WasiResult<Option<Desc>> {
        if !self.used.contains_key(&from) {
            return Err(Errno::Badf);
        }
        if from == to {
            return Ok(None);
        }
        let desc = self.remove(from)?;
        self.free.remove(&to);
        Ok(self.used.insert(to, desc))
    }

    /// Whether any open descriptor refers to `ino`.
    pub(crate) fn refers_to(&self, ino: Ino) -> bool {
        self.used.values().any(|d| d.ino() == Some(ino))
    }

    /// All open descriptors.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Desc)> {
        self.used.iter().map(|(&fd, d)| (fd, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: Ino) -> Desc {
        Desc::File {
            ino,
            pos: 0,
            read: true,
            write: false,
            flags: 0,
        }
    }

    #[test]
    fn numbering_follows_wasmtime() {
        let mut t = FdTable::new();
        assert_eq!(t.push(file(1)), Ok(3));
        assert_eq!(t.push(file(2)), Ok(4));
        assert_eq!(t.push(file(3)), Ok(5));
        t.remove(3).unwrap();
        t.remove(4).unwrap();
        assert_eq!(t.push(file(4)), Ok(4));
        assert_eq!(t.push(file(5)), Ok(3));
        assert_eq!(t.push(file(6)), Ok(6));
        assert_eq!(t.get(99), Err(Errno::Badf));
        assert_eq!(t.remove(99), Err(Errno::Badf));
    }

    #[test]
    fn renumber_replaces_the_target() {
        let mut t = FdTable::new();
        t.push(file(1)).unwrap();
        t.push(file(2)).unwrap();
        assert_eq!(t.renumber(3, 4), Ok(Some(file(2))));
        assert_eq!(t.get(4), Ok(&file(1)));
        assert_eq!(t.get(3), Err(Errno::Badf));
        assert_eq!(t.renumber(3, 4), Err(Errno::Badf));
        assert!(t.refers_to(1));
        assert!(!t.refers_to(2));
        assert_eq!(t.dir(4), Err(Errno::Notdir));
        assert_eq!(t.dir(1), Err(Errno::Badf));
    }
}
