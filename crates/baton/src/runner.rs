//! The local runner: drives a task step by step on this machine, journaling
//! each point, emitting events, keeping the status line, and finishing
//! (writing back files, recording the result).
//!
//! Shared by `baton run` and `baton resume`, which differ only in how they
//! obtain the task. It does not parse options or decide exit statuses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use baton_task::wasi::Preopen;
use baton_task::{StepOutcome, Task};

use crate::console::Console;
use crate::events::{Event, EventLog};
use crate::journal::{FinishRecord, Journal};
use crate::units::human_bytes;

/// How often `point` events are written when no journal needs each one.
const POINT_EVENT_EVERY: Duration = Duration::from_millis(100);

/// Set by the SIGINT handler; checked at every point.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // A second Ctrl-C ends the process at once, mid-step if need be.
    // SAFETY: resetting a signal's disposition is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Makes the first Ctrl-C stop the task at its next point (journal intact,
/// a hint to resume printed) instead of killing the process mid-write.
pub fn catch_interrupt() {
    // SAFETY: installs a handler that only touches an atomic and calls the
    // async-signal-safe `signal`.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// How a run ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The task finished with this status.
    Finished(i32),
    /// Ctrl-C stopped it at this point.
    Interrupted(u64),
}

/// Everything the runner needs besides the task.
pub struct Run<'a> {
    /// The task's id.
    pub id: &'a str,
    /// The journal, when `--state-dir` is in use, holding the task's
    /// current point already.
    pub journal: Option<&'a mut Journal>,
    /// The `--events` log.
    pub events: &'a mut EventLog,
    /// The terminal.
    pub console: &'a Console,
    /// Host directories to write the task's files back to at the end.
    pub preopens: &'a [Preopen],
    /// Set when resuming: the point the task was restored at.
    pub resumed_from: Option<u64>,
}

impl Run<'_> {
    /// Drives `task` until it finishes, fails or is interrupted.
    ///
    /// # Errors
    ///
    /// A task error (trap, timeout) with the journal left at the last point
    /// reached, or a journal/event write failure.
    pub fn drive(mut self, task: &mut Task) -> Result<Ending> {
        let start = Instant::now();
        self.events
            .emit(Event::Started {
                task: self.id.to_string(),
                at: "local".to_string(),
                module: task.program().digest().to_string(),
                resumed_from: self.resumed_from,
            })
            .context("cannot write to the events file")?;
        let mut last_event: Option<Instant> = None;
        if let Some(status) = task.finished() {
            // Resumed from the final point: only the finishing is left.
            return self.finish(task, status, start);
        }
        loop {
            let outcome = task.step()?;
            self.at_point(task, &mut last_event, outcome != StepOutcome::Continue)?;
            if let StepOutcome::Finished(status) = outcome {
                return self.finish(task, status, start);
            }
            self.console.status(&format!(
                "baton · {} · local · point {} · {:.1}s · Ctrl-C stops at the next point",
                self.id,
                task.point(),
                start.elapsed().as_secs_f64()
            ));
            if INTERRUPTED.load(Ordering::SeqCst) {
                if let Some(journal) = self.journal.as_deref_mut() {
                    journal.sync()?;
                }
                return Ok(Ending::Interrupted(task.point()));
            }
        }
    }

    fn at_point(
        &mut self,
        task: &mut Task,
        last_event: &mut Option<Instant>,
        last: bool,
    ) -> Result<()> {
        if let Some(journal) = self.journal.as_deref_mut() {
            if journal.wants_new_base() {
                let cp = task.checkpoint()?;
                journal.write_base(&cp)?;
            } else {
                // Against the point before: what the last step changed.
                let delta = task.delta()?;
                journal.append(&delta)?;
                task.rebase()?;
            }
            if last {
                journal.sync()?;
            }
        }
        let due = self.journal.is_some()
            || last
            || last_event.is_none_or(|t| t.elapsed() >= POINT_EVENT_EVERY);
        if self.events.enabled() && due {
            *last_event = Some(Instant::now());
            let digest = task.digest()?;
            self.events
                .emit(Event::Point {
                    n: task.point(),
                    at: "local".to_string(),
                    digest: digest.to_string(),
                })
                .context("cannot write to the events file")?;
        }
        Ok(())
    }

    fn finish(mut self, task: &mut Task, status: i32, start: Instant) -> Result<Ending> {
        self.console.clear();
        let report = task
            .host()
            .write_back_to(self.preopens)
            .context("cannot write the task's files back")?;
        for path in &report.files_written {
            tracing::info!(path = %path.display(), "wrote back");
        }
        if let Some(asked) = task.memory_refused() {
            self.console.line(&format!(
                "baton: note: the task asked for {} of memory, beyond --max-memory; memory.grow failed for it",
                human_bytes(asked)
            ));
        }
        let digest = task.digest()?;
        if let Some(journal) = self.journal.as_deref_mut() {
            journal.write_finished(&FinishRecord {
                exit_status: status,
                points: task.point(),
                digest: digest.to_string(),
            })?;
        }
        self.events
            .emit(Event::Finished {
                exit_status: status,
                points: task.point(),
                at: "local".to_string(),
                digest: digest.to_string(),
            })
            .context("cannot write to the events file")?;
        tracing::info!(
            status,
            points = task.point(),
            digest = %digest,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "task finished"
        );
        Ok(Ending::Finished(status))
    }
}
