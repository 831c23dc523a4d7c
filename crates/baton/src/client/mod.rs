//! The client: `baton run` and `baton resume`.
//!
//! Owns setting a run up from a [`TaskSpec`]: creating the task or reading
//! it back from its journal, choosing what the executor keeps, resolving
//! the agent, and handing it all to one [`session::Session`]. The rooms:
//!
//! - [`session`]: the local stub's drive loop (dialer, signals, the end);
//! - `show`: what the user sees (output, events, the status line);
//! - [`link`]: carrying messages over a connection, and the dialer;
//! - [`target`]: an agent's address, pinned identity and our identity;
//! - [`events`]: the `--events` log; [`console`]: the terminal.
//!
//! It must not parse command lines (that is [`crate::cli`]'s) or decide
//! exit statuses (the binary's).

pub mod console;
pub mod events;
pub mod link;
pub mod session;
mod show;
pub mod target;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use baton_net::NetConfig;
use baton_proto::policy::{Migrate, ModePolicy, Responsible};
use baton_proto::{Agreement, Assignment, Epoch, LocalConfig, LocalRecord, Side, StateRef};
use baton_task::wasi::{OutStream, OutputSink};
use baton_task::{Engine, Program, Task};

use crate::drive::exec::{wire_digest, ExecCore, Keep};
use crate::drive::worker::Durable;
use crate::spec::{Policy, TaskSpec};
use crate::store::fs::write_atomic;
use crate::store::journal::{FirstEntry, Journal};
use crate::store::log::{Durability, TaskLog};
use console::Console;
use events::EventLog;
use session::{Ending, Remote, Session, Writes};

/// How often a local run's journal is forced to disk (it promises nothing
/// to a peer; a kill -9 loses nothing written, a machine crash at most
/// this much progress).
pub const JOURNAL_SYNC_EVERY: Duration = Duration::from_millis(250);

/// A module read, compiled and checked against the spec.
pub struct Loaded {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The engine it was compiled for.
    pub engine: Engine,
    /// The compiled module.
    pub program: Program,
}

impl Loaded {
    /// Compiles `bytes` for a task with the spec's limits.
    ///
    /// # Errors
    ///
    /// The bytes are not a module baton can run.
    pub fn new(bytes: Vec<u8>, spec_step_limit: bool, nans: baton_task::Nans) -> Result<Loaded> {
        // Without a step limit the compiled code needs no epoch checks.
        let engine = Engine::with_step_limits(spec_step_limit)?;
        let program = engine.load_as(&bytes, true, nans)?;
        Ok(Loaded {
            bytes,
            engine,
            program,
        })
    }
}

/// What the executor keeps for a run of `spec`: a copy of the newest state
/// when it may go to an agent, the deltas when a journal takes them,
/// otherwise nothing (digests then only as often as events want them).
fn keep_for(spec: &TaskSpec, journaled: bool, events: &EventLog) -> Keep {
    match (&spec.remote, journaled) {
        (Some(_), _) => Keep::Copy,
        (None, true) => Keep::Log,
        (None, false) => Keep::Nothing {
            digest_every: events.enabled().then_some(Duration::from_millis(100)),
        },
    }
}

/// The record a new task's local stub starts from (point 0, executing
/// here), journaled with its first state so that a crash before the first
/// point still resumes.
fn first_record(spec: &TaskSpec, initial: StateRef) -> Vec<u8> {
    // The mode the local stub starts with (LocalStub::new chooses the same).
    let mode = spec.policy.mode.choose(Side::Local, Side::Local);
    LocalRecord {
        agreement: Agreement {
            epoch: Epoch(0),
            assignment: Assignment::local(mode),
            anchor: Some(initial),
        },
        takeover: false,
        minted: 0,
        pending: None,
        durable: Some(initial),
        finished: None,
        pinned_local: false,
    }
    .encode()
}

/// A task created and journaled, ready for its [`Session`].
pub struct Prepared {
    /// The executor, holding the task at point 0.
    pub core: ExecCore,
    /// The state at point 0.
    pub initial: StateRef,
    /// The local stub's configuration.
    pub config: LocalConfig,
    /// The journal and its log, if journaled.
    pub journal: Option<(Journal, TaskLog)>,
    /// What `_initialize` printed, if it was held back.
    pub init_output: Writes,
    /// The module's digest.
    pub module: String,
}

impl Prepared {
    /// A journal and its log as the session takes them: the journal, and
    /// the log as where the executor's writes go.
    pub fn split((journal, log): (Journal, TaskLog)) -> (Journal, Durable) {
        let durable = Durable {
            log,
            module_path: None,
        };
        (journal, durable)
    }
}

/// Creates the task of `spec` at point 0 (running `_initialize`) and, with
/// `state_dir`, its journal. With an agent (`spec.remote`), what
/// `_initialize` prints is held in [`Prepared::init_output`] until the
/// agent is known to be the pinned one (a refused identity leaves stdout
/// empty); otherwise it goes to `sink` at once.
///
/// # Errors
///
/// The id is taken, the task cannot be created or journaled.
pub fn prepare(
    spec: &TaskSpec,
    loaded: Loaded,
    stdin: Vec<u8>,
    state_dir: Option<&Path>,
    events: &EventLog,
    sink: Box<dyn OutputSink>,
) -> Result<Prepared> {
    if let Some(dir) = state_dir {
        Journal::check_free(dir, &spec.id)?;
    }
    let keep = keep_for(spec, state_dir.is_some(), events);
    let init: Arc<Mutex<Writes>> = Arc::default();
    let sink: Box<dyn OutputSink> = match spec.remote {
        Some(_) => {
            let init = init.clone();
            Box::new(move |s: OutStream, b: &[u8]| {
                if let Ok(mut v) = init.lock() {
                    v.push((s, b.to_vec()));
                }
            })
        }
        None => sink,
    };
    tracing::info!(task = %spec.id, module = %loaded.program.digest(), "creating task");
    let Loaded {
        bytes,
        engine,
        program,
    } = loaded;
    let task = Task::create(&engine, &program, spec.task_config(stdin), sink)?;
    let init_output = init.lock().map(|v| v.clone()).unwrap_or_default();
    let (core, initial, full) = ExecCore::with_task(
        engine,
        program.clone(),
        spec.clock_mode(),
        spec.task_limits(),
        task,
        keep,
    )?;
    let config = spec.local_config(&bytes, wire_digest(program.digest()));
    let journal = match (state_dir, &full) {
        (Some(dir), Some(full)) => {
            let record = first_record(spec, initial);
            let first = FirstEntry {
                record: &record,
                full: &full.bytes,
            };
            let (j, mut log) = Journal::create(dir, spec, &bytes, first)?;
            log.set_durability(durability(spec));
            Some((j, log))
        }
        _ => None,
    };
    Ok(Prepared {
        core,
        initial,
        config,
        journal,
        init_output,
        module: program.digest().to_string(),
    })
}

/// A new task.
pub struct NewTask<'a> {
    /// Its spec.
    pub spec: TaskSpec,
    /// Its module.
    pub loaded: Loaded,
    /// Its whole stdin.
    pub stdin: Vec<u8>,
    /// Journal it here (`--state-dir`; always for a run with an agent).
    pub state_dir: Option<&'a Path>,
    /// The agent, resolved.
    pub remote: Option<Remote>,
    /// Whether the user chose the id (else it is shown).
    pub named: bool,
    /// The `--events` log.
    pub events: EventLog,
}

/// Creates a task and runs it to its end (or to Ctrl-C).
///
/// # Errors
///
/// The task cannot be created or journaled, it failed, or the run did.
pub fn start(new: NewTask<'_>) -> Result<Ending> {
    let NewTask {
        spec,
        loaded,
        stdin,
        state_dir,
        remote,
        named,
        mut events,
    } = new;
    let console = Console::global().clone();
    let p = prepare(&spec, loaded, stdin, state_dir, &events, console.sink())?;
    let id = spec.id.as_str();
    if p.journal.is_some() && (console.shows_status() || !named) {
        let line = match &remote {
            Some(r) => format!(
                "baton: task {id}, extending onto {}; if it stops, continue it with `baton resume {id}`",
                r.addr
            ),
            None => format!(
                "baton: task {id} is journaled; if it stops, continue it with `baton resume {id}`"
            ),
        };
        console.line(&line);
    }
    let (journal, durable) = p.journal.map(Prepared::split).unzip();
    let preopens = spec.preopens();
    let ending = Session {
        id,
        remote,
        config: p.config,
        core: p.core,
        initial: p.initial,
        events: &mut events,
        console: &console,
        preopens: &preopens,
        module: p.module,
        capture: None,
        init_output: p.init_output,
        resume: None,
        durable,
        journal: journal.as_ref(),
    }
    .drive()?;
    if let Ending::Interrupted(point) = ending {
        interrupted_hint(&console, id, point, journal.is_some());
    }
    Ok(ending)
}

/// A run with an agent fsyncs every write (the peer is told a state is
/// held only once it is); a local run's journal groups them.
fn durability(spec: &TaskSpec) -> Durability {
    match spec.remote {
        Some(_) => Durability::EveryWrite,
        None => Durability::Grouped(JOURNAL_SYNC_EVERY),
    }
}

/// Where `baton resume` continues a task.
pub enum Place {
    /// Where its journal says: here, or re-attached to its agent.
    AsJournaled,
    /// Here: a task extended onto an agent is re-attached, asked back, and
    /// finished here (`--local`).
    Here,
    /// On this agent, with this policy (`--remote`).
    Agent {
        /// The agent, as the spec records it.
        target: crate::spec::Target,
        /// The policy.
        policy: Policy,
    },
}

/// Continues a journaled task from its newest point.
///
/// # Errors
///
/// No such task, a damaged or foreign journal, an unknown agent, a failed
/// task or run.
pub fn resume(state_dir: &Path, id: &str, place: Place, mut events: EventLog) -> Result<Ending> {
    let console = Console::global().clone();
    let journal = Journal::open(state_dir, id)?;
    if let Some(done) = journal.finished()? {
        console.line(&format!(
            "baton: task {id} already finished at point {} with status {} (digest {})",
            done.points, done.exit_status, done.digest
        ));
        return Ok(Ending::Finished(done.exit_status));
    }
    let (spec, pin_local) = placed(&journal, place)?;
    let bytes = journal.module()?;
    let loaded = Loaded::new(
        bytes,
        spec.limits.max_step_time_ms.is_some(),
        spec.nans_now(),
    )
    .context("cannot load the journaled module")?;
    if loaded.program.digest().to_string() != spec.module.digest {
        bail!(
            "the journaled module in {} does not match its recorded digest; the journal is damaged",
            journal.dir().display()
        );
    }
    let Journaled {
        mut log,
        mut local,
        at,
        state,
        delivered,
    } = read_back(&journal, id)?;
    let remote = match &spec.remote {
        Some(t) => Some(target::resolve_spec(t, &spec.policy)?),
        None => None,
    };
    log.set_durability(durability(&spec));
    let keep = keep_for(&spec, true, &events);
    let Loaded {
        bytes,
        engine,
        program,
    } = loaded;
    let core = ExecCore::resumed(
        engine,
        program.clone(),
        spec.clock_mode(),
        spec.task_limits(),
        keep,
        at,
        state,
    );
    let config = spec.local_config(&bytes, wire_digest(program.digest()));
    if pin_local {
        local.pinned_local = true;
    }
    let line = match &spec.remote {
        Some(t) if pin_local => format!(
            "baton: resuming task {id} from point {} here (output shown through point {}), bringing it back from {}",
            at.point, delivered, t.agent
        ),
        Some(t) => format!(
            "baton: resuming task {id} from point {} here (output shown through point {}), re-attaching to {}",
            at.point, delivered, t.agent
        ),
        None => format!("baton: resuming task {id} from point {}", at.point),
    };
    console.line(&line);
    let preopens = spec.preopens();
    let ending = Session {
        id,
        remote,
        config,
        core,
        initial: at,
        events: &mut events,
        console: &console,
        preopens: &preopens,
        module: program.digest().to_string(),
        capture: None,
        init_output: Vec::new(),
        resume: Some((local, delivered)),
        durable: Some(Durable {
            log,
            module_path: None,
        }),
        journal: Some(&journal),
    }
    .drive()?;
    if let Ending::Interrupted(p) = ending {
        interrupted_hint(&console, id, p, true);
    }
    Ok(ending)
}

/// The spec a resume runs under: the journaled one, moved where the user
/// now wants the task (and written back, so that later resumes continue
/// there). Returns it, and whether the task is being brought back here
/// from an agent.
fn placed(journal: &Journal, place: Place) -> Result<(TaskSpec, bool)> {
    let mut spec = journal.spec().clone();
    let pin_local = matches!(place, Place::Here) && spec.remote.is_some();
    match place {
        Place::Agent { target, policy } => {
            spec.remote = Some(target);
            spec.policy = policy;
        }
        // Here for good: executed and held here. The agent is still
        // dialled, for the newest state and the hand-back.
        Place::Here if pin_local => {
            spec.policy.migrate = Migrate::Never;
            spec.policy.responsible = Responsible::Local;
        }
        Place::Here | Place::AsJournaled => {}
    }
    if spec != *journal.spec() {
        // Later resumes continue where this one sends the task.
        write_atomic(&journal.dir().join("task.json"), &spec.encode())?;
    }
    Ok((spec, pin_local))
}

/// What a journal's log gives back to continue from.
struct Journaled {
    log: TaskLog,
    local: LocalRecord,
    at: StateRef,
    state: baton_task::State,
    delivered: baton_proto::Point,
}

/// Reads a journal's log back: its newest intact state, the local stub's
/// record, how far output was shown. A damaged tail is cut (kept in
/// `log.damaged`) with a warning; a log with no usable state is an error.
fn read_back(journal: &Journal, id: &str) -> Result<Journaled> {
    let (log, rec) = journal.open_log()?;
    let kept = journal.dir().join("log.damaged");
    let (Some(record), Some((at, state))) = (rec.record, rec.state) else {
        bail!(
            "the journal of {id} in {} holds no usable state ({}; the damaged bytes are in {}); it cannot be resumed",
            journal.dir().display(),
            rec.damage.as_deref().unwrap_or("its log is empty"),
            kept.display()
        );
    };
    if let Some(d) = &rec.damage {
        Console::global().line(&format!(
            "baton: warning: the journal of {id} was damaged ({d}); going on from its newest intact point (the damaged bytes are in {})",
            kept.display()
        ));
    }
    let mut local =
        LocalRecord::decode(&record).with_context(|| format!("the journal of {id} is damaged"))?;
    local.durable = Some(at);
    if rec.damage.is_some() {
        // Session ids and epochs minted in the lost tail may have reached
        // the agent already; minting them again would be refused forever
        // (fencing). Skip far past anything the lost tail could have held.
        local.minted = local.minted.saturating_add(1 << 20);
        local.pending = None;
    }
    Ok(Journaled {
        log,
        local,
        at,
        state,
        // The mark beside the log may be ahead of it (see DeliveredMark).
        delivered: rec
            .delivered
            .max(crate::store::journal::DeliveredMark::read(journal.dir()).unwrap_or_default()),
    })
}

/// Tells the user what Ctrl-C did.
pub fn interrupted_hint(console: &Console, id: &str, point: u64, journaled: bool) {
    if journaled {
        console.line(&format!(
            "baton: stopped at point {point}; continue with `baton resume {id}`"
        ));
    } else {
        console.line(&format!(
            "baton: stopped at point {point}; run with --state-dir to be able to resume"
        ));
    }
}

/// The transport settings for a policy.
pub fn net_config(policy: &Policy) -> NetConfig {
    NetConfig::with_disconnect_after(Duration::from_millis(policy.disconnect_after_ms))
}
