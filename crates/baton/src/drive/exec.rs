//! One side's executor and state store for a task driven by a protocol stub.
//!
//! Owns [`ExecCore`]: the live [`Task`] (if any), the newest state this side
//! holds (the *store*), and a *mirror* of the state the peer was last sent,
//! so that shipping a state costs what changed since then. It answers the
//! stub's actions (`Run`, `Continue`, `Stop`, `Capture`, the state part of
//! `Persist`) synchronously; [`crate::worker`] runs it off the async
//! runtime. It also owns the framing of a step's output (stdout and stderr
//! in one blob, [`OutputFrames`]).
//!
//! What the store keeps is a setting ([`Keep`]): a copy of the newest state
//! in memory where this side may have to ship it or run from it again (a
//! run that extends onto an agent, and the agent), only the deltas for the
//! log (a local run with a journal), or nothing at all (a plain local run,
//! which then also computes digests only as often as someone looks at them
//! and writes output straight through). It must not do IO, talk to the
//! network or decide anything about the protocol.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::{Blob, Checkpoint as WireCheckpoint, ExecutorEvent, FailKind, Outcome, StateRef};
use baton_task::checkpoint::{self, CheckpointError, Decoded};
use baton_task::wasi::{ClockMode, OutStream, Preopen, WriteBackReport};
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

/// A step's output: stdout and stderr writes in order, framed as
/// `[stream: u8][len: u32 LE][bytes]`.
#[derive(Debug, Default)]
pub struct OutputFrames;

impl OutputFrames {
    /// Appends one write.
    pub fn push(buf: &mut Vec<u8>, stream: OutStream, bytes: &[u8]) {
        // A single write is bounded by the guest's memory (< 4 GiB).
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        buf.push(match stream {
            OutStream::Stdout => 1,
            OutStream::Stderr => 2,
        });
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&bytes[..len as usize]);
    }

    /// The writes in a blob, in order. A malformed tail (which only a
    /// hostile peer would send) ends the list.
    pub fn parse(mut bytes: &[u8]) -> Vec<(OutStream, &[u8])> {
        let mut out = Vec::new();
        while bytes.len() >= 5 {
            let stream = match bytes[0] {
                1 => OutStream::Stdout,
                2 => OutStream::Stderr,
                _ => break,
            };
            let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            let Some(body) = bytes.get(5..5 + len) else {
                break;
            };
            out.push((stream, body));
            bytes = &bytes[5 + len..];
        }
        out
    }
}

/// What a persisted state write amounts to, for a durable log.
#[derive(Debug)]
pub enum Written {
    /// The store already held the state.
    Nothing,
    /// The state as a full checkpoint.
    Full(Blob),
    /// The state as a delta against the store's previous state.
    Delta(Blob),
}

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

/// What the peer is believed to hold, for deltas.
enum Mirror {
    /// Nothing known.
    None,
    /// The peer holds the store's newest state (it sent it to us).
    Newest,
    /// The peer holds (or is being sent) this state.
    Copy(StateRef, Box<State>),
}

/// The executor and store of one side of one task.
pub struct ExecCore {
    engine: Engine,
    program: Option<Program>,
    clock: ClockMode,
    limits: Limits,
    task: Option<Task>,
    /// The point the live task is paused at.
    at: Option<StateRef>,
    store: Option<(StateRef, State)>,
    /// The newest state persisted, when the store keeps no copy of it.
    held: Option<StateRef>,
    keep: Keep,
    /// When a lazily computed digest was last computed.
    last_digest: Option<Instant>,
    mirror: Mirror,
    out: Arc<Mutex<Vec<u8>>>,
    decode_limits: checkpoint::Limits,
}

/// Converts a task digest to the protocol's.
pub fn wire_digest(d: baton_task::Digest) -> baton_proto::Digest {
    baton_proto::Digest(d.0)
}

impl ExecCore {
    /// An executor with nothing in it yet (the agent, before the first
    /// checkpoint arrives). `program` may come later ([`Self::set_program`]).
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
    /// unless the live task is paused exactly there, and run one step.
    pub fn run(&mut self, from: StateRef) -> ExecutorEvent {
        if self.at != Some(from) || self.task.is_none() {
            if let Err(e) = self.restore(from) {
                return ExecutorEvent::Failed {
                    at: from,
                    kind: fail_kind_of_exec(&e),
                    reason: e.to_string(),
                };
            }
        }
        let live_end = self.task.as_ref().and_then(Task::finished);
        if let (Some(code), true) = (live_end, self.at == Some(from)) {
            // Finished at creation (`_initialize` exited): only the end is
            // left.
            return ExecutorEvent::Finished {
                state: from,
                output: Blob::default(),
                outcome: Outcome::Exit(code),
            };
        }
        if let Some((r, s)) = &self.store {
            if *r == from {
                if let Some(code) = s.finished {
                    return ExecutorEvent::Finished {
                        state: from,
                        output: Blob::default(),
                        outcome: Outcome::Exit(code),
                    };
                }
            }
        }
        self.step()
    }

    /// `Action::Continue`: run the next step from where the task is paused.
    pub fn cont(&mut self) -> ExecutorEvent {
        match self.at {
            Some(_) if self.task.is_some() => self.step(),
            _ => ExecutorEvent::Failed {
                at: self.store.as_ref().map_or(
                    StateRef::new(baton_proto::Point(0), baton_proto::Digest::default()),
                    |(r, _)| *r,
                ),
                kind: FailKind::Error,
                reason: "the executor is not paused at a point".to_string(),
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

    fn step(&mut self) -> ExecutorEvent {
        let from = self.at.unwrap_or(StateRef::new(
            baton_proto::Point(0),
            baton_proto::Digest::default(),
        ));
        self.out.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let Some(task) = self.task.as_mut() else {
            return ExecutorEvent::Failed {
                at: from,
                kind: FailKind::Error,
                reason: "no task to step".to_string(),
            };
        };
        let lazy = match self.keep {
            Keep::Nothing { digest_every } => Some(digest_every),
            _ => None,
        };
        let last_digest = &mut self.last_digest;
        let result = task.step().and_then(|o| {
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
        let output = Blob::from(std::mem::take(
            &mut *self.out.lock().unwrap_or_else(|p| p.into_inner()),
        ));
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
                // A failed task cannot go on; a later Run restores.
                self.task = None;
                self.at = None;
                ExecutorEvent::Failed {
                    at: from,
                    kind: fail_kind(&e),
                    reason: e.to_string(),
                }
            }
        }
    }

    /// The state part of `Action::Persist`: make `write` the store's newest
    /// state. `Own` states come from the live task (which must be paused
    /// there); `Received` ones are decoded, checked and applied.
    ///
    /// # Errors
    ///
    /// A checkpoint that does not decode, does not apply to the store or is
    /// not the state it claims to be; a task that cannot be captured.
    pub fn persist(&mut self, write: &baton_proto::StateWrite) -> Result<Written, ExecError> {
        match write {
            baton_proto::StateWrite::Own(s) => self.persist_own(*s),
            baton_proto::StateWrite::Received(cp) => self.persist_received(cp),
        }
    }

    fn persist_own(&mut self, s: StateRef) -> Result<Written, ExecError> {
        if self.store.as_ref().is_some_and(|(r, _)| *r == s) || self.held == Some(s) {
            return Ok(Written::Nothing);
        }
        match self.keep {
            Keep::Copy => {}
            Keep::Nothing { .. } => {
                self.held = Some(s);
                return Ok(Written::Nothing);
            }
            Keep::Log => return self.persist_to_log(s),
        }
        let (Some(task), true) = (self.task.as_mut(), self.at == Some(s)) else {
            return Err(ExecError::Missing(s));
        };
        // The peer's copy must not change with ours.
        if matches!(self.mirror, Mirror::Newest) {
            self.mirror = match &self.store {
                Some((r, st)) => Mirror::Copy(*r, Box::new(st.clone())),
                None => Mirror::None,
            };
        }
        let base_matches = match (&self.store, task.base()) {
            (Some((r, _)), Some(b)) => wire_digest(b) == r.digest,
            _ => false,
        };
        if base_matches {
            // What the last steps changed, applied to the stored copy:
            // proportional to the changed pages, not to the memory size.
            let delta = task.delta()?;
            match checkpoint::decode(&delta.bytes, &self.decode_limits)? {
                Decoded::Delta(d) => {
                    if let Some((r, st)) = self.store.as_mut() {
                        d.apply(st)?;
                        *r = s;
                    }
                }
                Decoded::Full(st) => self.store = Some((s, st)),
            }
            task.rebase()?;
            Ok(Written::Delta(Blob::from(delta.bytes)))
        } else {
            let full = task.checkpoint()?;
            self.store = Some((s, task.state()?));
            task.rebase()?;
            Ok(Written::Full(Blob::from(full.bytes)))
        }
    }

    /// [`Keep::Log`]: what the last steps changed, for the log; nothing is
    /// kept in memory but the task's own base.
    fn persist_to_log(&mut self, s: StateRef) -> Result<Written, ExecError> {
        let (Some(task), true) = (self.task.as_mut(), self.at == Some(s)) else {
            return Err(ExecError::Missing(s));
        };
        let written = match task.base() {
            Some(_) => {
                let delta = task.delta()?;
                task.rebase()?;
                Written::Delta(Blob::from(delta.bytes))
            }
            None => Written::Full(Blob::from(task.checkpoint()?.bytes)),
        };
        self.held = Some(s);
        Ok(written)
    }

    /// The newest persisted state as a full checkpoint, for rewriting a log
    /// that has grown: from the store's copy, or from the live task paused
    /// there (which then takes it as its delta base, as the log will).
    ///
    /// # Errors
    ///
    /// The state is not here, or cannot be encoded.
    pub fn full_for_log(&mut self) -> Result<Vec<u8>, ExecError> {
        if let Some((_, st)) = &self.store {
            return Ok(checkpoint::encode_full(st)?.bytes);
        }
        match (self.task.as_mut(), self.held) {
            (Some(task), Some(h)) if self.at == Some(h) => Ok(task.checkpoint()?.bytes),
            (_, h) => Err(ExecError::Missing(h.unwrap_or(StateRef::new(
                baton_proto::Point(0),
                baton_proto::Digest::default(),
            )))),
        }
    }

    /// Writes the task's files back to `preopens` from the final state
    /// `state`: the store's copy, or the live task paused there.
    ///
    /// # Errors
    ///
    /// The state is not here, or a file cannot be written.
    pub fn finish(
        &mut self,
        state: StateRef,
        preopens: &[Preopen],
    ) -> Result<FinishReport, ExecError> {
        let live = self.task.as_ref().filter(|_| self.at == Some(state));
        let (written, memory) = match (&self.store, live) {
            (Some((r, st)), _) if *r == state => {
                (st.host.write_back_to(preopens), st.memory().len())
            }
            (_, Some(task)) => (task.host().write_back_to(preopens), task.memory_size()),
            _ => return Err(ExecError::Missing(state)),
        };
        Ok(FinishReport {
            written: written.map_err(|e| ExecError::WriteBack(e.to_string()))?,
            memory_refused: live.and_then(Task::memory_refused),
            memory: memory as u64,
        })
    }

    fn persist_received(&mut self, cp: &WireCheckpoint) -> Result<Written, ExecError> {
        let claimed = cp.state;
        match checkpoint::decode(cp.bytes.as_bytes(), &self.decode_limits)? {
            Decoded::Full(state) => {
                if state.point != claimed.point.0 {
                    return Err(ExecError::WrongState {
                        claimed: claimed.point.0,
                        found: state.point,
                    });
                }
                let digest = state
                    .digest()
                    .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
                if wire_digest(digest) != claimed.digest {
                    return Err(CheckpointError::Malformed(
                        "the state's digest is not the one announced".into(),
                    )
                    .into());
                }
                self.store = Some((claimed, state));
                self.mirror = Mirror::Newest;
                return Ok(Written::Full(cp.bytes.clone()));
            }
            Decoded::Delta(d) => {
                if d.point() != claimed.point.0 || wire_digest(d.digest()) != claimed.digest {
                    return Err(ExecError::WrongState {
                        claimed: claimed.point.0,
                        found: d.point(),
                    });
                }
                let Some((r, st)) = self.store.as_mut() else {
                    return Err(ExecError::Missing(cp.base.unwrap_or(claimed)));
                };
                // `apply` checks the base digest and leaves the state
                // unchanged if anything is wrong.
                d.apply(st)?;
                *r = claimed;
            }
        }
        self.mirror = Mirror::Newest;
        Ok(Written::Delta(cp.bytes.clone()))
    }

    /// `Action::Capture`: encode `state` for the peer, as a delta against
    /// `base` if the mirror holds it, else in full. The executor stays
    /// where it is.
    ///
    /// # Errors
    ///
    /// The state is not here, or cannot be encoded.
    pub fn capture(
        &mut self,
        state: StateRef,
        base: Option<StateRef>,
    ) -> Result<WireCheckpoint, ExecError> {
        let live;
        let source: &State = match &self.store {
            Some((r, st)) if *r == state => st,
            _ => match (self.task.as_mut(), self.at == Some(state)) {
                (Some(task), true) => {
                    live = task.state()?;
                    &live
                }
                _ => return Err(ExecError::Missing(state)),
            },
        };
        let mirror = std::mem::replace(&mut self.mirror, Mirror::None);
        let (bytes, delta_base, mirror) = match mirror {
            // The usual case: what changed since the last state shipped,
            // applied to the mirror in place (no copy of the memory).
            Mirror::Copy(m, mut ms) if base == Some(m) => {
                let cp = checkpoint::encode_delta(&ms, source)?;
                if let Decoded::Delta(d) = checkpoint::decode(&cp.bytes, &self.decode_limits)? {
                    d.apply(&mut ms)?;
                }
                (cp.bytes, Some(m), Mirror::Copy(state, ms))
            }
            Mirror::Newest => match &self.store {
                Some((m, ms)) if base == Some(*m) => {
                    let cp = checkpoint::encode_delta(ms, source)?;
                    let next = if *m == state {
                        Mirror::Newest
                    } else {
                        Mirror::Copy(state, Box::new(source.clone()))
                    };
                    (cp.bytes, Some(*m), next)
                }
                _ => {
                    let cp = checkpoint::encode_full(source)?;
                    (
                        cp.bytes,
                        None,
                        Mirror::Copy(state, Box::new(source.clone())),
                    )
                }
            },
            _ => {
                let cp = checkpoint::encode_full(source)?;
                (
                    cp.bytes,
                    None,
                    Mirror::Copy(state, Box::new(source.clone())),
                )
            }
        };
        self.mirror = mirror;
        Ok(WireCheckpoint {
            state,
            base: delta_base,
            bytes: Blob::from(bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            ExecutorEvent::Reached { state, output } => (*state, output.clone()),
            ExecutorEvent::Finished { state, output, .. } => (*state, output.clone()),
            other => panic!("expected a point, got {other:?}"),
        }
    }

    #[test]
    fn states_shipped_as_deltas_continue_identically_on_the_other_side() {
        let (mut a, mut b, at) = pair();
        // Point 0 goes in full, then every point as a delta on the last.
        let first = a.capture(at, None).unwrap();
        assert!(first.base.is_none());
        b.persist(&StateWrite::Received(first)).unwrap();
        let mut shipped = at;
        let mut ev = a.run(at);
        for _ in 0..6 {
            let (state, _) = reached(&ev);
            a.persist(&StateWrite::Own(state)).unwrap();
            let cp = a.capture(state, Some(shipped)).unwrap();
            assert_eq!(cp.base, Some(shipped), "a delta on what the peer holds");
            b.persist(&StateWrite::Received(cp)).unwrap();
            assert_eq!(b.stored().map(|(r, _)| r), Some(state));
            shipped = state;
            ev = a.cont();
        }
        // The other side continues from the last shipped state and
        // produces the same next point and output.
        let mine = reached(&ev);
        let theirs = reached(&b.run(shipped));
        assert_eq!(mine, theirs);
    }

    #[test]
    fn a_forged_or_mislabelled_checkpoint_is_refused_and_changes_nothing() {
        let (mut a, mut b, at) = pair();
        b.persist(&StateWrite::Received(a.capture(at, None).unwrap()))
            .unwrap();
        let (state, _) = reached(&a.run(at));
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
        let (one, _) = reached(&a.run(at));
        a.persist(&StateWrite::Own(one)).unwrap();
        let (two, _) = reached(&a.cont());
        a.persist(&StateWrite::Own(two)).unwrap();
        assert!(matches!(a.capture(one, None), Err(ExecError::Missing(_))));
        // An empty side holds nothing to run from.
        assert!(matches!(b.run(one), ExecutorEvent::Failed { .. }));
    }

    #[test]
    fn output_frames_round_trip_and_hostile_tails_end_the_list() {
        let mut buf = Vec::new();
        OutputFrames::push(&mut buf, OutStream::Stdout, b"hello ");
        OutputFrames::push(&mut buf, OutStream::Stderr, b"oops\n");
        OutputFrames::push(&mut buf, OutStream::Stdout, b"");
        let parsed = OutputFrames::parse(&buf);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].1, b"hello ");
        assert!(matches!(parsed[1].0, OutStream::Stderr));
        // Every truncation parses to a prefix of the writes, never panics.
        for cut in 0..buf.len() {
            let p = OutputFrames::parse(&buf[..cut]);
            assert!(p.len() <= 3);
        }
        // A huge announced length or an unknown stream tag ends the list.
        let mut hostile = buf.clone();
        hostile.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, b'x']);
        assert_eq!(OutputFrames::parse(&hostile).len(), 3);
        assert!(OutputFrames::parse(&[9, 1, 0, 0, 0, b'x']).is_empty());
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
