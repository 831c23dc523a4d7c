//! The numbers and memory layouts of the `wasi_snapshot_preview1` ABI.
//!
//! This file owns only constants: errno values, rights bits, flag bits, file
//! types and the byte offsets of the structures the host writes into guest
//! memory. The values are those of the WASI preview1 specification
//! (`wasi_snapshot_preview1.witx`). It must not contain behaviour.

/// Name of the import module every preview1 function lives in.
pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

/// A WASI preview1 error number, as returned to the guest.
///
/// Only the values this host produces are listed; the numbers are fixed by
/// the specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Errno {
    /// Bad file descriptor.
    Badf = 8,
    /// File exists.
    Exist = 20,
    /// Bad address: a guest pointer or length is outside linear memory.
    Fault = 21,
    /// File too large.
    Fbig = 22,
    /// Illegal byte sequence (a path that is not UTF-8).
    Ilseq = 25,
    /// Invalid argument.
    Inval = 28,
    /// I/O error (also: inconsistent host state, which a valid state never has).
    Io = 29,
    /// Is a directory.
    Isdir = 31,
    /// Too many open files.
    Mfile = 33,
    /// Filename too long.
    Nametoolong = 37,
    /// No such file or directory.
    Noent = 44,
    /// No space left on device (the virtual FS limit was reached).
    Nospc = 51,
    /// Function not supported.
    Nosys = 52,
    /// Not a directory.
    Notdir = 54,
    /// Directory not empty.
    Notempty = 55,
    /// Not supported.
    Notsup = 58,
    /// Value too large to be stored in data type.
    Overflow = 61,
    /// Operation not permitted (a path escaping its base directory).
    Perm = 63,
    /// Invalid seek.
    Spipe = 70,
}

impl Errno {
    /// The number the guest sees.
    pub(crate) fn raw(self) -> i32 {
        self as u16 as i32
    }
}

/// Result of a host function body: `Ok` becomes errno 0.
pub(crate) type WasiResult<T> = Result<T, Errno>;

/// File types (`filetype`).
pub(crate) mod filetype {
    /// Unknown (used for stdio, which is never a terminal here).
    pub(crate) const UNKNOWN: u8 = 0;
    /// A directory.
    pub(crate) const DIRECTORY: u8 = 3;
    /// A regular file.
    pub(crate) const REGULAR_FILE: u8 = 4;
}

/// Rights bits (`rights`).
pub(crate) mod rights {
    pub(crate) const FD_DATASYNC: u64 = 1 << 0;
    pub(crate) const FD_READ: u64 = 1 << 1;
    pub(crate) const FD_SEEK: u64 = 1 << 2;
    pub(crate) const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub(crate) const FD_SYNC: u64 = 1 << 4;
    pub(crate) const FD_TELL: u64 = 1 << 5;
    pub(crate) const FD_WRITE: u64 = 1 << 6;
    pub(crate) const FD_ADVISE: u64 = 1 << 7;
    pub(crate) const FD_ALLOCATE: u64 = 1 << 8;
    pub(crate) const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub(crate) const PATH_CREATE_FILE: u64 = 1 << 10;
    pub(crate) const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub(crate) const PATH_LINK_TARGET: u64 = 1 << 12;
    pub(crate) const PATH_OPEN: u64 = 1 << 13;
    pub(crate) const FD_READDIR: u64 = 1 << 14;
    pub(crate) const PATH_READLINK: u64 = 1 << 15;
    pub(crate) const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub(crate) const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub(crate) const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub(crate) const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub(crate) const FD_FILESTAT_GET: u64 = 1 << 21;
    pub(crate) const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub(crate) const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub(crate) const PATH_SYMLINK: u64 = 1 << 24;
    pub(crate) const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub(crate) const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub(crate) const POLL_FD_READWRITE: u64 = 1 << 27;
    /// Every right defined by preview1 (bits 0 to 29).
    pub(crate) const ALL: u64 = (1 << 30) - 1;

    /// Rights reported for a preopened directory (as wasmtime reports them).
    pub(crate) const PREOPEN_BASE: u64 = PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES;

    /// Inheriting rights reported for a preopened directory.
    pub(crate) const PREOPEN_INHERITING: u64 = PREOPEN_BASE
        | FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
}

/// File descriptor flags (`fdflags`).
pub(crate) mod fdflags {
    pub(crate) const APPEND: u16 = 1 << 0;
    pub(crate) const DSYNC: u16 = 1 << 1;
    pub(crate) const NONBLOCK: u16 = 1 << 2;
    pub(crate) const RSYNC: u16 = 1 << 3;
    pub(crate) const SYNC: u16 = 1 << 4;
    /// Every defined flag.
    pub(crate) const ALL: u16 = APPEND | DSYNC | NONBLOCK | RSYNC | SYNC;
}

/// Open flags (`oflags`).
pub(crate) mod oflags {
    pub(crate) const CREAT: u16 = 1 << 0;
    pub(crate) const DIRECTORY: u16 = 1 << 1;
    pub(crate) const EXCL: u16 = 1 << 2;
    pub(crate) const TRUNC: u16 = 1 << 3;
}

/// Timestamp-setting flags (`fstflags`).
pub(crate) mod fstflags {
    pub(crate) const ATIM: u16 = 1 << 0;
    pub(crate) const ATIM_NOW: u16 = 1 << 1;
    pub(crate) const MTIM: u16 = 1 << 2;
    pub(crate) const MTIM_NOW: u16 = 1 << 3;
}

/// Clock identifiers (`clockid`).
pub(crate) mod clockid {
    pub(crate) const REALTIME: u32 = 0;
    pub(crate) const MONOTONIC: u32 = 1;
    pub(crate) const PROCESS_CPUTIME: u32 = 2;
    pub(crate) const THREAD_CPUTIME: u32 = 3;
}

/// Seek origins (`whence`).
pub(crate) mod whence {
    pub(crate) const SET: u8 = 0;
    pub(crate) const CUR: u8 = 1;
    pub(crate) const END: u8 = 2;
}

/// Event types (`eventtype`) of `poll_oneoff`.
pub(crate) mod eventtype {
    pub(crate) const CLOCK: u8 = 0;
    pub(crate) const FD_READ: u8 = 1;
    pub(crate) const FD_WRITE: u8 = 2;
}

/// `subclockflags::subscription_clock_abstime`.
pub(crate) const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;
/// `eventrwflags::fd_readwrite_hangup`.
pub(crate) const FD_READWRITE_HANGUP: u16 = 1;

/// Layout of `iovec` / `ciovec`: `buf: u32` at 0, `buf_len: u32` at 4.
pub(crate) const IOVEC_SIZE: u32 = 8;
/// Layout of `fdstat`: filetype u8 @0, flags u16 @2, rights_base u64 @8,
/// rights_inheriting u64 @16.
pub(crate) const FDSTAT_SIZE: u32 = 24;
/// Layout of `filestat`: dev @0, ino @8, filetype u8 @16, nlink @24, size
/// @32, atim @40, mtim @48, ctim @56 (all u64 except filetype).
pub(crate) const FILESTAT_SIZE: u32 = 64;
/// Layout of `prestat`: tag u8 @0 (0 = dir), pr_name_len u32 @4.
pub(crate) const PRESTAT_SIZE: u32 = 8;
/// Layout of `dirent`: d_next u64 @0, d_ino u64 @8, d_namlen u32 @16,
/// d_type u8 @20; the name follows the 24-byte header.
pub(crate) const DIRENT_SIZE: u32 = 24;
/// Layout of `subscription`: userdata u64 @0, tag u8 @8, then the union at
/// 16: clock { id u32 @16, timeout u64 @24, precision u64 @32, flags u16 @40 }
/// or fd_readwrite { fd u32 @16 }.
pub(crate) const SUBSCRIPTION_SIZE: u32 = 48;
/// Layout of `event`: userdata u64 @0, error u16 @8, type u8 @10,
/// fd_readwrite { nbytes u64 @16, flags u16 @24 }.
pub(crate) const EVENT_SIZE: u32 = 32;
