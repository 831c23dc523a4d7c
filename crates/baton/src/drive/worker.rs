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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::path::PathBuf;

use baton_proto::{
    Action, Batch, Checkpoint, Digest, ExecutorEvent, PersistRequest, Point, Record, StateRef,
};
use baton_task::wasi::Preopen;
use baton_task::Program;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::drive::exec::{BatchRun, ExecCore, ExecError, FinishReport, Written};
use crate::store::fs::write_atomic;
use crate::store::log::{StateBytes, TaskLog};

/// Something for the executor to do.
pub enum Cmd {
    /// `Action::Run` in generation `gen`.
    Run {
        /// The driver's generation for this run.
        gen: u64,
        /// The state to run from.
        from: StateRef,
        /// How far to run.
        batch: BatchRun,
    },
    /// `Action::Continue` in generation `gen`.
    Continue {
        /// The generation of the run being continued.
        gen: u64,
        /// How far to run.
        batch: BatchRun,
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
    /// The output through this point was shown to the user (noted in the
    /// durable log, if any, in order with the writes).
    Delivered(Point),
    /// Writes the task's files back from the final state.
    Finish {
        /// The final state.
        state: StateRef,
        /// Where the files go.
        preopens: Vec<Preopen>,
        /// The answer.
        reply: oneshot::Sender<Result<FinishReport, ExecError>>,
    },
    /// Forces the log to disk; answers once done (with the error, if any).
    Sync(oneshot::Sender<Result<(), ExecError>>),
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

/// Where a side's persisted writes go when they must outlive the process:
/// the task's log and, for module bytes, a file.
pub struct Durable {
    /// The task's log.
    pub log: TaskLog,
    /// Where module bytes received with a request are written (the agent's
    /// module cache), before the request counts as durable.
    pub module_path: Option<PathBuf>,
}

/// A handle on a task's executor.
#[derive(Clone)]
pub struct Worker {
    to: To,
    batches: Arc<Batches>,
}

/// Numbers the batches sent, and how many of them were asked to end.
#[derive(Default)]
struct Batches {
    /// The number of the newest batch sent.
    sent: AtomicU64,
    /// Batches with a number up to this one end at their next point.
    yielded: Arc<AtomicU64>,
}

impl Batches {
    fn next(&self, batch: Batch) -> BatchRun {
        BatchRun {
            batch,
            number: self.sent.fetch_add(1, Ordering::Relaxed) + 1,
            yielded: self.yielded.clone(),
        }
    }

    /// Ends every batch sent so far at its next point.
    fn yield_all(&self) {
        self.yielded
            .fetch_max(self.sent.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Where a worker's commands go.
#[derive(Clone)]
enum To {
    /// A queue, run off the async threads under the pool's permits.
    Queue(mpsc::UnboundedSender<Cmd>),
    /// Run at once on the caller's thread (a local run: nothing else on
    /// the runtime has to keep moving while a step computes).
    Inline(Arc<Inline>),
}

/// An executor run on the caller's thread, with where its answers go.
struct Inline {
    core: Mutex<(ExecCore, Option<Durable>)>,
    done: mpsc::UnboundedSender<Done>,
}

impl Worker {
    /// Starts the executor's queue. At most `permits.available_permits()`
    /// commands of all workers sharing `permits` compute at once.
    pub fn spawn(
        core: ExecCore,
        durable: Option<Durable>,
        permits: Arc<Semaphore>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Worker {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        tokio::spawn(async move {
            let mut core = Some((core, durable));
            while let Some(cmd) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return; // the pool is closed: shutting down
                };
                let Some(c) = core.take() else { return };
                let joined = tokio::task::spawn_blocking(move || {
                    let (mut c, mut d) = c;
                    let result = run(&mut c, d.as_mut(), cmd);
                    drop(permit);
                    ((c, d), result)
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
        Worker {
            to: To::Queue(tx),
            batches: Arc::default(),
        }
    }

    /// An executor that runs each command at once, on the thread that sends
    /// it, and answers on `done` as [`Worker::spawn`] does. For a run with
    /// no peer: a step then costs no hand-over between threads, and blocking
    /// the caller while it computes holds up nothing (there are no
    /// heartbeats to send).
    pub fn inline(
        core: ExecCore,
        durable: Option<Durable>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Worker {
        Worker {
            to: To::Inline(Arc::new(Inline {
                core: Mutex::new((core, durable)),
                done,
            })),
            batches: Arc::default(),
        }
    }

    /// A handle whose commands go nowhere (for tests of what sends them).
    #[cfg(test)]
    pub(crate) fn detached() -> Worker {
        let (tx, _) = mpsc::unbounded_channel();
        Worker {
            to: To::Queue(tx),
            batches: Arc::default(),
        }
    }

    /// Queues a command. A closed worker (after a panic or shutdown)
    /// ignores it; the driver notices through its `Done` channel.
    pub fn send(&self, cmd: Cmd) {
        match &self.to {
            To::Queue(tx) => {
                let _ = tx.send(cmd);
            }
            To::Inline(i) => {
                let mut guard = i.core.lock().unwrap_or_else(|p| p.into_inner());
                let (core, durable) = &mut *guard;
                if let Some(d) = run(core, durable.as_mut(), cmd) {
                    let _ = i.done.send(d);
                }
            }
        }
    }

    /// Ends the batch in flight at its next point, from any thread (a
    /// Ctrl-C while an inline executor computes).
    pub fn yield_now(&self) {
        self.batches.yield_all();
    }

    /// Carries out an action that drives the executor (`Run`, `Continue`,
    /// `Yield`, `Stop`, `Capture`, `Persist`), keeping the run generation
    /// in `gen`; hands any other action (`Deliver`, `Finish`) back to the
    /// caller. `module` is the digest module bytes in a `Persist` must have.
    pub fn dispatch(&self, action: Action, gen: &mut u64, module: Digest) -> Option<Action> {
        match action {
            Action::Run { from, batch } => {
                *gen += 1;
                let batch = self.batches.next(batch);
                self.send(Cmd::Run {
                    gen: *gen,
                    from,
                    batch,
                });
            }
            Action::Continue { batch } => {
                let batch = self.batches.next(batch);
                self.send(Cmd::Continue { gen: *gen, batch });
            }
            Action::Yield => self.batches.yield_all(),
            // A step in flight finishes on its own; its answer, of an
            // older generation, is dropped.
            Action::Stop => {
                self.batches.yield_all();
                *gen += 1;
            }
            Action::Capture { state, base } => self.send(Cmd::Capture { state, base }),
            Action::Persist(req) => self.send(Cmd::Persist { req, module }),
            other => return Some(other),
        }
        None
    }

    /// Waits until every command sent so far is done and the log is on
    /// disk (it is then no longer written to).
    ///
    /// # Errors
    ///
    /// The final sync failed.
    pub async fn close(&self) -> Result<(), ExecError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Sync(tx));
        rx.await.unwrap_or(Ok(()))
    }

    /// Writes the task's files back from the final state `state`.
    ///
    /// # Errors
    ///
    /// The state is not held, a file cannot be written, or the executor
    /// is gone.
    pub async fn finish(
        &self,
        state: StateRef,
        preopens: &[Preopen],
    ) -> Result<FinishReport, ExecError> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Finish {
            state,
            preopens: preopens.to_vec(),
            reply,
        });
        rx.await.unwrap_or(Err(ExecError::Missing(state)))
    }
}

fn run(core: &mut ExecCore, durable: Option<&mut Durable>, cmd: Cmd) -> Option<Done> {
    match cmd {
        Cmd::Run { gen, from, batch } => Some(Done::Exec {
            gen,
            event: core.run(from, &batch),
        }),
        Cmd::Continue { gen, batch } => Some(Done::Exec {
            gen,
            event: core.cont(&batch),
        }),
        Cmd::Capture { state, base } => Some(match core.capture(state, base) {
            Ok(cp) => Done::Captured(cp),
            Err(error) => Done::CaptureFailed { state, error },
        }),
        Cmd::Persist { req, module } => Some(match persist(core, durable, &req, module) {
            Ok(program) => Done::Persisted {
                seq: req.seq,
                program,
            },
            Err(error) => Done::PersistFailed { error },
        }),
        Cmd::Finish {
            state,
            preopens,
            reply,
        } => {
            let _ = reply.send(core.finish(state, &preopens));
            None
        }
        Cmd::Sync(reply) => {
            let synced = match durable {
                Some(d) => d.log.sync().map_err(ExecError::Store),
                None => Ok(()),
            };
            let _ = reply.send(synced);
            None
        }
        Cmd::Delivered(point) => {
            if let Some(d) = durable {
                if let Err(e) = d.log.append_delivered(point) {
                    // Not fatal: after a crash that output shows again.
                    tracing::warn!(error = %e, "cannot note delivered output");
                }
            }
            None
        }
    }
}

/// Carries out one `Persist` request: module bytes checked (and written, if
/// durable), the state made the store's, and everything appended to the
/// log and fsynced before the request counts as done.
fn persist(
    core: &mut ExecCore,
    durable: Option<&mut Durable>,
    req: &PersistRequest,
    module: Digest,
) -> Result<Option<(Program, Vec<u8>)>, ExecError> {
    let mut program = None;
    if let Some(bytes) = &req.module {
        let p = core.accept_module(bytes.as_bytes(), module)?;
        if let Some(path) = durable.as_ref().and_then(|d| d.module_path.as_ref()) {
            write_atomic(path, bytes.as_bytes()).map_err(|e| ExecError::Store(e.into()))?;
        }
        program = Some((p, bytes.as_bytes().to_vec()));
    }
    let written = match &req.state {
        Some(w) => core.persist(w)?,
        None => Written::Nothing,
    };
    if let Some(d) = durable {
        let record = match &req.record {
            Record::Local(r) => r.encode(),
            Record::Remote(r) => r.encode(),
        };
        let state = match &written {
            Written::Full(b) => Some(StateBytes::Full(b.as_bytes())),
            Written::Delta(b) => Some(StateBytes::Delta(b.as_bytes())),
            Written::Nothing => None,
        };
        d.log
            .append(&record, state, &req.output)
            .map_err(ExecError::Store)?;
        written.recycle();
        if d.log.wants_compaction() {
            let keep = match &req.record {
                Record::Remote(r) => r.output_acked,
                Record::Local(_) => Point(u64::MAX),
            };
            // A failed compaction leaves the old log, still valid.
            let compacted = core
                .full_for_log()
                .map_err(|e| e.to_string())
                .and_then(|full| {
                    d.log
                        .compact(&full, &record, keep)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = compacted {
                tracing::warn!(error = %e, "cannot compact a task's log");
            }
        }
    }
    Ok(program)
}
