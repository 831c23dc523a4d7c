//! [`TaskError`]: everything that can go wrong loading, running, capturing
//! or restoring a task. One enum so that the CLI can map each kind to its
//! exit status in one place.

use std::time::Duration;

use crate::checkpoint::CheckpointError;
use crate::digest::Digest;
use crate::module::ModuleError;
use crate::wasi::HostError;

/// An error from this crate.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The module was rejected.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// wasmtime could not be configured.
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    /// Compilation failed.
    #[error("cannot compile the module: {0}")]
    Compile(String),
    /// Instantiation failed.
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    /// The WASI host could not be set up or write files back.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A step trapped.
    #[error("task trapped in the step after point {point}: {message}{}", backtrace_suffix(.backtrace))]
    Trap {
        /// The point the failed step started from.
        point: u64,
        /// What the trap was.
        message: String,
        /// Function names, innermost first.
        backtrace: Vec<String>,
    },
    /// A step trapped after `max_memory` had refused it memory: most likely
    /// the task's own reaction to a failed allocation (Rust aborts, C code
    /// that does not check `malloc`), so it is reported as the limit.
    #[error("task trapped in the step after point {point} after --max-memory ({limit} bytes) refused it memory (it asked for {asked}): {message}{}; raise --max-memory", backtrace_suffix(.backtrace))]
    OutOfMemory {
        /// The point the failed step started from.
        point: u64,
        /// The limit.
        limit: u64,
        /// The largest memory size refused.
        asked: u64,
        /// What the trap was.
        message: String,
        /// Function names, innermost first.
        backtrace: Vec<String>,
    },
    /// A step ran longer than `max_step_time`.
    #[error("the step after point {point} ran longer than --max-step-time {}; raise the limit or make steps shorter", crate::task::fmt_duration(*.limit))]
    StepTimeout {
        /// The point the step started from.
        point: u64,
        /// The limit.
        limit: Duration,
    },
    /// The task needs more memory than `max_memory` allows to even start.
    #[error("the task needs {needed} bytes of memory, more than --max-memory {limit}")]
    MemoryLimit {
        /// Bytes needed.
        needed: u64,
        /// The limit.
        limit: u64,
    },
    /// `step` after the task finished.
    #[error("the task already finished with status {0}")]
    AlreadyFinished(i32),
    /// `step` or capture after a trap or timeout.
    #[error("the task failed earlier; restore a checkpoint to go on")]
    Failed,
    /// A state for another module.
    #[error("the state belongs to module {found}, not to this module ({expected})")]
    ModuleMismatch {
        /// This program's digest.
        expected: Digest,
        /// The state's module digest.
        found: Digest,
    },
    /// A state that does not fit the module.
    #[error("the state does not fit the module: {0}")]
    BadState(String),
    /// `delta` without a base.
    #[error("no base checkpoint to make a delta against; take a full checkpoint first")]
    NoBase,
    /// Encoding or decoding a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

fn backtrace_suffix(frames: &[String]) -> String {
    if frames.is_empty() {
        String::new()
    } else {
        format!(" (wasm backtrace: {})", frames.join(" <- "))
    }
}
