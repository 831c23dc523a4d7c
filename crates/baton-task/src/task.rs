//! A running task: create, step, capture, restore.
//!
//! This module owns the life of one task instance: instantiating a
//! [`Program`] against the WASI host, calling `_initialize` once at creation
//! (never on restore), driving `baton_step` (or `_start` for a command) one
//! step at a time within the task's limits, turning traps, exits and
//! timeouts into outcomes and typed errors, and capturing and restoring
//! [`State`] at points through the page tracker.
//!
//! It does not encode bytes itself ([`crate::checkpoint`]) and knows nothing
//! of networks, journals or protocols.

use std::time::Duration;

use wasmtime::{
    Global, Instance, Memory, ResourceLimiter, Store, Trap, TypedFunc, Val, WasmBacktrace,
};

use crate::checkpoint::{self, Checkpoint, Kind};
use crate::digest::Digest;
use crate::engine::{Engine, Program, EPOCH_TICK};
use crate::module::{GlobalKind, Points, Shape};
use crate::state::{canonical_digest, DirtyTracking, GlobalValue, State, Tracker, PAGE_SIZE};
use crate::suspend::{self, BUDGET, FRAMES, REWINDING, STATE, TOP, UNWINDING};
use crate::wasi::{ClockMode, Host, HostConfig, HostState, OutputSink, ProcExit};
use crate::wasi::{HostError, Unwound};
use crate::TaskError;

/// Resource limits of one task.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest linear memory, in bytes: `memory.grow` beyond it fails (returns
    /// -1, so `malloc` returns NULL) instead of trapping.
    pub max_memory: u64,
    /// Longest a single step may run before it is stopped; `None` for no
    /// limit. Enforced with a resolution of about 10 ms.
    pub max_step_time: Option<Duration>,
    /// How much work a suspendable command does between points
    /// ([`crate::suspend`]), converted to a work budget at a nominal rate
    /// (so points fall at the same places on every machine); step tasks
    /// ignore it.
    pub point_every: Duration,
}

/// The default of [`Limits::point_every`]: often enough that a failover
/// loses little, rarely enough that points cost little.
pub const DEFAULT_POINT_EVERY: Duration = Duration::from_millis(100);

impl Default for Limits {
    /// 4 GiB of memory (all of wasm32), no step time limit, a point every
    /// [`DEFAULT_POINT_EVERY`].
    fn default() -> Limits {
        Limits {
            max_memory: 4 * 1024 * 1024 * 1024,
            max_step_time: None,
            point_every: DEFAULT_POINT_EVERY,
        }
    }
}

/// What a completed step led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The task reached a new point and wants to be called again.
    Continue,
    /// The task finished with this exit status.
    Finished(i32),
}

/// Registers `baton.point` ([`crate::module::POINT_IMPORT`]) on `linker`.
///
/// # Errors
///
/// Only if the linker refuses the definition.
pub(crate) fn add_point_mark(linker: &mut wasmtime::Linker<StoreData>) -> wasmtime::Result<()> {
    linker.func_wrap(
        crate::module::BATON_MODULE,
        crate::module::POINT_IMPORT,
        point_mark,
    )?;
    Ok(())
}

/// `baton.point`: in a suspendable command, takes a point here if half of
/// the step's budget is spent (by setting the state to unwinding; the
/// caller's check after the call does the rest), and ends a rewind that
/// comes back to here. Anything else (a step task, a command run as one
/// step) ignores it. Deterministic: the budget is.
fn point_mark(mut caller: wasmtime::Caller<'_, StoreData>) -> wasmtime::Result<()> {
    let Some(Suspend {
        frames,
        state,
        budget,
    }) = caller.data().suspend
    else {
        return Ok(());
    };
    let bytes = frames.data(&caller);
    let word = |at: usize, n: usize| bytes.get(at..at + n).map(<[u8]>::to_vec);
    let (Some(units), Some(top)) = (word(BUDGET as usize, 8), word(TOP as usize, 4)) else {
        return Err(wasmtime::Error::new(HostError::Corrupt("no frame memory")));
    };
    let units = i64::from_le_bytes(units.try_into().unwrap_or_default());
    let top = u32::from_le_bytes(top.try_into().unwrap_or_default());
    let set = |caller: &mut wasmtime::Caller<'_, StoreData>, value: u8| -> wasmtime::Result<()> {
        frames.data_mut(&mut *caller)[STATE as usize] = value;
        state.set(&mut *caller, Val::I32(i32::from(value)))
    };
    if state.get(&mut caller).i32() == Some(i32::from(REWINDING)) {
        // The rewind ends here, where the unwind began: every frame must
        // have been taken back, and the step from here gets its budget.
        if top != FRAMES {
            return Err(wasmtime::Error::new(HostError::Corrupt(
                "the saved call stack does not lead back to baton.point",
            )));
        }
        set(&mut caller, 0)?;
        budget.set(&mut caller, Val::I64(units))?;
        return Ok(());
    }
    let left = budget.get(&mut caller).i64().unwrap_or(units);
    if left < units / 2 {
        set(&mut caller, UNWINDING)?;
    }
    Ok(())
}

/// Per-store data: the WASI host and the memory limiter.
pub(crate) struct StoreData {
    pub(crate) host: Host,
    limiter: MemoryLimiter,
    /// The frame memory and the state and budget globals of a suspendable
    /// command, set once it is instantiated.
    suspend: Option<Suspend>,
}

struct MemoryLimiter {
    max_memory: u64,
    /// The largest size a refused `memory.grow` asked for.
    refused: Option<u64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_memory {
            self.refused = Some(self.refused.unwrap_or(0).max(desired as u64));
            tracing::debug!(desired, limit = self.max_memory, "memory.grow refused");
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables only grow at instantiation (table.grow is rejected when the
        // module is prepared); bound them all the same.
        Ok(desired <= 1 << 20)
    }
}

enum Entry {
    Step(TypedFunc<(), i32>),
    Start(TypedFunc<(), ()>),
}

/// One instance of a task: its wasm instance, host and capture machinery.
///
/// A typical sender keeps a peer (a journal, a remote) up to date with a
/// full checkpoint once and then, at every point, the pages the last step
/// changed:
///
/// ```no_run
/// use baton_task::{Engine, StepOutcome, Task, TaskConfig};
/// # fn send(_: &baton_task::Checkpoint) {}
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::new()?;
/// let program = engine.load(&std::fs::read("examples/pi.wasm")?)?;
/// let mut task = Task::create(&engine, &program, TaskConfig::new("pi"), Box::new(baton_task::wasi::Discard))?;
/// send(&task.checkpoint()?);          // full, at point 0; it becomes the base
/// while task.step()? == StepOutcome::Continue {
///     send(&task.delta()?);           // the pages changed since the base
///     task.rebase()?;                 // the peer now holds this point
/// }
/// # Ok(()) }
/// ```
pub struct Task {
    store: Store<StoreData>,
    instance: Instance,
    program: Program,
    memory: Memory,
    globals: Vec<(Global, GlobalKind)>,
    entry: Entry,
    limits: Limits,
    /// Whether the engine compiled in epoch checks.
    step_limits: bool,
    point: u64,
    finished: Option<i32>,
    failed: bool,
    tracker: Tracker,
    /// The digest and encoded host state at the point the tracker was last
    /// synchronised, so that asking twice at one point costs nothing.
    synced: Option<Synced>,
}

/// What a suspendable command's host side works with.
#[derive(Clone, Copy)]
struct Suspend {
    frames: Memory,
    state: Global,
    budget: Global,
}

struct Synced {
    point: u64,
    digest: Digest,
    host: Vec<u8>,
    globals: Vec<GlobalValue>,
}

/// Everything `Task::create` needs.
#[derive(Clone, Debug)]
pub struct TaskConfig {
    /// Arguments, environment, seed, stdin, preopened dirs and clock.
    pub host: HostConfig,
    /// Memory and step-time limits.
    pub limits: Limits,
}

impl TaskConfig {
    /// A configuration with `argv[0] = name`, no environment, seed 0, empty
    /// stdin, no directories, a virtual clock starting at the Unix epoch and
    /// default limits.
    pub fn new(name: &str) -> TaskConfig {
        TaskConfig {
            host: HostConfig {
                args: vec![name.to_string()],
                env: Vec::new(),
                seed: 0,
                stdin: Vec::new(),
                preopens: Vec::new(),
                clock: ClockMode::Virtual {
                    start_realtime_ns: 0,
                },
                max_fs_bytes: 1 << 30,
            },
            limits: Limits::default(),
        }
    }
}

impl Task {
    /// Instantiates `program` as a new task and runs its `_initialize` (if a
    /// step task has one). The task is then at point 0.
    ///
    /// # Errors
    ///
    /// [`TaskError::Host`] if the host state cannot be built (for example a
    /// preopened directory cannot be read), [`TaskError::MemoryLimit`] if
    /// the module's initial memory exceeds the limit, and the errors of
    /// [`Task::step`] for `_initialize`.
    pub fn create(
        engine: &Engine,
        program: &Program,
        config: TaskConfig,
        sink: Box<dyn OutputSink>,
    ) -> Result<Task, TaskError> {
        let state = HostState::new(&config.host)?;
        let mut task = Task::instantiate(
            engine,
            program,
            state,
            config.host.clock,
            config.limits,
            sink,
        )?;
        if let Shape::Step {
            has_initialize: true,
        } = program.shape()
        {
            let init: TypedFunc<(), ()> = typed(&task.instance, &mut task.store, "_initialize")?;
            task.arm_deadline();
            if let Err(e) = init.call(&mut task.store, ()) {
                match e.downcast_ref::<ProcExit>() {
                    // Exiting during set-up finishes the task at point 0.
                    Some(ProcExit(status)) => task.finished = Some(*status),
                    None => {
                        task.failed = true;
                        return Err(task.classify(e));
                    }
                }
            }
        }
        Ok(task)
    }

    /// Instantiates `program` and sets it to `state`: memory, globals, host
    /// state, point. `_initialize` is not run. Output goes to `sink`; `clock`
    /// chooses virtual or wall-clock time for the steps to come.
    ///
    /// # Errors
    ///
    /// [`TaskError::ModuleMismatch`] if `state` belongs to another module,
    /// [`TaskError::MemoryLimit`] if its memory exceeds `limits`, and
    /// [`TaskError::BadState`] if it does not fit the module (globals).
    pub fn restore(
        engine: &Engine,
        program: &Program,
        state: &State,
        clock: ClockMode,
        limits: Limits,
        sink: Box<dyn OutputSink>,
    ) -> Result<Task, TaskError> {
        if state.module != program.digest() {
            return Err(TaskError::ModuleMismatch {
                expected: program.digest(),
                found: state.module,
            });
        }
        if state.memory().len() as u64 > limits.max_memory {
            return Err(TaskError::MemoryLimit {
                needed: state.memory().len() as u64,
                limit: limits.max_memory,
            });
        }
        // A state may come from an untrusted checkpoint.
        state.host.validate()?;
        let mut task = Task::instantiate(engine, program, state.host.clone(), clock, limits, sink)?;
        if task.globals.len() != state.globals.len() {
            return Err(TaskError::BadState(format!(
                "state has {} globals, the module {}",
                state.globals.len(),
                task.globals.len()
            )));
        }
        let current = task.memory.data_size(&task.store);
        let wanted = state.memory().len();
        if wanted < current {
            return Err(TaskError::BadState(format!(
                "state memory of {wanted} bytes is smaller than the module's initial {current}"
            )));
        }
        let grow = ((wanted - current) / crate::state::WASM_PAGE_SIZE) as u64;
        if grow > 0 {
            task.memory
                .grow(&mut task.store, grow)
                .map_err(|e| TaskError::BadState(format!("cannot grow memory: {e:#}")))?;
        }
        task.memory
            .data_mut(&mut task.store)
            .copy_from_slice(state.memory());
        for ((global, kind), value) in task.globals.iter().zip(&state.globals) {
            if *kind != value.kind {
                return Err(TaskError::BadState("global types differ".to_string()));
            }
            global
                .set(&mut task.store, to_val(value))
                .map_err(|e| TaskError::BadState(format!("cannot set global: {e:#}")))?;
        }
        task.point = state.point;
        task.finished = state.finished;
        let digest = state
            .digest()
            .map_err(|e| TaskError::BadState(e.to_string()))?;
        task.tracker = Tracker::from_state(
            state,
            digest,
            engine.dirty_tracking(),
            task.memory.data(&task.store),
        );
        Ok(task)
    }

    fn instantiate(
        engine: &Engine,
        program: &Program,
        state: HostState,
        clock: ClockMode,
        limits: Limits,
        sink: Box<dyn OutputSink>,
    ) -> Result<Task, TaskError> {
        let data = StoreData {
            host: Host::new(state, sink, clock),
            limiter: MemoryLimiter {
                max_memory: limits.max_memory,
                refused: None,
            },
            suspend: None,
        };
        if limits.max_step_time.is_some() && !engine.step_limits() {
            return Err(TaskError::Engine(
                "this engine was created without step limits; use Engine::new() for a max_step_time"
                    .to_string(),
            ));
        }
        let mut store = Store::new(program.wasmtime(), data);
        store.limiter(|d| &mut d.limiter);
        if engine.step_limits() {
            store.epoch_deadline_trap();
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let instance = match program.instance_pre().instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                if let Some(needed) = store.data().limiter.refused {
                    return Err(TaskError::MemoryLimit {
                        needed,
                        limit: limits.max_memory,
                    });
                }
                return Err(TaskError::Instantiate(format!("{e:#}")));
            }
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| TaskError::Instantiate("no exported memory".to_string()))?;
        let mut globals = Vec::new();
        for g in program.prepared().globals() {
            let global = instance.get_global(&mut store, &g.export).ok_or_else(|| {
                TaskError::Instantiate(format!("global export {} missing", g.export))
            })?;
            globals.push((global, g.kind));
        }
        let entry = match program.shape() {
            Shape::Step { .. } => Entry::Step(typed(&instance, &mut store, "baton_step")?),
            Shape::Command => Entry::Start(typed(&instance, &mut store, "_start")?),
        };
        if let Points::Anywhere { .. } = program.prepared().points() {
            let missing = |what: &str| TaskError::Instantiate(format!("no {what} export"));
            store.data_mut().suspend = Some(Suspend {
                frames: instance
                    .get_memory(&mut store, suspend::MEMORY_EXPORT)
                    .ok_or_else(|| missing(suspend::MEMORY_EXPORT))?,
                state: instance
                    .get_global(&mut store, suspend::STATE_EXPORT)
                    .ok_or_else(|| missing(suspend::STATE_EXPORT))?,
                budget: instance
                    .get_global(&mut store, suspend::BUDGET_EXPORT)
                    .ok_or_else(|| missing(suspend::BUDGET_EXPORT))?,
            });
        }
        Ok(Task {
            store,
            instance,
            program: program.clone(),
            memory,
            globals,
            entry,
            limits,
            step_limits: engine.step_limits(),
            point: 0,
            finished: None,
            failed: false,
            tracker: Tracker::new(engine.dirty_tracking()),
            synced: None,
        })
    }

    fn arm_deadline(&mut self) {
        if !self.step_limits {
            return;
        }
        let ticks = match self.limits.max_step_time {
            Some(limit) => (limit.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1,
            None => u64::MAX / 2,
        };
        self.store.set_epoch_deadline(ticks);
    }

    /// Runs one step: calls `baton_step` once (or, for a command, `_start`,
    /// which is its only step). On success the task is at the next point.
    ///
    /// # Errors
    ///
    /// [`TaskError::Trap`] (with the wasm backtrace) if the step trapped,
    /// [`TaskError::StepTimeout`] if it ran past `max_step_time`,
    /// [`TaskError::AlreadyFinished`] / [`TaskError::Failed`] if the task
    /// cannot step any more. After a trap or timeout the instance is
    /// unusable: restore the last checkpoint into a new one.
    pub fn step(&mut self) -> Result<StepOutcome, TaskError> {
        if self.failed {
            return Err(TaskError::Failed);
        }
        if let Some(status) = self.finished {
            return Err(TaskError::AlreadyFinished(status));
        }
        self.arm_deadline();
        let result = match &self.entry {
            Entry::Step(f) => f.call(&mut self.store, ()).map(|r| r != 0),
            Entry::Start(f) => {
                let f = f.clone();
                self.run_start(f)
            }
        };
        match result {
            Ok(true) => {
                self.point += 1;
                Ok(StepOutcome::Continue)
            }
            Ok(false) => {
                self.point += 1;
                let status = self.store.data().host.state.exit_status().unwrap_or(0);
                self.finished = Some(status);
                Ok(StepOutcome::Finished(status))
            }
            Err(e) => {
                if let Some(ProcExit(status)) = e.downcast_ref::<ProcExit>() {
                    self.point += 1;
                    self.finished = Some(*status);
                    return Ok(StepOutcome::Finished(*status));
                }
                self.failed = true;
                Err(self.classify(e))
            }
        }
    }

    /// Runs `_start` until it returns (`Ok(false)`) or, for a suspendable
    /// command, until it unwinds at a point (`Ok(true)`): first rewinding
    /// the stack it was suspended with, if any.
    fn run_start(&mut self, f: TypedFunc<(), ()>) -> wasmtime::Result<bool> {
        let Some(Suspend {
            frames,
            state,
            budget,
        }) = self.store.data().suspend
        else {
            return f.call(&mut self.store, ()).map(|()| false);
        };
        let unwound = self.store.data_mut().host.state.take_unwound();
        let saved = unwound.as_ref().map_or(&[][..], |u| &u.frames[..]);
        let end = FRAMES as usize + saved.len();
        let have = frames.data_size(&self.store);
        if end > have {
            let pages = (end - have).div_ceil(crate::state::WASM_PAGE_SIZE) as u64;
            frames.grow(&mut self.store, pages)?;
        }
        let units = suspend::budget_units(self.limits.point_every);
        let rewinding = unwound.is_some();
        let first = if rewinding { REWINDING } else { 0 };
        let bytes = frames.data_mut(&mut self.store);
        bytes[FRAMES as usize..end].copy_from_slice(saved);
        let top = TOP as usize;
        bytes[top..top + 4].copy_from_slice(&(end as u32).to_le_bytes());
        let b = BUDGET as usize;
        bytes[b..b + 8].copy_from_slice(&units.to_le_bytes());
        bytes[STATE as usize] = first;
        state.set(&mut self.store, Val::I32(i32::from(first)))?;
        // While rewinding the budget is spent, so that every entry takes
        // its rare side; the rewind's end sets it to `units`.
        budget.set(
            &mut self.store,
            Val::I64(if rewinding { -1 } else { units }),
        )?;
        let result = f.call(&mut self.store, ());
        state.set(&mut self.store, Val::I32(0))?;
        let bytes = frames.data_mut(&mut self.store);
        let ended = bytes[STATE as usize];
        bytes[STATE as usize] = 0;
        let corrupt = || HostError::Corrupt("the saved call stack does not match the program");
        match (result, ended) {
            (Ok(()), UNWINDING) => {
                let top = u32::from_le_bytes([
                    bytes[top],
                    bytes[top + 1],
                    bytes[top + 2],
                    bytes[top + 3],
                ]);
                let saved = bytes
                    .get(FRAMES as usize..top as usize)
                    .ok_or_else(|| {
                        wasmtime::Error::new(HostError::Corrupt("unwound past the frame memory"))
                    })?
                    .to_vec();
                self.store
                    .data_mut()
                    .host
                    .state
                    .set_unwound(Some(Unwound { frames: saved }));
                Ok(true)
            }
            (Ok(()), REWINDING) => Err(wasmtime::Error::new(corrupt())),
            (Err(e), REWINDING) => Err(e.context(corrupt())),
            (other, _) => other.map(|()| false),
        }
    }

    /// Turns a wasmtime error from a guest call into a typed error.
    fn classify(&self, e: wasmtime::Error) -> TaskError {
        let backtrace = e
            .downcast_ref::<WasmBacktrace>()
            .map(|bt| {
                bt.frames()
                    .iter()
                    .map(|f| match f.func_name() {
                        Some(name) => name.to_string(),
                        None => format!("<function {}>", f.func_index()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => TaskError::StepTimeout {
                point: self.point,
                limit: self.limits.max_step_time.unwrap_or_default(),
            },
            trap => {
                let message = match trap {
                    Some(trap) => trap.to_string(),
                    None => format!("{e:#}"),
                };
                match self.store.data().limiter.refused {
                    Some(asked) => TaskError::OutOfMemory {
                        point: self.point,
                        limit: self.limits.max_memory,
                        asked,
                        message,
                        backtrace,
                    },
                    None => TaskError::Trap {
                        point: self.point,
                        message,
                        backtrace,
                    },
                }
            }
        }
    }

    /// The point the task is at: 0 after creation, +1 per step.
    pub fn point(&self) -> u64 {
        self.point
    }

    /// `Some(status)` once the task finished.
    pub fn finished(&self) -> Option<i32> {
        self.finished
    }

    /// How this task's changed pages are found at points (the engine's
    /// choice, or the compare after the kernel could not).
    pub fn dirty_tracking(&self) -> DirtyTracking {
        self.tracker.tracking()
    }

    /// The program this task runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The host state (args, files, output counters, …).
    pub fn host(&self) -> &HostState {
        &self.store.data().host.state
    }

    /// Replaces where the task's output goes from now on.
    pub fn set_sink(&mut self, sink: Box<dyn OutputSink>) {
        self.store.data_mut().host.sink = sink;
    }

    /// Current linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// If a `memory.grow` was refused because of `max_memory`, the largest
    /// size asked for.
    pub fn memory_refused(&self) -> Option<u64> {
        self.store.data().limiter.refused
    }

    /// Brings the tracker up to this point and returns what was captured.
    fn sync(&mut self) -> Result<&Synced, TaskError> {
        if self.failed {
            return Err(TaskError::Failed);
        }
        let fresh = matches!(&self.synced, Some(s) if s.point == self.point);
        if !fresh {
            self.tracker.sync(self.memory.data(&self.store));
            let mut globals = Vec::with_capacity(self.globals.len());
            for (g, kind) in &self.globals {
                globals.push(from_val(*kind, g.get(&mut self.store))?);
            }
            let host = postcard::to_allocvec(&self.store.data().host.state)
                .map_err(|e| TaskError::BadState(format!("host state encoding: {e}")))?;
            let digest = canonical_digest(
                &self.program.digest(),
                self.point,
                self.finished,
                self.memory.data_size(&self.store),
                self.tracker.hashes(),
                &globals,
                &host,
            );
            self.synced = Some(Synced {
                point: self.point,
                digest,
                host,
                globals,
            });
        }
        self.synced
            .as_ref()
            .ok_or_else(|| TaskError::BadState("no state captured".to_string()))
    }

    /// The digest of the task's state at its current point.
    ///
    /// # Errors
    ///
    /// [`TaskError::Failed`] after a trap.
    pub fn digest(&mut self) -> Result<Digest, TaskError> {
        Ok(self.sync()?.digest)
    }

    fn parts_checkpoint(&mut self, kind: Option<Digest>) -> Result<Checkpoint, TaskError> {
        self.sync()?;
        let synced = self
            .synced
            .as_ref()
            .ok_or_else(|| TaskError::BadState("no state captured".to_string()))?;
        let parts = checkpoint::Parts {
            module: self.program.digest(),
            point: self.point,
            finished: self.finished,
            digest: synced.digest,
            // At a synchronised point the live memory is the point's.
            memory: self.memory.data(&self.store),
            globals: &synced.globals,
            host: &synced.host,
        };
        let cp = match kind {
            None => checkpoint::encode(&parts, Kind::Full, 0..parts.memory.len() / PAGE_SIZE)?,
            Some(base) => checkpoint::encode(
                &parts,
                Kind::Delta { base },
                self.tracker.changed_since_base(),
            )?,
        };
        Ok(cp)
    }

    /// A full checkpoint of the current point. It becomes the base that
    /// later [`Task::delta`]s are relative to.
    ///
    /// # Errors
    ///
    /// [`TaskError::Failed`] after a trap.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, TaskError> {
        let cp = self.parts_checkpoint(None)?;
        self.tracker.set_base(cp.digest);
        Ok(cp)
    }

    /// A delta checkpoint of the current point against the base (the last
    /// full [`Task::checkpoint`], or the state the task was restored from).
    /// The base stays; call [`Task::rebase`] to make the current point the
    /// new base once the receiver holds it.
    ///
    /// # Errors
    ///
    /// [`TaskError::NoBase`] if there is no base yet.
    pub fn delta(&mut self) -> Result<Checkpoint, TaskError> {
        let base = self.tracker.base().ok_or(TaskError::NoBase)?;
        self.parts_checkpoint(Some(base))
    }

    /// The digest deltas are currently relative to.
    pub fn base(&self) -> Option<Digest> {
        self.tracker.base()
    }

    /// Makes the current point the base for later deltas (the receiver of
    /// the last delta holds it now).
    ///
    /// # Errors
    ///
    /// [`TaskError::Failed`] after a trap.
    pub fn rebase(&mut self) -> Result<Digest, TaskError> {
        let digest = self.digest()?;
        self.tracker.set_base(digest);
        Ok(digest)
    }

    /// A complete copy of the current state.
    ///
    /// # Errors
    ///
    /// [`TaskError::Failed`] after a trap.
    pub fn state(&mut self) -> Result<State, TaskError> {
        self.sync()?;
        let synced = self
            .synced
            .as_ref()
            .ok_or_else(|| TaskError::BadState("no state captured".to_string()))?;
        State::new(
            self.program.digest(),
            self.point,
            self.finished,
            self.memory.data(&self.store).to_vec(),
            synced.globals.clone(),
            self.store.data().host.state.clone(),
        )
        .map_err(|e| TaskError::BadState(e.to_string()))
    }
}

fn typed<P, R>(
    instance: &Instance,
    store: &mut Store<StoreData>,
    name: &str,
) -> Result<TypedFunc<P, R>, TaskError>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    instance
        .get_typed_func::<P, R>(store, name)
        .map_err(|e| TaskError::Instantiate(format!("`{name}`: {e:#}")))
}

fn from_val(kind: GlobalKind, v: Val) -> Result<GlobalValue, TaskError> {
    let bits = match (kind, v) {
        (GlobalKind::I32, Val::I32(x)) => x as u32 as u128,
        (GlobalKind::I64, Val::I64(x)) => x as u64 as u128,
        (GlobalKind::F32, Val::F32(x)) => x as u128,
        (GlobalKind::F64, Val::F64(x)) => x as u128,
        (GlobalKind::V128, Val::V128(x)) => x.as_u128(),
        _ => return Err(TaskError::BadState("global changed type".to_string())),
    };
    Ok(GlobalValue { kind, bits })
}

fn to_val(g: &GlobalValue) -> Val {
    match g.kind {
        GlobalKind::I32 => Val::I32(g.bits as u32 as i32),
        GlobalKind::I64 => Val::I64(g.bits as u64 as i64),
        GlobalKind::F32 => Val::F32(g.bits as u32),
        GlobalKind::F64 => Val::F64(g.bits as u64),
        GlobalKind::V128 => Val::V128(g.bits.into()),
    }
}

/// Formats a duration as the command line writes them (`250ms`, `2s`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
