//! baton's deterministic WASI preview1 host.
//!
//! A task imports `wasi_snapshot_preview1`; this module provides every
//! function of it, written here (not wasmtime-wasi) so that all host state is
//! ours to capture: [`HostState`] holds everything a task can observe
//! (arguments, environment, virtual clock, random generator, virtual file
//! system, descriptor table, stdin and its position, output byte counts,
//! exit status) and serialises canonically, so two hosts that made the same
//! calls hold byte-identical states.
//!
//! The host must never read the process environment, the real clocks
//! (outside wall-clock mode) or any host file outside the preopens, and only
//! `hostfs.rs` touches the host file system. Files: `abi.rs` (numbers and
//! layouts), `mem.rs` (bounds-checked guest memory), `clock.rs`, `random.rs`,
//! `vfs.rs` (in-memory file system), `fd.rs` (descriptor table), `hostfs.rs`
//! (load and write-back), `sys_*.rs` (the calls), `linker.rs` (wasmtime glue).
//!
//! # Determinism
//!
//! * Clocks are virtual unless [`ClockMode::Wall`] is chosen; the rule is in
//!   the `clock` module: `realtime = start_realtime_ns + elapsed_ns`, the
//!   other clocks read `elapsed_ns`, every `clock_time_get` advances
//!   `elapsed_ns` by [`TICK_NS`] (1 µs) after reading, and `poll_oneoff`
//!   sleeps advance it to the deadline instead of waiting.
//! * `random_get` draws from BLAKE3 in keyed XOF mode, keyed from
//!   [`HostConfig::seed`]; its state is the key and the byte offset.
//! * The environment is exactly [`HostConfig::env`]; stdin is the bytes in
//!   [`HostConfig::stdin`], read by the caller at task creation.
//! * Files live in an in-memory virtual file system; file timestamps come
//!   from the virtual clock.
//!
//! # Files
//!
//! Each [`Preopen`] is loaded at creation: its host directory's regular
//! files and subdirectories, recursively, in name order. Symbolic links and
//! special files (sockets, devices, FIFOs) are skipped with a warning (a
//! link could point outside the directory). The loaded bytes plus 256 bytes
//! per file or directory are bounded by [`HostConfig::max_fs_bytes`]: loading
//! more is [`HostError::FsLimit`], and a task growing past it gets `ENOSPC`.
//!
//! [`HostState::write_back`] writes back what the task created or changed:
//! directories it created, and every file whose contents it changed or that
//! is under a name it did not have when loaded (created, renamed, or moved
//! with a renamed directory). Each file is written atomically: to a
//! temporary file in the same directory, fsynced, then renamed over the
//! target (keeping the target's permissions). Deletions are *not*
//! propagated: a file the task removed or renamed away stays on the host, so
//! a task can never destroy host data, only add or replace files.
//!
//! # Errors
//!
//! Host functions return WASI errno values as wasmtime does (`EBADF`,
//! `ENOENT`, `EPERM` for a path escaping its directory, ...). A guest
//! pointer or length outside linear memory is `EFAULT` rather than a trap.
//! The functions baton does not provide (sockets, links, `proc_raise`,
//! `fd_allocate`) are still registered and return `ENOSYS` (or `ENOTSUP`
//! where wasmtime does), so every preview1 module links.

mod abi;
mod clock;
mod fd;
mod hostfs;
mod linker;
mod mem;
mod random;
mod serde_bytes;
mod sys_fd;
mod sys_misc;
mod sys_path;
mod sys_poll;
mod vfs;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

pub use clock::TICK_NS;
pub use linker::{add_to_linker, PROVIDED};

use clock::{Clocks, VirtualClock, WallClock};
use fd::{Desc, FdTable};
use random::Rng;
use vfs::Vfs;

/// A host directory made visible to the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// The directory on this machine.
    pub host: PathBuf,
    /// The path the task sees it as (e.g. `/data` or `.`).
    pub guest: String,
}

/// Where the task's clocks come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// Deterministic virtual time starting at `start_realtime_ns` (nanoseconds
    /// since the Unix epoch, usually the real time at task creation).
    Virtual {
        /// `realtime` at task creation.
        start_realtime_ns: u64,
    },
    /// The machine's real clocks: not deterministic (output may differ after
    /// a failover); the command line warns about it.
    Wall,
}

/// Everything needed to create a task's host state.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// argv; `args[0]` is the program name.
    pub args: Vec<String>,
    /// The environment: only what the user passed, never inherited.
    pub env: Vec<(String, String)>,
    /// Seeds the random generator.
    pub seed: u64,
    /// All of stdin, read by the caller at task creation.
    pub stdin: Vec<u8>,
    /// Preopened directories, given descriptors 3, 4, ... in this order.
    pub preopens: Vec<Preopen>,
    /// Where the clocks come from.
    pub clock: ClockMode,
    /// Bound on the bytes held by the virtual file system.
    pub max_fs_bytes: u64,
}

/// An error of the host outside the guest's calls: creating the state,
/// writing files back, or a fault that stops the task.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// An argument contains a NUL byte, which WASI cannot pass.
    #[error("argument {index} contains a NUL byte, which a WASI program cannot receive")]
    ArgHasNul {
        /// Position in `args`.
        index: usize,
    },
    /// An environment variable's name is empty or contains `=` or NUL, or
    /// its value contains NUL.
    #[error("invalid environment variable {name:?}: the name must be non-empty without '=' or NUL, the value without NUL")]
    InvalidEnv {
        /// The variable's name.
        name: String,
    },
    /// A preopen's host path is not a directory.
    #[error("{path}: not a directory (a preopen must name a directory)")]
    NotADirectory {
        /// The host path.
        path: PathBuf,
    },
    /// Reading a preopened host directory or one of its files failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A host file name is not UTF-8; WASI paths must be.
    #[error("{path}: the name is not UTF-8, which WASI cannot represent; rename it or preopen another directory")]
    NonUtf8Name {
        /// The host path.
        path: PathBuf,
    },
    /// The preopened directories hold more than the file system limit.
    #[error("the preopened directories exceed the virtual file system limit of {limit} bytes (at {path}); preopen a smaller directory (files under --dir are held in memory and in every checkpoint)")]
    FsLimit {
        /// The limit, `HostConfig::max_fs_bytes`.
        limit: u64,
        /// The file or directory being loaded when it was exceeded.
        path: PathBuf,
    },
    /// There are more preopens than descriptors can number.
    #[error("too many preopened directories")]
    TooManyPreopens,
    /// `write_back` found no host directory for a preopen (for example on a
    /// restored state before [`HostState::set_host_dirs`]).
    #[error("no host directory is known for preopen {index}; call set_host_dirs or write_back_to")]
    NoHostDir {
        /// The preopen's index.
        index: usize,
    },
    /// A name in the virtual file system cannot be a host file name (only a
    /// corrupt or forged state has one); nothing is written under it.
    #[error("refusing to write back the unsafe name {name:?}")]
    UnsafeName {
        /// The name.
        name: String,
    },
    /// Writing a file or directory back to the host failed.
    #[error("cannot write back {path}: {source}")]
    Write {
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state is internally inconsistent (a corrupt or forged checkpoint).
    #[error("corrupt host state: {0}")]
    Corrupt(&'static str),
    /// A host function needs the task's memory but the task exports none
    /// named `memory`.
    #[error("the task does not export its linear memory as \"memory\"")]
    NoMemory,
    /// `proc_exit` was called with a status outside `[0, 126)`, which WASI
    /// (and wasmtime) reject.
    #[error("proc_exit({0}): the exit status is outside [0, 126)")]
    InvalidExitStatus(u32),
}

/// Returned (inside the `wasmtime::Error`) by `proc_exit`, so that the caller
/// can tell an exit from a trap: `err.downcast_ref::<ProcExit>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcExit(pub i32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the task exited with status {}", self.0)
    }
}

impl std::error::Error for ProcExit {}

/// Which output stream bytes were written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutStream {
    /// Descriptor 1.
    Stdout,
    /// Descriptor 2.
    Stderr,
}

/// Where the task's output goes as it is written. Not part of the state:
/// the command line streams it live, the agent buffers it.
pub trait OutputSink: Send {
    /// Receives bytes the task wrote to `stream`.
    fn write(&mut self, stream: OutStream, bytes: &[u8]);
}

impl<F: FnMut(OutStream, &[u8]) + Send> OutputSink for F {
    fn write(&mut self, stream: OutStream, bytes: &[u8]) {
        self(stream, bytes)
    }
}

/// An [`OutputSink`] that drops everything (the byte counts in the state
/// still grow).
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl OutputSink for Discard {
    fn write(&mut self, _: OutStream, _: &[u8]) {}
}

/// An [`OutputSink`] that keeps everything in memory, shared between clones
/// (give one clone to the host, read the other).
#[derive(Clone, Debug, Default)]
pub struct CapturedOutput {
    inner: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
}

impl CapturedOutput {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }
}

impl OutputSink for CapturedOutput {
    fn write(&mut self, stream: OutStream, bytes: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match stream {
            OutStream::Stdout => g.0.extend_from_slice(bytes),
            OutStream::Stderr => g.1.extend_from_slice(bytes),
        }
    }
}

/// Where each preopen lives on this machine. Not part of the task's state
/// (the same task may be restored where the directories live elsewhere), so
/// it is neither serialised nor compared.
#[derive(Clone, Debug, Default)]
struct HostDirs(Vec<PathBuf>);

impl PartialEq for HostDirs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// All host state of a task.
///
/// Serialisable; its postcard encoding is canonical (same state, same
/// bytes), so it can be hashed into the task's digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    args: Vec<String>,
    env: Vec<(String, String)>,
    rng: Rng,
    clock: VirtualClock,
    vfs: Vfs,
    fds: FdTable,
    #[serde(with = "serde_bytes")]
    stdin: Vec<u8>,
    stdin_pos: u64,
    stdout_len: u64,
    stderr_len: u64,
    exit: Option<i32>,
    /// A command's call stack as it was unwound at this point
    /// ([`crate::suspend`]); `None` for step tasks and at a command's start.
    unwound: Option<Unwound>,
    #[serde(skip)]
    host_dirs: HostDirs,
}

/// The saved frames of a suspended command ([`crate::suspend`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unwound {
    #[serde(with = "serde_bytes")]
    pub(crate) frames: Vec<u8>,
}

impl HostState {
    /// Creates the state of a new task, loading each preopened directory.
    ///
    /// # Errors
    ///
    /// [`HostError::ArgHasNul`] or [`HostError::InvalidEnv`] for arguments
    /// or variables WASI cannot pass; [`HostError::NotADirectory`],
    /// [`HostError::Read`], [`HostError::NonUtf8Name`] or
    /// [`HostError::FsLimit`] when a preopen cannot be loaded.
    pub fn new(cfg: &HostConfig) -> Result<HostState, HostError> {
        for (index, a) in cfg.args.iter().enumerate() {
            if a.contains('\0') {
                return Err(HostError::ArgHasNul { index });
            }
        }
        for (k, v) in &cfg.env {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                return Err(HostError::InvalidEnv { name: k.clone() });
            }
        }
        let start = match cfg.clock {
            ClockMode::Virtual { start_realtime_ns } => start_realtime_ns,
            ClockMode::Wall => WallClock::realtime(),
        };
        let mut vfs = Vfs::new(cfg.max_fs_bytes);
        let mut fds = FdTable::new();
        for (i, p) in cfg.preopens.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| HostError::TooManyPreopens)?;
            let ino = hostfs::load_preopen(&mut vfs, index, &p.host, start)?;
            fds.push(Desc::Dir {
                ino,
                preopen: Some(p.guest.clone()),
                read: true,
            })
            .map_err(|_| HostError::TooManyPreopens)?;
        }
        Ok(HostState {
            args: cfg.args.clone(),
            env: cfg.env.clone(),
            rng: Rng::new(cfg.seed),
            clock: VirtualClock::new(start),
            vfs,
            fds,
            stdin: cfg.stdin.clone(),
            stdin_pos: 0,
            stdout_len: 0,
            stderr_len: 0,
            exit: None,
            unwound: None,
            host_dirs: HostDirs(cfg.preopens.iter().map(|p| p.host.clone()).collect()),
        })
    }

    /// The call stack of a command suspended at this point, if any.
    pub fn unwound(&self) -> Option<&Unwound> {
        self.unwound.as_ref()
    }

    pub(crate) fn take_unwound(&mut self) -> Option<Unwound> {
        self.unwound.take()
    }

    pub(crate) fn set_unwound(&mut self, unwound: Option<Unwound>) {
        self.unwound = unwound;
    }

    /// `Some(n)` once the task called `proc_exit(n)`.
    pub fn exit_status(&self) -> Option<i32> {
        self.exit
    }

    /// Total bytes the task wrote to stdout so far.
    pub fn stdout_len(&self) -> u64 {
        self.stdout_len
    }

    /// Total bytes the task wrote to stderr so far.
    pub fn stderr_len(&self) -> u64 {
        self.stderr_len
    }

    /// Bytes of stdin the task has read so far.
    pub fn stdin_pos(&self) -> u64 {
        self.stdin_pos
    }

    /// Bytes the virtual file system holds (contents plus a fixed cost per
    /// file or directory), the quantity bounded by `max_fs_bytes`.
    pub fn fs_bytes(&self) -> u64 {
        self.vfs.used()
    }

    /// Tells a restored state where its preopens live on this machine (the
    /// host directories are not part of the serialised state), in preopen
    /// order, for [`HostState::write_back`].
    pub fn set_host_dirs(&mut self, preopens: &[Preopen]) {
        self.host_dirs = HostDirs(preopens.iter().map(|p| p.host.clone()).collect());
    }

    /// Writes the files and directories the task created or changed back to
    /// the preopened host directories (see the module docs for the rule),
    /// and reports what was written.
    ///
    /// # Errors
    ///
    /// [`HostError::NoHostDir`] if a preopen's host directory is unknown
    /// (a restored state needs [`HostState::set_host_dirs`]);
    /// [`HostError::Write`] if the host refuses a write;
    /// [`HostError::UnsafeName`] or [`HostError::Corrupt`] for a forged state.
    pub fn write_back(&self) -> Result<WriteBackReport, HostError> {
        hostfs::write_back(&self.vfs, &self.host_dirs.0)
    }

    /// Like [`HostState::write_back`], with the host directories given
    /// explicitly, in preopen order.
    ///
    /// # Errors
    ///
    /// As [`HostState::write_back`].
    pub fn write_back_to(&self, preopens: &[Preopen]) -> Result<WriteBackReport, HostError> {
        let dirs: Vec<PathBuf> = preopens.iter().map(|p| p.host.clone()).collect();
        hostfs::write_back(&self.vfs, &dirs)
    }

    /// Checks the internal consistency of a state, for example one decoded
    /// from an untrusted checkpoint. A state built by this module always
    /// passes; the host never panics on one that does not, but may return
    /// `EIO` to the guest.
    ///
    /// # Errors
    ///
    /// [`HostError::Corrupt`] naming the first inconsistency found.
    pub fn validate(&self) -> Result<(), HostError> {
        self.vfs.validate().map_err(HostError::Corrupt)?;
        for (_, d) in self.fds.iter() {
            match d {
                Desc::Dir { ino, .. } if !self.vfs.node(*ino).is_ok_and(|n| n.is_dir()) => {
                    return Err(HostError::Corrupt(
                        "a directory descriptor names no directory",
                    ));
                }
                Desc::File { ino, .. } if !self.vfs.node(*ino).is_ok_and(|n| !n.is_dir()) => {
                    return Err(HostError::Corrupt("a file descriptor names no file"));
                }
                _ => {}
            }
        }
        if self.stdin_pos > self.stdin.len() as u64 {
            return Err(HostError::Corrupt("stdin position past its end"));
        }
        for (ino, n) in self.vfs.nodes() {
            if n.orphan && !self.fds.refers_to(*ino) {
                return Err(HostError::Corrupt("an unlinked node no descriptor holds"));
            }
        }
        Ok(())
    }
}

/// What [`HostState::write_back`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBackReport {
    /// Host directories created, in creation order.
    pub dirs_created: Vec<PathBuf>,
    /// Host files written (created or replaced), in order.
    pub files_written: Vec<PathBuf>,
    /// Total bytes of the files written.
    pub bytes_written: u64,
}

/// A task's host: its state plus where output goes. This is what the
/// functions registered by [`add_to_linker`] operate on.
pub struct Host {
    /// Everything the task can observe; captured at every point.
    pub state: HostState,
    /// Receives stdout and stderr as they are written.
    pub sink: Box<dyn OutputSink>,
    wall: Option<WallClock>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("state", &self.state)
            .field("wall_clock", &self.wall.is_some())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host over `state`, writing output to `sink`, with clocks from
    /// `clock` ([`ClockMode::Virtual`] uses the state's own virtual clock;
    /// its `start_realtime_ns` only matters in [`HostState::new`]).
    pub fn new(state: HostState, sink: Box<dyn OutputSink>, clock: ClockMode) -> Host {
        let wall = match clock {
            ClockMode::Wall => Some(WallClock::new(state.clock.elapsed_ns)),
            ClockMode::Virtual { .. } => None,
        };
        Host { state, sink, wall }
    }

    /// Whether the clocks are the machine's real ones.
    pub fn wall_clock(&self) -> bool {
        self.wall.is_some()
    }

    fn clocks(&mut self) -> Clocks<'_> {
        Clocks {
            virt: &mut self.state.clock,
            wall: self.wall.as_ref(),
        }
    }

    /// Current time for file timestamps.
    fn fs_now(&mut self) -> u64 {
        self.clocks().fs_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn config() -> HostConfig {
        HostConfig {
            args: vec!["prog".into(), "a b".into()],
            env: vec![("K".into(), "V".into())],
            seed: 7,
            stdin: b"input".to_vec(),
            preopens: vec![],
            clock: ClockMode::Virtual {
                start_realtime_ns: 1_700_000_000_000_000_000,
            },
            max_fs_bytes: 1 << 20,
        }
    }

    #[test]
    fn rejects_what_wasi_cannot_pass() {
        let mut c = config();
        c.args.push("x\0y".into());
        assert!(matches!(
            HostState::new(&c),
            Err(HostError::ArgHasNul { index: 2 })
        ));
        for (k, v) in [("", "v"), ("A=B", "v"), ("A", "v\0")] {
            let mut c = config();
            c.env.push((k.into(), v.into()));
            assert!(matches!(
                HostState::new(&c),
                Err(HostError::InvalidEnv { .. })
            ));
        }
    }

    #[test]
    fn serde_round_trip_is_canonical() {
        let s = HostState::new(&config()).unwrap();
        let bytes = postcard::to_allocvec(&s).unwrap();
        let back: HostState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
        back.validate().unwrap();
        let again = HostState::new(&config()).unwrap();
        assert_eq!(postcard::to_allocvec(&again).unwrap(), bytes);
    }

    proptest::proptest! {
        /// Decoding arbitrary or corrupted bytes never panics; whatever
        /// decodes can be validated without panicking.
        #[test]
        fn corrupt_states_are_errors_not_panics(
            at in 0usize..4096, byte in 0u8..=255, junk in proptest::collection::vec(0u8..=255, 0..256)
        ) {
            let mut c = config();
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("d")).unwrap();
            std::fs::write(dir.path().join("d/f"), b"data").unwrap();
            c.preopens = vec![Preopen { host: dir.path().to_path_buf(), guest: ".".into() }];
            let s = HostState::new(&c).unwrap();
            let mut bytes = postcard::to_allocvec(&s).unwrap();
            let i = at % bytes.len();
            bytes[i] = byte;
            if let Ok(s) = postcard::from_bytes::<HostState>(&bytes) {
                let _ = s.validate();
            }
            if let Ok(s) = postcard::from_bytes::<HostState>(&junk) {
                let _ = s.validate();
            }
        }
    }

    #[test]
    fn truncated_state_fails_to_decode() {
        let s = HostState::new(&config()).unwrap();
        let bytes = postcard::to_allocvec(&s).unwrap();
        for n in 0..bytes.len() {
            assert!(postcard::from_bytes::<HostState>(&bytes[..n]).is_err());
        }
    }
}
