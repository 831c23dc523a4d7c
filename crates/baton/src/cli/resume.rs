//! `baton resume`: continue a journaled task from its newest point.
//!
//! Owns the mapping from a journal back to a running task; stepping is
//! [`crate::runner`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use baton_task::checkpoint::Limits as DecodeLimits;
use baton_task::wasi::{ClockMode, Preopen};
use baton_task::{Engine, Limits, Task};
use clap::Args;

use crate::cli::run::interrupted_hint;
use crate::console::Console;
use crate::events::EventLog;
use crate::journal::{default_state_dir, Journal, RemoteSpec};
use crate::runner::{catch_interrupt, Ending, Run};

/// Options of `baton resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The task's id, as given with --name or reported when it started.
    pub id: String,
    /// The directory the task was journaled in (default: $XDG_STATE_HOME/baton,
    /// or ~/.local/state/baton).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Append events as JSON Lines to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

impl ResumeArgs {
    /// Resumes the task.
    ///
    /// # Errors
    ///
    /// No such task, a damaged journal, a task failure.
    pub fn execute(self) -> Result<Ending> {
        let start = Instant::now();
        let console = Console::global().clone();
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => default_state_dir()?,
        };
        let mut journal = Journal::open(&state_dir, &self.id)?;
        if let Some(done) = journal.finished()? {
            console.line(&format!(
                "baton: task {} already finished at point {} with status {} (digest {})",
                self.id, done.points, done.exit_status, done.digest
            ));
            return Ok(Ending::Finished(done.exit_status));
        }
        let record = journal.record().clone();
        let bytes = journal.module()?;
        let engine = Engine::with_step_limits(record.max_step_time_ms.is_some())?;
        let program = engine
            .load(&bytes)
            .context("cannot load the journaled module")?;
        if program.digest().to_string() != record.module_digest {
            anyhow::bail!(
                "the journaled module in {} does not match its recorded digest; the journal is damaged",
                journal.dir().display()
            );
        }
        let limits = Limits {
            max_memory: record.max_memory,
            max_step_time: record.max_step_time_ms.map(Duration::from_millis),
        };
        let preopens = record.preopens();
        let mut events = EventLog::open_optional(self.events.as_deref(), start)?;
        if let Some(spec) = record.remote.clone() {
            return resume_remote(
                &self.id,
                &mut journal,
                &record,
                spec,
                engine,
                program,
                bytes,
                limits,
                &mut events,
                &preopens,
            );
        }
        let (state, warning) = journal.load_newest(&DecodeLimits {
            max_memory: record.max_memory,
            ..DecodeLimits::default()
        })?;
        if let Some(w) = warning {
            console.line(&format!("baton: warning: {w}"));
        }
        let clock = if record.wall_clock {
            ClockMode::Wall
        } else {
            // The virtual clock's position is part of the state.
            ClockMode::Virtual {
                start_realtime_ns: 0,
            }
        };
        let point = state.point;
        console.line(&format!(
            "baton: resuming task {} from point {point}",
            self.id
        ));
        let mut task = Task::restore(&engine, &program, &state, clock, limits, console.sink())?;
        drop(state);
        catch_interrupt();
        let ending = Run {
            id: &self.id,
            journal: Some(&mut journal),
            events: &mut events,
            console: &console,
            preopens: &preopens,
            resumed_from: Some(point),
        }
        .drive(&mut task)?;
        if let Ending::Interrupted(p) = ending {
            interrupted_hint(&console, &self.id, p, true);
        }
        Ok(ending)
    }
}

/// Continues a remote run from its journal: the protocol log gives the
/// newest state held here, the local stub's record and how far output was
/// shown; the task re-attaches to its agent (which may have gone on with
/// it meanwhile) or carries on here, as the stub decides.
#[allow(clippy::too_many_arguments)]
fn resume_remote(
    id: &str,
    journal: &mut Journal,
    record: &crate::journal::TaskRecord,
    spec: RemoteSpec,
    engine: Engine,
    program: baton_task::Program,
    module: Vec<u8>,
    limits: Limits,
    events: &mut EventLog,
    preopens: &[Preopen],
) -> Result<Ending> {
    use baton_proto::LocalRecord;

    use crate::exec::ExecCore;
    use crate::remote_run::{local_config, RemoteRun};
    use crate::store::TaskLog;
    use crate::worker::Durable;

    let console = Console::global().clone();
    let dir = journal.dir().to_path_buf();
    let decode = DecodeLimits {
        max_memory: record.max_memory,
        ..DecodeLimits::default()
    };
    let (log, rec) = TaskLog::open(&dir, &decode)?;
    if let Some(d) = &rec.damage {
        console.line(&format!(
            "baton: warning: the journal of {id} was damaged ({d}); going on from its newest intact point (the damaged bytes are in {})",
            dir.join("log.damaged").display()
        ));
    }
    let Some(bytes) = rec.record else {
        anyhow::bail!("the journal of {id} holds no record; it cannot be resumed");
    };
    let mut local =
        LocalRecord::decode(&bytes).with_context(|| format!("the journal of {id} is damaged"))?;
    let Some((at, state)) = rec.state else {
        anyhow::bail!("the journal of {id} holds no state; it cannot be resumed");
    };
    local.durable = Some(at);
    if rec.damage.is_some() {
        // Session ids and epochs minted in the lost tail may have reached
        // the agent already; minting them again would be refused forever
        // (fencing). Skip far past anything the lost tail could have held.
        local.minted = local.minted.saturating_add(1 << 20);
        local.pending = None;
    }
    let clock = if record.wall_clock {
        ClockMode::Wall
    } else {
        ClockMode::Virtual {
            start_realtime_ns: spec.clock_start_ns.unwrap_or(0),
        }
    };
    let mut core = ExecCore::empty(engine, Some(program.clone()), clock, limits);
    core.set_stored(at, state);
    let target = crate::cli::run::RemoteTarget::resolve(
        &spec.agent,
        Some(&spec.fingerprint),
        spec.identity.as_ref(),
    )?;
    let cfg = local_config(&spec, id, &module, &program, limits, clock)?;
    let disconnect_after = Duration::from_millis(spec.disconnect_after_ms);
    console.line(&format!(
        "baton: resuming task {id} from point {} here (output shown through point {}), re-attaching to {}",
        at.point, rec.delivered, spec.agent
    ));
    let ending = RemoteRun {
        id,
        agent: target.addr,
        fingerprint: target.fingerprint,
        identity: target.identity,
        net: baton_net::NetConfig::with_disconnect_after(disconnect_after),
        config: cfg,
        core,
        initial: at,
        events,
        console: &console,
        preopens,
        module: program.digest().to_string(),
        capture: None,
        init_output: Vec::new(),
        resume: Some((local, rec.delivered)),
        durable: Some(Durable {
            log,
            module_path: None,
        }),
        journal: Some(journal),
    }
    .drive()?;
    if let Ending::Interrupted(p) = ending {
        interrupted_hint(&console, id, p, true);
    }
    Ok(ending)
}
