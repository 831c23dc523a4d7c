//! One side's executor and state store for a task driven by a protocol stub.
//!
//! Owns [`ExecCore`]: the live [`Task`] (if any), stepping it and restoring
//! it, and the state this side holds (the *store*, and a *mirror* of what
//! the peer was last sent, whose methods live in `held`). It answers the
//! stub's actions (`Run`, `Continue`, `Stop`, `Capture`, the state part of
//! `Persist`) synchronously; [`crate::drive::worker`] runs it off the async
//! runtime, or inline.
//!
//! What the store keeps is a setting ([`Keep`]): a copy of the newest state
//! in memory where this side may have to ship it or run from it again (a
//! run that extends onto an agent, and the agent), only the deltas for the
//! log (a local run with a journal), or nothing at all (a plain local run,
//! which then also computes digests only as often as someone looks at them
//! and writes output straight through). It must not do IO, talk to the
//! network or decide anything about the protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::{Batch, Blob, ExecutorEvent, FailKind, Outcome, OutputChunk, Point, StateRef};
use baton_task::checkpoint::{self, CheckpointError};
use baton_task::wasi::{ClockMode, OutStream, WriteBackReport};
use baton_task::{Engine, Limits, Program, State, StepOutcome, Task, TaskError};

/// Why the executor or the store could not do what the stub asked.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The task runtime failed (outside a step: capture, restore).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A checkpoint could not be decoded or applied.
    #[error("checkpoint from the peer: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A received checkpoint is not the state it claims to be.
    #[error("checkpoint from the peer claims point {claimed} but holds point {found}")]
    WrongState {
        /// The point the message named.
        claimed: u64,
        /// The point inside the bytes.
        found: u64,
    },
    /// The stub asked for a state this side does not hold (a driver bug).
    #[error("no state {0:?} here")]
    Missing(StateRef),
    /// The module is not known yet, so the task cannot run here.
    #[error("the task's module is not here yet")]
    NoProgram,
    /// The durable store failed (a disk error): nothing more can be
    /// promised durable for this task.
    #[error("the task's store: {0}")]
    Store(#[from] crate::store::log::StoreError),
    /// The task's files could not be written back.
    #[error("cannot write the task's files back: {0}")]
    WriteBack(String),
    /// The module bytes the peer sent are not the module it named.
    #[error("the module sent is not the one announced (digest {found}, expected {expected})")]
    ModuleMismatch {
        /// The digest announced.
        expected: baton_proto::Digest,
        /// The digest of the bytes.
        found: baton_proto::Digest,
    },
}

/// The kind of a failure, for the exit status the local side reports.
fn fail_kind_of_exec(e: &ExecError) -> FailKind {
    match e {
        ExecError::Task(t) => fail_kind(t),
        _ => FailKind::Error,
    }
}

/// The kind of a step's failure.
fn fail_kind(e: &TaskError) -> FailKind {
    match e {
        TaskError::Trap { .. } => FailKind::Trap,
        TaskError::StepTimeout { .. }
        | TaskError::MemoryLimit { .. }
        | TaskError::OutOfMemory { .. } => FailKind::Limit,
        _ => FailKind::Error,
    }
}

pub use super::frames::OutputFrames;
use super::held::Mirror;
pub use super::held::Written;

/// What this side's store keeps of the states the stub persists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// A copy of the newest state, in memory: this side may ship it to the
    /// peer or run from it again (both sides of a remote run).
    Copy,
    /// Nothing in memory: persisting a point yields what changed since the
    /// last one, for a log (a local run with a journal).
    Log,
    /// Nothing at all: persisting is free, and the digest of a point is
    /// computed only when `digest_every` has passed since the last one (or
    /// at the end); other points carry [`baton_proto::Digest::default`].
    /// Output goes straight to the task's own sink (a local run without a
    /// journal).
    Nothing {
        /// How often a point's digest is wanted (for `point` events), if
        /// ever.
        digest_every: Option<Duration>,
    },
}

/// A batch to run: how far it may go ([`Batch`]), and how to tell that it
/// was asked to end early (a yield, a stop).
#[derive(Debug)]
pub struct BatchRun {
    /// How far the batch may go.
    pub batch: Batch,
    /// This batch's number.
    pub number: u64,
    /// Batches numbered up to this have been asked to end.
    pub yielded: Arc<AtomicU64>,
}

impl BatchRun {
    /// One step, then report.
    pub fn one() -> BatchRun {
        BatchRun {
            batch: Batch::ONE,
            number: 1,
            yielded: Arc::default(),
        }
    }

    /// Whether another step may start, `started` being when the batch did
    /// and `point` where the task is now.
    fn more(&self, started: Instant, point: u64) -> bool {
        started.elapsed() < self.batch.budget
            && self.batch.stop_at.is_none_or(|p| point < p.0)
            && self.yielded.load(Ordering::Relaxed) < self.number
    }
}

/// What a finished task left, reported when its files are written back.
#[derive(Debug, Default)]
pub struct FinishReport {
    /// What was written back.
    pub written: WriteBackReport,
    /// Memory the task asked for beyond its limit (memory.grow failed).
    pub memory_refused: Option<u64>,
    /// The final memory size, in bytes.
    pub memory: u64,
}
/// The executor and store of one side of one task.
pub struct ExecCore {
    pub(super) engine: Engine,
    pub(super) program: Option<Program>,
    pub(super) clock: ClockMode,
    pub(super) limits: Limits,
    pub(super) task: Option<Task>,
    /// The point the live task is paused at.
    pub(super) at: Option<StateRef>,
    pub(super) store: Option<(StateRef, State)>,
    /// The newest state persisted, when the store keeps no copy of it.
    pub(super) held: Option<StateRef>,
    pub(super) keep: Keep,
    /// When a lazily computed digest was last computed.
    pub(super) last_digest: Option<Instant>,
    pub(super) mirror: Mirror,
    pub(super) out: Arc<Mutex<Vec<u8>>>,
    pub(super) decode_limits: checkpoint::Limits,
}

/// Converts a task digest to the protocol's.
pub fn wire_digest(d: baton_task::Digest) -> baton_proto::Digest {
    baton_proto::Digest(d.0)
}

impl ExecCore {
    /// An executor with nothing in it yet (the agent, before the first
    /// checkpoint arrives). `program` may come later ([`Self::accept_module`]).
    pub fn empty(
        engine: Engine,
        program: Option<Program>,
        clock: ClockMode,
        limits: Limits,
    ) -> ExecCore {
        ExecCore {
            engine,
            program,
            clock,
            limits,
            task: None,
            at: None,
            store: None,
            held: None,
            keep: Keep::Copy,
            last_digest: None,
            mirror: Mirror::None,
            out: Arc::default(),
            decode_limits: checkpoint::Limits {
                max_memory: limits.max_memory,
                ..checkpoint::Limits::default()
            },
        }
    }

    /// An executor around a task just created at point 0, keeping what
    /// `keep` says. Returns it with the state's reference and, unless
    /// nothing is kept, the full checkpoint of that state (for a journal),
    /// made once.
    ///
    /// # Errors
    ///
    /// The task cannot be captured.
    pub fn with_task(
        engine: Engine,
        program: Program,
        clock: ClockMode,
        limits: Limits,
        mut task: Task,
        keep: Keep,
    ) -> Result<(ExecCore, StateRef, Option<baton_task::Checkpoint>), ExecError> {
        let mut core = ExecCore::empty(engine, Some(program), clock, limits);
        core.keep = keep;
        let (at, full) = match keep {
            Keep::Nothing { .. } => {
                // Output streams to the sink the task was created with. The
                // digest is wanted only if this is already the end
                // (`_initialize` exited).
                let digest = match task.finished() {
                    Some(_) => wire_digest(task.digest()?),
                    None => Default::default(),
                };
                let at = StateRef::new(baton_proto::Point(task.point()), digest);
                core.held = Some(at);
                (at, None)
            }
            Keep::Copy | Keep::Log => {
                core.frame_output(&mut task);
                // Makes point 0 the base of later deltas, too.
                let full = task.checkpoint()?;
                let at = StateRef::new(baton_proto::Point(full.point), wire_digest(full.digest));
                if keep == Keep::Copy {
                    core.store = Some((at, task.state()?));
                } else {
                    core.held = Some(at);
                }
                (at, Some(full))
            }
        };
        core.task = Some(task);
        core.at = Some(at);
        Ok((core, at, full))
    }

    /// An executor for a task continued from a log (`baton resume`):
    /// `state` is the newest state the log holds; the task is restored from
    /// it at the first `Run`.
    pub fn resumed(
        engine: Engine,
        program: Program,
        clock: ClockMode,
        limits: Limits,
        keep: Keep,
        at: StateRef,
        state: State,
    ) -> ExecCore {
        let mut core = ExecCore::empty(engine, Some(program), clock, limits);
        core.keep = keep;
        core.store = Some((at, state));
        core
    }

    /// Makes the task's output go into the step's output blob.
    fn frame_output(&self, task: &mut Task) {
        let out = self.out.clone();
        task.set_sink(Box::new(move |s: OutStream, b: &[u8]| {
            OutputFrames::push(&mut out.lock().unwrap_or_else(|p| p.into_inner()), s, b)
        }));
    }

    /// Loads and checks module bytes sent by the peer against the digest it
    /// announced, and keeps the program. Returns it (for a cache).
    ///
    /// # Errors
    ///
    /// The bytes are not a loadable module, or not the one announced.
    pub fn accept_module(
        &mut self,
        bytes: &[u8],
        expected: baton_proto::Digest,
    ) -> Result<Program, ExecError> {
        let program = self.engine.load(bytes)?;
        let found = wire_digest(program.digest());
        if found != expected {
            return Err(ExecError::ModuleMismatch { expected, found });
        }
        self.program = Some(program.clone());
        Ok(program)
    }

    /// Puts a state recovered from a durable log into the store.
    pub fn set_stored(&mut self, at: StateRef, state: State) {
        self.store = Some((at, state));
        self.mirror = Mirror::None;
    }

    /// The newest state in the store, with its reference.
    pub fn stored(&self) -> Option<(StateRef, &State)> {
        self.store.as_ref().map(|(r, s)| (*r, s))
    }

    /// `Action::Run`: continue from `from`, restoring it from the store
    /// unless the live task is paused exactly there, and run a batch.
    pub fn run(&mut self, from: StateRef, batch: &BatchRun) -> ExecutorEvent {
        if self.at != Some(from) || self.task.is_none() {
            if let Err(e) = self.restore(from) {
                return ExecutorEvent::Failed {
                    at: from,
                    kind: fail_kind_of_exec(&e),
                    reason: e.to_string(),
                    output: Vec::new(),
                };
            }
        }
        let live_end = self.task.as_ref().and_then(Task::finished);
        if let (Some(code), true) = (live_end, self.at == Some(from)) {
            // Finished at creation (`_initialize` exited): only the end is
            // left.
            return ExecutorEvent::Finished {
                state: from,
                output: Vec::new(),
                outcome: Outcome::Exit(code),
            };
        }
        if let Some((r, s)) = &self.store {
            if *r == from {
                if let Some(code) = s.finished {
                    return ExecutorEvent::Finished {
                        state: from,
                        output: Vec::new(),
                        outcome: Outcome::Exit(code),
                    };
                }
            }
        }
        self.steps(batch)
    }

    /// `Action::Continue`: run a batch from where the task is paused.
    pub fn cont(&mut self, batch: &BatchRun) -> ExecutorEvent {
        match self.at {
            Some(_) if self.task.is_some() => self.steps(batch),
            _ => ExecutorEvent::Failed {
                at: self.store.as_ref().map_or(
                    StateRef::new(baton_proto::Point(0), baton_proto::Digest::default()),
                    |(r, _)| *r,
                ),
                kind: FailKind::Error,
                reason: "the executor is not paused at a point".to_string(),
                output: Vec::new(),
            },
        }
    }

    fn restore(&mut self, from: StateRef) -> Result<(), ExecError> {
        let program = self.program.as_ref().ok_or(ExecError::NoProgram)?;
        let (r, state) = self.store.as_ref().ok_or(ExecError::Missing(from))?;
        if *r != from {
            return Err(ExecError::Missing(from));
        }
        let out = self.out.clone();
        let sink = Box::new(move |s: OutStream, b: &[u8]| {
            OutputFrames::push(&mut out.lock().unwrap_or_else(|p| p.into_inner()), s, b)
        });
        let task = Task::restore(&self.engine, program, state, self.clock, self.limits, sink)?;
        self.task = Some(task);
        self.at = Some(from);
        if self.keep != Keep::Copy {
            // The log holds it; the task's own base is what deltas need.
            self.store = None;
            self.held = Some(from);
        }
        Ok(())
    }

    /// Runs steps until the batch says stop, keeping each step's output
    /// by its point; the digest is computed once, at the point reached
    /// (lazily with [`Keep::Nothing`]).
    fn steps(&mut self, batch: &BatchRun) -> ExecutorEvent {
        let from = self.at.unwrap_or(StateRef::new(
            baton_proto::Point(0),
            baton_proto::Digest::default(),
        ));
        let Some(task) = self.task.as_mut() else {
            return ExecutorEvent::Failed {
                at: from,
                kind: FailKind::Error,
                reason: "no task to step".to_string(),
                output: Vec::new(),
            };
        };
        let started = Instant::now();
        let mut output = Vec::new();
        let outcome = loop {
            self.out.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let result = task.step();
            let bytes = Blob::from(std::mem::take(
                &mut *self.out.lock().unwrap_or_else(|p| p.into_inner()),
            ));
            match result {
                Ok(o) => {
                    output.push(OutputChunk {
                        point: Point(task.point()),
                        bytes,
                    });
                    if o != StepOutcome::Continue || !batch.more(started, task.point()) {
                        break Ok(o);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let lazy = match self.keep {
            Keep::Nothing { digest_every } => Some(digest_every),
            _ => None,
        };
        let last_digest = &mut self.last_digest;
        let result = outcome.and_then(|o| {
            let wanted = match lazy {
                None => true,
                Some(every) => {
                    o != StepOutcome::Continue
                        || every.is_some_and(|e| last_digest.is_none_or(|t| t.elapsed() >= e))
                }
            };
            if !wanted {
                return Ok((o, baton_task::Digest([0; 32])));
            }
            *last_digest = Some(Instant::now());
            Ok((o, task.digest()?))
        });
        match result {
            Ok((outcome, digest)) => {
                let state = StateRef::new(baton_proto::Point(task.point()), wire_digest(digest));
                self.at = Some(state);
                match outcome {
                    StepOutcome::Continue => ExecutorEvent::Reached { state, output },
                    StepOutcome::Finished(code) => ExecutorEvent::Finished {
                        state,
                        output,
                        outcome: Outcome::Exit(code),
                    },
                }
            }
            Err(e) => {
                // A failed task cannot go on; a later Run restores. The
                // batch's points were never captured, so it ends where the
                // batch began, with the output of the steps that ran.
                self.task = None;
                self.at = None;
                ExecutorEvent::Failed {
                    at: from,
                    kind: fail_kind(&e),
                    reason: e.to_string(),
                    output,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::Checkpoint as WireCheckpoint;
    use baton_proto::{Point, StateWrite};
    use baton_task::TaskConfig;

    const PI: &[u8] = include_bytes!("../../../../examples/pi.wasm");

    fn clock() -> ClockMode {
        ClockMode::Virtual {
            start_realtime_ns: 0,
        }
    }

    /// A core holding a fresh pi task at point 0, and an empty one.
    fn pair() -> (ExecCore, ExecCore, StateRef) {
        let engine = Engine::new().unwrap();
        let program = engine.load(PI).unwrap();
        let mut cfg = TaskConfig::new("pi.wasm");
        cfg.host.args = vec!["pi.wasm".into(), "12".into(), "1000".into()];
        let task =
            Task::create(&engine, &program, cfg, Box::new(baton_task::wasi::Discard)).unwrap();
        let limits = Limits::default();
        let (a, at, _) = ExecCore::with_task(
            engine.clone(),
            program.clone(),
            clock(),
            limits,
            task,
            Keep::Copy,
        )
        .unwrap();
        let b = ExecCore::empty(engine, Some(program), clock(), limits);
        (a, b, at)
    }

    fn reached(ev: &ExecutorEvent) -> (StateRef, Blob) {
        match ev {
            ExecutorEvent::Reached { state, output }
            | ExecutorEvent::Finished { state, output, .. } => {
                assert_eq!(output.len(), 1, "one step per batch");
                (*state, output[0].bytes.clone())
            }
            other => panic!("expected a point, got {other:?}"),
        }
    }

    fn points(output: &[OutputChunk]) -> Vec<u64> {
        output.iter().map(|c| c.point.0).collect()
    }

    #[test]
    fn a_batch_stops_at_its_point_at_a_yield_and_at_the_end_with_output_per_point() {
        let (mut a, _, at) = pair();
        let long = |number, stop_at, yielded: &Arc<AtomicU64>| BatchRun {
            batch: Batch {
                budget: Duration::from_secs(60),
                stop_at,
            },
            number,
            yielded: yielded.clone(),
        };
        let yielded = Arc::new(AtomicU64::new(0));
        let ExecutorEvent::Reached { state, output } =
            a.run(at, &long(1, Some(Point(5)), &yielded))
        else {
            panic!("a point")
        };
        assert_eq!(state.point, Point(5));
        assert_eq!(points(&output), [1, 2, 3, 4, 5]);
        // Asked to yield before it started: one step.
        yielded.store(2, Ordering::Relaxed);
        let ExecutorEvent::Reached { state, output } = a.cont(&long(2, None, &yielded)) else {
            panic!("a point")
        };
        assert_eq!((state.point, points(&output)), (Point(6), vec![6]));
        // To the end: the last point's digest is the task's.
        let ExecutorEvent::Finished { state, output, .. } = a.cont(&long(3, None, &yielded)) else {
            panic!("the end")
        };
        assert_eq!(points(&output), (7..=state.point.0).collect::<Vec<_>>());
        let digest = a.task.as_mut().unwrap().digest().unwrap();
        assert_eq!(state.digest, wire_digest(digest));
    }

    #[test]
    fn states_shipped_as_deltas_continue_identically_on_the_other_side() {
        let (mut a, mut b, at) = pair();
        // Point 0 goes in full, then every point as a delta on the last.
        let first = a.capture(at, None).unwrap();
        assert!(first.base.is_none());
        b.persist(&StateWrite::Received(first)).unwrap();
        let mut shipped = at;
        let mut ev = a.run(at, &BatchRun::one());
        for _ in 0..6 {
            let (state, _) = reached(&ev);
            a.persist(&StateWrite::Own(state)).unwrap();
            let cp = a.capture(state, Some(shipped)).unwrap();
            assert_eq!(cp.base, Some(shipped), "a delta on what the peer holds");
            b.persist(&StateWrite::Received(cp)).unwrap();
            assert_eq!(b.stored().map(|(r, _)| r), Some(state));
            shipped = state;
            ev = a.cont(&BatchRun::one());
        }
        // The other side continues from the last shipped state and
        // produces the same next point and output.
        let mine = reached(&ev);
        let theirs = reached(&b.run(shipped, &BatchRun::one()));
        assert_eq!(mine, theirs);
    }

    #[test]
    fn a_forged_or_mislabelled_checkpoint_is_refused_and_changes_nothing() {
        let (mut a, mut b, at) = pair();
        b.persist(&StateWrite::Received(a.capture(at, None).unwrap()))
            .unwrap();
        let (state, _) = reached(&a.run(at, &BatchRun::one()));
        a.persist(&StateWrite::Own(state)).unwrap();
        let good = a.capture(state, Some(at)).unwrap();

        let mut bytes = good.bytes.as_bytes().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        let forged = WireCheckpoint {
            bytes: Blob::from(bytes),
            ..good.clone()
        };
        assert!(b.persist(&StateWrite::Received(forged)).is_err());
        let mislabelled = WireCheckpoint {
            state: StateRef::new(state.point, baton_proto::Digest([7; 32])),
            ..good.clone()
        };
        assert!(b.persist(&StateWrite::Received(mislabelled)).is_err());
        let wrong_point = WireCheckpoint {
            state: StateRef::new(Point(99), state.digest),
            ..good.clone()
        };
        assert!(b.persist(&StateWrite::Received(wrong_point)).is_err());
        assert_eq!(b.stored().map(|(r, _)| r), Some(at), "store unchanged");
        // The genuine one still applies afterwards.
        b.persist(&StateWrite::Received(good)).unwrap();
        assert_eq!(b.stored().map(|(r, _)| r), Some(state));
    }

    #[test]
    fn a_state_that_is_no_longer_held_cannot_be_captured_or_run() {
        let (mut a, mut b, at) = pair();
        let (one, _) = reached(&a.run(at, &BatchRun::one()));
        a.persist(&StateWrite::Own(one)).unwrap();
        let (two, _) = reached(&a.cont(&BatchRun::one()));
        a.persist(&StateWrite::Own(two)).unwrap();
        assert!(matches!(a.capture(one, None), Err(ExecError::Missing(_))));
        // An empty side holds nothing to run from.
        assert!(matches!(
            b.run(one, &BatchRun::one()),
            ExecutorEvent::Failed { .. }
        ));
    }

    #[test]
    fn a_failed_step_says_what_kind_of_failure_it_was() {
        let trap = TaskError::Trap {
            point: 3,
            message: "unreachable".into(),
            backtrace: Vec::new(),
        };
        assert_eq!(fail_kind(&trap), FailKind::Trap);
        assert_eq!(fail_kind_of_exec(&ExecError::NoProgram), FailKind::Error);
    }
}
