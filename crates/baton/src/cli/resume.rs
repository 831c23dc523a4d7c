//! `baton resume`: continue a journaled task from its newest point, where
//! it was, here (`--local`), or on an agent (`--remote`).
//!
//! Owns the options of `baton resume`; the run is
//! [`crate::client::resume`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use crate::cli::run::PolicyArgs;
use crate::client::events::EventLog;
use crate::client::session::Ending;
use crate::client::{self, target, Place};
use crate::store::journal::default_state_dir;

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
    /// Bring a task that was extended onto an agent back here: re-attach,
    /// ask for it back, and finish it here.
    #[arg(long, conflicts_with = "remote")]
    pub local: bool,
    /// Continue the task on this agent (it migrates at start unless
    /// --migrate says otherwise), whether it ran here or elsewhere so far.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: Option<String>,
    /// How the task extends onto the agent (with --remote).
    #[command(flatten)]
    pub policy: PolicyArgs,
}

impl ResumeArgs {
    /// Resumes the task.
    ///
    /// # Errors
    ///
    /// No such task, a damaged journal, an unknown agent, a task failure.
    pub fn execute(self) -> Result<Ending> {
        let start = Instant::now();
        let state_dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => default_state_dir()?,
        };
        let place = match (&self.remote, self.local) {
            (Some(addr), _) => {
                let policy = self.policy.policy();
                let (_, target) = target::resolve(
                    addr,
                    self.policy.agent_fingerprint.as_deref(),
                    self.policy.identity.as_ref(),
                    &policy,
                )?;
                Place::Agent { target, policy }
            }
            (None, true) => Place::Here,
            (None, false) => Place::AsJournaled,
        };
        let events = EventLog::open_optional(self.events.as_deref(), start)?;
        client::resume(&state_dir, &self.id, place, events)
    }
}
