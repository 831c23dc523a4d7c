//! baton's protocol core: the messages, and the local and remote stubs as
//! sans-IO state machines.
//!
//! **This crate is deterministic and does no IO.** It opens no sockets,
//! spawns no threads, reads no clock and knows nothing of wasmtime or of the
//! task runtime: to it a checkpoint is opaque bytes plus (point, digest).
//! Every input carries the current [`Time`]; every output is data for a
//! driver to act on. That is what lets `baton` drive the same code over QUIC
//! and the simulator drive it through millions of fault schedules.
//!
//! # The pieces
//!
//! - [`Message`]: every protocol message, with a versioned, bounded binary
//!   encoding ([`Message::encode`], [`Message::decode`], [`DecodeError`]).
//! - [`LocalStub`] (in `baton run`) and [`RemoteStub`] (in the agent): one
//!   state machine per side of a task. The local stub coordinates: it mints
//!   every epoch and proposes every change of executor or responsibility;
//!   the remote stub records them durably before accepting.
//! - [`Stub`], [`Sink`] and [`drain`]: the one drain order every driver
//!   runs after every input (below).
//! - [`policy`]: when to migrate, who is responsible, which mode.
//! - [`journal`]: what each side persists, and the write requests.
//! - `sim` (feature `sim`, on for tests and examples): the deterministic
//!   simulator that checks the invariants I1–I5 under faults.
//!
//! The protocol itself (messages, state diagrams, timelines and why each
//! invariant holds) is described in `docs/protocol.md`.
//!
//! # Driving a stub
//!
//! A stub has the shape of `quinn-proto`'s `Connection`: `handle_*(now, …)`
//! methods feed it inputs, `poll_*` methods drain its outputs, and
//! `poll_timeout` says when to call `handle_timeout`. Both stubs implement
//! the [`Stub`] trait. A driver owns the executor (the task runtime), the
//! store and the transport, implements [`Sink`] for what it does with each
//! output, and after **every** input calls [`drain`], which runs the one
//! drain order that every driver (the simulator included) shares:
//!
//! 1. every action, in order ([`Sink::action`]):
//!    - `Run`, `Continue`, `Yield`, `Stop`, `Capture`: drive the executor.
//!      After every batch of steps (one step, or more while the action's
//!      [`Batch`] lasts, ended early by `Yield`) it reports
//!      [`ExecutorEvent::Reached`], with each step's output by its point,
//!      and waits; it runs on only on `Continue`. A `Capture` is answered
//!      with [`ExecutorEvent::Captured`].
//!    - `Persist`: write the request atomically (fsync), then call
//!      `handle_persisted(seq)`. Requests complete in order. A stub never
//!      acknowledges a state to its peer, or passes a point, before the
//!      driver says it is durable; a crash loses exactly what was not yet
//!      reported durable.
//!    - `Deliver` (local): write the output for the user and remember the
//!      point durably. `Finish` (local): the task is over.
//! 2. every transmit ([`Sink::transmit`]): send each message on its channel
//!    (control, bulk, output: separate streams, so bulk never starves
//!    heartbeats).
//! 3. every event ([`Sink::event`]): log them (`--events`).
//! 4. it returns `poll_timeout`: sleep until then (or until the next input)
//!    and call `handle_timeout`.
//!
//! A sink cannot reach the stub while [`drain`] runs. Executor, persistence
//! and transport answers are fed back as further inputs once it returns,
//! and each is followed by another [`drain`]:
//!
//! ```
//! use baton_proto::{
//!     drain, Action, Blob, Digest, Event, ExecutorEvent, LocalConfig, LocalStub, ModuleRef,
//!     Outcome, OutputChunk, Point, Sink, StateRef, Stub, TaskId, Time, Transmit,
//! };
//! use baton_proto::policy::Migrate;
//! use std::sync::Arc;
//!
//! /// A stand-in executor: steps to point 3, then finishes.
//! struct Executor { at: u64, queued: Vec<ExecutorEvent> }
//! impl Executor {
//!     fn state(p: u64) -> StateRef { StateRef::new(Point(p), Digest([p as u8; 32])) }
//!     fn step(&mut self) {
//!         self.at += 1;
//!         let state = Self::state(self.at);
//!         let bytes = Blob::from(format!("step {}\n", self.at).into_bytes());
//!         // One step per batch here; a real executor may run several and
//!         // report each step's output by its point.
//!         let output = vec![OutputChunk { point: Point(self.at), bytes }];
//!         self.queued.push(if self.at == 3 {
//!             ExecutorEvent::Finished { state, output, outcome: Outcome::Exit(0) }
//!         } else {
//!             ExecutorEvent::Reached { state, output }
//!         });
//!     }
//! }
//!
//! /// What the driver does with each output; answers wait in its fields.
//! struct Driver { exec: Executor, out: Vec<u8>, durable: Option<u64>, finished: bool }
//! impl Sink for Driver {
//!     fn action(&mut self, action: Action) {
//!         match action {
//!             Action::Run { from, .. } => { self.exec.at = from.point.0; self.exec.step() }
//!             Action::Continue { .. } => self.exec.step(),
//!             Action::Stop | Action::Yield | Action::Capture { .. } => {}
//!             Action::Persist(req) => self.durable = Some(req.seq), // write + fsync here
//!             Action::Deliver(chunk) => self.out.extend_from_slice(chunk.bytes.as_bytes()),
//!             Action::Finish { .. } => self.finished = true,
//!         }
//!     }
//!     fn transmit(&mut self, _t: Transmit) { /* send on t.channel */ }
//!     fn event(&mut self, _e: Event) { /* log */ }
//! }
//!
//! /// The drive loop: drain, then feed back one answer, until nothing is left.
//! fn drive(stub: &mut impl Stub, driver: &mut Driver, now: Time) -> bool {
//!     loop {
//!         let _wake_at = drain(stub, driver);
//!         if driver.finished {
//!             return true;
//!         }
//!         if let Some(seq) = driver.durable.take() {
//!             stub.handle_persisted(now, seq);
//!         } else if let Some(ev) = driver.exec.queued.pop() {
//!             stub.handle_executor(now, ev);
//!         } else {
//!             return false; // a real driver now waits for `_wake_at` or IO
//!         }
//!     }
//! }
//!
//! let mut cfg = LocalConfig::new(
//!     TaskId("demo".into()),
//!     ModuleRef { digest: Digest([0; 32]), size: 0 },
//!     Blob::default(),
//! );
//! cfg.migrate = Arc::new(Migrate::Never); // no remote in this example
//! let now = Time::ZERO;
//! let mut stub = LocalStub::new(cfg, now, Executor::state(0));
//! let exec = Executor { at: 0, queued: Vec::new() };
//! let mut driver = Driver { exec, out: Vec::new(), durable: None, finished: false };
//! assert!(drive(&mut stub, &mut driver, now));
//! assert_eq!(driver.out, b"step 1\nstep 2\nstep 3\n");
//! ```
//!
//! The remote side is driven the same way; its driver creates a
//! [`RemoteStub`] when a `Hello` names a task it does not know, and recovers
//! one from its journal ([`journal::RemoteRecord`]) after a restart.

#![warn(missing_docs, unreachable_pub)]

pub mod codec;
pub mod config;
mod drive;
pub mod input;
pub mod journal;
mod lineage;
mod link;
mod local;
pub mod message;
pub mod output;
pub mod policy;
mod remote;
pub mod roles;
mod shipping;
pub mod state;
mod stub;
pub mod time;
mod timer;

#[cfg(feature = "sim")]
pub mod sim;

pub use codec::{DecodeError, Limits};
pub use config::{LocalConfig, Mutations, RemoteConfig, SyncEvery, Timing};
pub use drive::{drain, Sink, Stub};
pub use input::{ExecutorEvent, LinkEvent};
pub use journal::{LocalRecord, PersistRequest, Record, RemoteRecord, StateWrite};
pub use local::LocalStub;
pub use message::{Channel, Message, ModuleRef, TaskId};
pub use output::{Action, Batch, Event, Transmit};
pub use remote::RemoteStub;
pub use roles::{Agreement, Assignment, Epoch, Mode, SessionId, Side};
pub use state::{Blob, Checkpoint, Digest, FailKind, Outcome, OutputChunk, Point, StateRef};
pub use time::Time;
