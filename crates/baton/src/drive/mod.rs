//! The one executor and the one drive loop.
//!
//! Owns [`Driver`]: a protocol stub (either side, through
//! [`baton_proto::Stub`]) with its executor ([`worker::Worker`] around an
//! [`exec::ExecCore`]) and its current link. Every run drives its stub
//! through it: a local run (the local stub with migration `never`, no
//! dialer, and a store that keeps only what its journal needs), the client
//! of a run that extends onto an agent, and each task the agent holds. The
//! drain after every input is [`baton_proto::drain`], the same function the
//! protocol simulator runs, so the order (actions, then messages, then
//! events) is written once for all of them.
//!
//! What differs between the sides is what they listen to (a dialer and
//! signals, or an agent's router) and what they make of the stub's leftover
//! actions and events (output for a terminal, a status file): the owner
//! passes those in as [`Hooks`] and as the future [`Driver::wait`] races
//! against the executor and the stub's timer.
//!
//! The rooms: [`exec`] (the executor: the live task, stepping,
//! restoring), `held` (what a side keeps of its states, and what it ships),
//! [`frames`] (a step's output as one blob), [`worker`] (an executor off
//! the async threads, under a shared pool of permits).
//!
//! It must not decide anything the stub decides.

pub mod exec;
pub mod frames;
mod held;
pub mod worker;

use std::future::Future;
use std::time::{Duration, Instant};

use baton_proto::{Action, Digest, Event, ExecutorEvent, LinkEvent, Sink, Stub, Time, Transmit};
use baton_task::Program;
use tokio::sync::mpsc;

use crate::client::link::Outbox;
use exec::ExecError;
use worker::{Done, Worker};

/// What an owner does with the outputs the driver does not carry out
/// itself.
pub trait Hooks {
    /// An action that is not the executor's (`Deliver`, `Finish`: the local
    /// side's).
    fn action(&mut self, action: Action);
    /// A protocol event.
    ///
    /// # Errors
    ///
    /// The owner cannot record it (an unwritable event log): the run stops.
    fn event(&mut self, event: Event) -> anyhow::Result<()>;
}

/// Why [`Driver::wait`] returned.
pub enum Wake<X> {
    /// The stub took an input (an executor answer, a timer); drain again.
    Progress,
    /// The owner's own input.
    Input(X),
    /// Module bytes were accepted with a persisted write (for a cache).
    Program(Program),
    /// A write failed: a bad state or module from the peer, or the disk.
    PersistFailed(ExecError),
    /// The executor is gone (it panicked): nothing more will run.
    ExecutorGone,
}

/// A stub with its executor and its link. See the module docs.
pub struct Driver<S> {
    /// The protocol stub (for the owner's own commands and status).
    pub stub: S,
    worker: Worker,
    done: mpsc::UnboundedReceiver<Done>,
    /// Generation of the executor's current run: answers of runs stopped
    /// since are dropped.
    gen: u64,
    module: Digest,
    origin: Instant,
    link: Option<(u64, Outbox)>,
}

impl<S: Stub> Driver<S> {
    /// A driver for `stub`, whose executor is `worker` (answering on
    /// `done`). `module` is the digest module bytes received in a write
    /// must have; `origin` is the instant the stub's time counts from.
    pub fn new(
        stub: S,
        worker: Worker,
        done: mpsc::UnboundedReceiver<Done>,
        module: Digest,
        origin: Instant,
    ) -> Driver<S> {
        Driver {
            stub,
            worker,
            done,
            gen: 0,
            module,
            origin,
            link: None,
        }
    }

    /// The stub's current time.
    pub fn now(&self) -> Time {
        Time::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// The executor.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The current link, with its number.
    pub fn link(&self) -> Option<(u64, &Outbox)> {
        self.link.as_ref().map(|(n, o)| (*n, o))
    }

    /// A connection (number `id`) is up: messages go out on it now.
    pub fn connected(&mut self, id: u64, outbox: Outbox) {
        if self.link.is_some() {
            self.stub.handle_link(self.now(), LinkEvent::Lost);
        }
        self.link = Some((id, outbox));
        self.stub.handle_link(self.now(), LinkEvent::Connected);
    }

    /// Connection `id` is gone (any connection if `None`). Returns whether
    /// it was the current one.
    pub fn lost(&mut self, id: Option<u64>) -> bool {
        let current = match (&self.link, id) {
            (Some((n, _)), Some(id)) => *n == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if current {
            self.link = None;
            self.stub.handle_link(self.now(), LinkEvent::Lost);
        }
        current
    }

    /// Sends a message outside the stub (an error for the peer), if a link
    /// is up.
    pub fn send(&self, t: Transmit) {
        if let Some((_, outbox)) = &self.link {
            outbox.send(t);
        }
    }

    /// Drains the stub in the protocol's one order: the executor's actions
    /// go to the worker, messages to the link, the rest to `hooks`.
    ///
    /// # Errors
    ///
    /// A hook failed to record an event.
    pub fn drain<H: Hooks>(&mut self, hooks: &mut H) -> anyhow::Result<()> {
        let mut sink = DriverSink {
            worker: &self.worker,
            gen: &mut self.gen,
            module: self.module,
            link: self.link.as_ref().map(|(_, o)| o),
            hooks,
            error: None,
        };
        baton_proto::drain(&mut self.stub, &mut sink);
        match sink.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for the next input: an answer of the executor (fed to the
    /// stub), the stub's deadline (likewise), or `input`, the owner's.
    pub async fn wait<F: Future>(&mut self, input: F) -> Wake<F::Output> {
        let deadline = self.stub.poll_timeout();
        let now = self.now();
        let sleep = async move {
            match deadline {
                Some(t) => {
                    let wait = Duration::from_nanos(t.as_nanos().saturating_sub(now.as_nanos()));
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            done = self.done.recv() => match done {
                Some(d) => self.on_done(d),
                None => Wake::ExecutorGone,
            },
            () = sleep => {
                self.stub.handle_timeout(self.now());
                Wake::Progress
            }
            x = input => Wake::Input(x),
        }
    }

    fn on_done<X>(&mut self, done: Done) -> Wake<X> {
        let now = self.now();
        match done {
            Done::Exec { gen, event } => {
                if gen == self.gen {
                    self.stub.handle_executor(now, event);
                }
            }
            Done::Captured(cp) => self.stub.handle_executor(now, ExecutorEvent::Captured(cp)),
            Done::CaptureFailed { state, error } => {
                tracing::debug!(error = %error, "could not capture a state for the peer; asked again later");
                self.stub
                    .handle_executor(now, ExecutorEvent::CaptureFailed { state });
            }
            Done::Persisted { seq, program } => {
                self.stub.handle_persisted(now, seq);
                if let Some((p, _)) = program {
                    return Wake::Program(p);
                }
            }
            Done::PersistFailed { error } => return Wake::PersistFailed(error),
        }
        Wake::Progress
    }
}

/// The drain's outputs, carried out.
struct DriverSink<'a, H> {
    worker: &'a Worker,
    gen: &'a mut u64,
    module: Digest,
    link: Option<&'a Outbox>,
    hooks: &'a mut H,
    error: Option<anyhow::Error>,
}

impl<H: Hooks> Sink for DriverSink<'_, H> {
    fn action(&mut self, action: Action) {
        tracing::trace!(?action, "action");
        if let Some(other) = self.worker.dispatch(action, self.gen, self.module) {
            self.hooks.action(other);
        }
    }

    fn transmit(&mut self, t: Transmit) {
        if let Some(outbox) = self.link {
            tracing::trace!(message = ?t.message, "send");
            outbox.send(t);
        }
    }

    fn event(&mut self, event: Event) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.hooks.event(event) {
            self.error = Some(e);
        }
    }
}
