//! Runs an [`ExecCore`] off the async runtime, one command at a time.
//!
//! Owns [`Worker`]: a task's executor behind a queue. Each command runs on
//! tokio's blocking pool once a permit of a shared [`Semaphore`] is held, so
//! the number of steps computing at once is bounded (the agent's worker
//! pool: one permit per core by default) and control traffic on the async
//! threads is never held up by computation. Commands of one task run in the
//! order they were sent, which is what makes persistence requests complete
//! in order. Results come back on a channel as [`Done`].
//!
//! It must not interpret the protocol: the driver tags runs with a
//! *generation* and drops results of runs it has since stopped.

use std::sync::Arc;

use baton_proto::{Action, Checkpoint, Digest, ExecutorEvent, PersistRequest, StateRef};
use baton_task::{Program, State};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::exec::{ExecCore, ExecError};

/// Something for the executor to do.
pub enum Cmd {
    /// `Action::Run` in generation `gen`.
    Run {
        /// The driver's generation for this run.
        gen: u64,
        /// The state to run from.
        from: StateRef,
    },
    /// `Action::Continue` in generation `gen`.
    Continue {
        /// The generation of the run being continued.
        gen: u64,
    },
    /// `Action::Capture`.
    Capture {
        /// The state to encode.
        state: StateRef,
        /// The preferred delta base.
        base: Option<StateRef>,
    },
    /// `Action::Persist`; `module` is the digest the module bytes must have.
    Persist {
        /// The request.
        req: Box<PersistRequest>,
        /// The announced module digest (for module bytes in the request).
        module: Digest,
    },
    /// Hands over the newest stored state (for writing back files at the
    /// end, or status).
    Stored(oneshot::Sender<Option<(StateRef, State)>>),
}

/// What a command led to.
pub enum Done {
    /// The executor's answer to `Run`/`Continue` of generation `gen`.
    Exec {
        /// The generation.
        gen: u64,
        /// The event.
        event: ExecutorEvent,
    },
    /// The answer to `Capture`.
    Captured(Checkpoint),
    /// `Capture` of `state` failed (the stub will ask again if it still
    /// wants it).
    CaptureFailed {
        /// The state asked for.
        state: StateRef,
        /// Why.
        error: ExecError,
    },
    /// Writes through `seq` are done; `program` is set if module bytes
    /// were accepted.
    Persisted {
        /// The request's sequence number.
        seq: u64,
        /// A module accepted with this request.
        program: Option<(Program, Vec<u8>)>,
    },
    /// A write failed: the state or module from the peer is bad.
    PersistFailed {
        /// Why.
        error: ExecError,
    },
}

/// A handle on a task's executor.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Worker {
    /// Starts the executor's queue. At most `permits.available_permits()`
    /// commands of all workers sharing `permits` compute at once.
    pub fn spawn(
        core: ExecCore,
        permits: Arc<Semaphore>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Worker {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        tokio::spawn(async move {
            let mut core = Some(core);
            while let Some(cmd) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return; // the pool is closed: shutting down
                };
                let Some(c) = core.take() else { return };
                let joined = tokio::task::spawn_blocking(move || {
                    let mut c = c;
                    let result = run(&mut c, cmd);
                    drop(permit);
                    (c, result)
                })
                .await;
                let Ok((c, result)) = joined else {
                    // A panic inside the task runtime: nothing sensible is
                    // left to run; the driver sees the queue close.
                    tracing::error!("the executor panicked; this task stops here");
                    return;
                };
                core = Some(c);
                if let Some(d) = result {
                    if done.send(d).is_err() {
                        return;
                    }
                }
            }
        });
        Worker { tx }
    }

    /// Queues a command. A closed worker (after a panic or shutdown)
    /// ignores it; the driver notices through its `Done` channel.
    pub fn send(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
    }

    /// Carries out an action that drives the executor (`Run`, `Continue`,
    /// `Stop`, `Capture`, `Persist`), keeping the run generation in `gen`;
    /// hands any other action (`Deliver`, `Finish`) back to the caller.
    /// `module` is the digest module bytes in a `Persist` must have.
    pub fn dispatch(&self, action: Action, gen: &mut u64, module: Digest) -> Option<Action> {
        match action {
            Action::Run { from } => {
                *gen += 1;
                self.send(Cmd::Run { gen: *gen, from });
            }
            Action::Continue => self.send(Cmd::Continue { gen: *gen }),
            // A step in flight finishes on its own; its answer, of an
            // older generation, is dropped.
            Action::Stop => *gen += 1,
            Action::Capture { state, base } => self.send(Cmd::Capture { state, base }),
            Action::Persist(req) => self.send(Cmd::Persist { req, module }),
            other => return Some(other),
        }
        None
    }

    /// The newest stored state.
    pub async fn stored(&self) -> Option<(StateRef, State)> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Stored(tx));
        rx.await.ok().flatten()
    }
}

fn run(core: &mut ExecCore, cmd: Cmd) -> Option<Done> {
    match cmd {
        Cmd::Run { gen, from } => Some(Done::Exec {
            gen,
            event: core.run(from),
        }),
        Cmd::Continue { gen } => Some(Done::Exec {
            gen,
            event: core.cont(),
        }),
        Cmd::Capture { state, base } => Some(match core.capture(state, base) {
            Ok(cp) => Done::Captured(cp),
            Err(error) => Done::CaptureFailed { state, error },
        }),
        Cmd::Persist { req, module } => {
            let seq = req.seq;
            let mut program = None;
            if let Some(bytes) = &req.module {
                match core.accept_module(bytes.as_bytes(), module) {
                    Ok(p) => program = Some((p, bytes.as_bytes().to_vec())),
                    Err(error) => return Some(Done::PersistFailed { error }),
                }
            }
            if let Some(w) = &req.state {
                if let Err(error) = core.persist(w) {
                    return Some(Done::PersistFailed { error });
                }
            }
            Some(Done::Persisted { seq, program })
        }
        Cmd::Stored(reply) => {
            let _ = reply.send(core.stored().map(|(r, s)| (r, s.clone())));
            None
        }
    }
}
