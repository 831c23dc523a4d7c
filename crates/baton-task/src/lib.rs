//! baton's checkpointable task runtime.
//!
//! A *task* is a WebAssembly/WASI module run as a sequence of *steps*; the
//! boundaries between steps are *points*, numbered from 0. At any point the
//! task's complete *state* (linear memory, every mutable global, the WASI
//! host's state, the point number) can be captured as a *checkpoint*, full or
//! as a delta against an earlier one, and continued in a fresh instance, in
//! another process or on another machine, with byte-identical results: the
//! host is deterministic (seeded randomness, a virtual clock, an in-memory
//! file system, no inherited environment).
//!
//! The pieces, in the order a task meets them:
//!
//! - [`Engine`] configures wasmtime once; [`Engine::load`] validates and
//!   prepares a module ([`module`]) and compiles it into a [`Program`].
//! - [`Task::create`] instantiates a program against the WASI host
//!   ([`wasi`]); [`Task::step`] runs one step.
//! - [`Task::checkpoint`] and [`Task::delta`] encode the state
//!   ([`checkpoint`]); [`checkpoint::decode`] turns bytes back into a
//!   [`State`] (applying deltas with [`checkpoint::Delta::apply`]);
//!   [`Task::restore`] continues from it.
//!
//! ```no_run
//! use baton_task::{checkpoint, Engine, StepOutcome, Task, TaskConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new()?;
//! let program = engine.load(&std::fs::read("examples/pi.wasm")?)?;
//! let mut config = TaskConfig::new("pi");
//! config.host.seed = 7;
//! let mut task = Task::create(&engine, &program, config, Box::new(baton_task::wasi::Discard))?;
//!
//! // Run three steps, then capture the state at point 3.
//! for _ in 0..3 {
//!     task.step()?;
//! }
//! let saved = task.checkpoint()?;
//!
//! // Anywhere else: decode and continue from point 3.
//! let checkpoint::Decoded::Full(state) = checkpoint::decode(&saved.bytes, &Default::default())?
//! else { unreachable!("a full checkpoint decodes to a state") };
//! let clock = baton_task::wasi::ClockMode::Virtual { start_realtime_ns: 0 }; // the clock's position is in the state
//! let mut resumed = Task::restore(&engine, &program, &state, clock,
//!                                 Default::default(), Box::new(baton_task::wasi::Discard))?;
//! assert_eq!(resumed.digest()?, saved.digest);
//! while resumed.step()? == StepOutcome::Continue {}
//! # Ok(()) }
//! ```
//!
//! This crate does no networking and keeps only one kind of file of its
//! own, compiled code in the [`CodeCache`] directory; what to do with
//! checkpoints is the caller's business.

#![warn(missing_docs, unreachable_pub)]

pub mod checkpoint;
mod codecache;
pub mod digest;
mod dirty;
mod engine;
mod error;
pub mod module;
mod nan;
pub mod state;
pub mod suspend;
mod task;
pub mod wasi;

pub use checkpoint::Checkpoint;
pub use codecache::{CacheError, CodeCache, CodeSource};
pub use digest::Digest;
pub use engine::{Engine, Program, EPOCH_TICK, MAX_WASM_STACK, TASK_THREAD_STACK};
pub use error::TaskError;
pub use module::Nans;
pub use state::{DirtyTracking, State};
pub use task::{Limits, StepOutcome, Task, TaskConfig, DEFAULT_POINT_EVERY};
