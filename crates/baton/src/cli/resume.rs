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
use crate::journal::{default_state_dir, Journal};
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
        let preopens: Vec<Preopen> = record
            .dirs
            .iter()
            .map(|(host, guest)| Preopen {
                host: host.clone(),
                guest: guest.clone(),
            })
            .collect();
        let mut events = match &self.events {
            Some(path) => EventLog::open(path, start)
                .with_context(|| format!("cannot open events file {}", path.display()))?,
            None => EventLog::none(start),
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
