//! The `--events` log: one JSON object per line (DESIGN §12), each with
//! `t_ms` (milliseconds since the command started) and `event`.
//!
//! Owns the event vocabulary and its encoding; it decides nothing about when
//! events happen. Each line is written whole and flushed at once, so a log cut
//! short by kill -9 ends at a line boundary.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

/// One event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The task started (or, with `resumed_from`, resumed from a journal).
    Started {
        /// The task's id.
        task: String,
        /// Where it runs: `local` or the agent's address.
        #[serde(rename = "where")]
        at: String,
        /// The module's digest.
        module: String,
        /// The point it was resumed from, if it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed_from: Option<u64>,
    },
    /// The task reached a point (sampled when points come faster than
    /// every 100 ms and no journal needs each one).
    Point {
        /// The point number.
        n: u64,
        /// Where it was reached.
        #[serde(rename = "where")]
        at: String,
        /// The state digest at that point.
        digest: String,
    },
    /// The executor moved from one side to the other.
    Migrated {
        /// The old executor (`local` or `remote`).
        from: String,
        /// The new executor.
        to: String,
        /// The point the new executor starts from.
        point: u64,
        /// How long no side executed, in milliseconds.
        downtime_ms: f64,
    },
    /// Responsibility was (re-)established with a new epoch.
    Responsibility {
        /// The point it took effect at.
        point: u64,
        /// The responsible side.
        holder: String,
        /// The executor.
        executor: String,
        /// `sync` or `async`.
        mode: String,
        /// The new epoch.
        epoch: u64,
        /// True if the local side took over alone (the agent stayed away).
        takeover: bool,
    },
    /// The link to the agent was lost.
    Disconnected {
        /// The newest point known.
        point: u64,
        /// The executor at that moment.
        executor: String,
        /// The responsible side.
        holder: String,
        /// Steps the responsible side's state lagged behind (what async
        /// mode can lose).
        lag: u64,
    },
    /// A side started executing on its own after a disconnection.
    Resumed {
        /// The side.
        #[serde(rename = "where")]
        at: String,
        /// The point it resumed from.
        point: u64,
        /// Steps done beyond that point elsewhere and now redone.
        lost_steps: u64,
    },
    /// The link came back and the sides compared states.
    Reconnected {
        /// The local side's newest point.
        point_local: Option<u64>,
        /// The remote side's newest point.
        point_remote: Option<u64>,
        /// The side holding the newer state.
        winner: String,
    },
    /// The sides computed different digests for one point; the task stops.
    Divergence {
        /// The point.
        point: u64,
        /// The local digest.
        digest_local: String,
        /// The remote digest.
        digest_remote: String,
    },
    /// The link state changed (connected to an address, or lost).
    Link {
        /// `up`, `down` or `unreachable`.
        state: String,
        /// The agent's address.
        agent: String,
        /// Why, when down.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The agent reported an error for this task.
    PeerError {
        /// The kind of error.
        code: String,
        /// Its explanation.
        text: String,
    },
    /// The task finished.
    Finished {
        /// Its exit status.
        exit_status: i32,
        /// How many points it passed (the final point's number).
        points: u64,
        /// Where it finished.
        #[serde(rename = "where")]
        at: String,
        /// The final state digest.
        digest: String,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    t_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// Receives a copy of every event with its `t_ms` (for `baton demo`).
pub type Observer = tokio::sync::mpsc::UnboundedSender<(u64, Event)>;

/// Writes events to a file, or nowhere, and to an observer if one is set.
pub struct EventLog {
    out: Option<File>,
    start: Instant,
    observer: Option<Observer>,
}

impl EventLog {
    /// A log that writes nothing.
    pub fn none(start: Instant) -> EventLog {
        EventLog {
            out: None,
            start,
            observer: None,
        }
    }

    /// Also sends every event to `observer`.
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// A log appending to `path` (created if missing).
    ///
    /// # Errors
    ///
    /// If the file cannot be opened.
    pub fn open(path: &Path, start: Instant) -> io::Result<EventLog> {
        let out = File::options().create(true).append(true).open(path)?;
        Ok(EventLog {
            out: Some(out),
            start,
            observer: None,
        })
    }

    /// A log appending to `path` if one is given (`--events`), else none.
    ///
    /// # Errors
    ///
    /// If the file cannot be opened (the error names it).
    pub fn open_optional(path: Option<&Path>, start: Instant) -> anyhow::Result<EventLog> {
        use anyhow::Context;
        match path {
            Some(p) => EventLog::open(p, start)
                .with_context(|| format!("cannot open events file {}", p.display())),
            None => Ok(EventLog::none(start)),
        }
    }

    /// Whether events are being written at all.
    pub fn enabled(&self) -> bool {
        self.out.is_some() || self.observer.is_some()
    }

    /// Appends one event.
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn emit(&mut self, event: Event) -> io::Result<()> {
        let t_ms = self.start.elapsed().as_millis() as u64;
        if let Some(o) = &self.observer {
            let _ = o.send((t_ms, event.clone()));
        }
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        let line = Line {
            t_ms,
            event: &event,
        };
        let mut text = serde_json::to_vec(&line).map_err(io::Error::other)?;
        text.push(b'\n');
        out.write_all(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_time_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&path, Instant::now()).unwrap();
        log.emit(Event::Point {
            n: 3,
            at: "local".into(),
            digest: "ab".into(),
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["event"], "point");
        assert_eq!(v["n"], 3);
        assert_eq!(v["where"], "local");
        assert!(v["t_ms"].is_u64());
    }
}
