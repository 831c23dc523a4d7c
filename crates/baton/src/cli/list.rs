//! `baton list`: the tasks journaled in a state directory, one line each:
//! where each runs, its newest point, whether it finished.
//!
//! Reads only; the summaries come from [`crate::cli::inspect::task_line`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::inspect::task_line;
use crate::store::journal::{default_state_dir, list};

/// Options of `baton list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The state directory (default: the user's, as `baton run --remote` uses).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl ListArgs {
    /// Prints the table.
    ///
    /// # Errors
    ///
    /// The state directory cannot be read.
    pub fn execute(self) -> Result<()> {
        let dir = match self.state_dir {
            Some(d) => d,
            None => default_state_dir()?,
        };
        let ids = list(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        if ids.is_empty() {
            println!("no journaled tasks in {}", dir.display());
            return Ok(());
        }
        println!(
            "{:<24} {:<28} {:<34} {:>8}  state",
            "task", "kind", "runs", "point"
        );
        for id in ids {
            match task_line(&dir, &id) {
                Ok(l) => println!(
                    "{:<24} {:<28} {:<34} {:>8}  {}",
                    l.id,
                    l.kind,
                    l.runs,
                    l.point.map_or("-".to_string(), |p| p.to_string()),
                    l.state
                ),
                Err(e) => println!("{id:<24} unreadable: {e:#}"),
            }
        }
        Ok(())
    }
}
