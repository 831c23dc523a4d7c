//! What the user sees of a run: the task's output, the event log and the
//! status line.
//!
//! Owns [`Shown`], the session's [`Hooks`]: it writes the output the stub
//! delivers (to the terminal, or framed into a buffer for `baton demo`),
//! translates protocol events into `--events` lines (a point's event waits
//! until the point is journaled, so that every logged point is one a resume
//! can start from; points are thinned to one per 100 ms unless a journal
//! wants each), notes the end, and draws the status line. It must not
//! drive anything.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use baton_proto::{Action, Event as ProtoEvent, LocalStub, Outcome, Side, StateRef};
use baton_task::wasi::OutStream;

use crate::client::console::Console;
use crate::client::events::{Event, EventLog};
use crate::client::session::Writes;
use crate::drive::exec::OutputFrames;
use crate::drive::worker::{Cmd, Worker};
use crate::drive::Hooks;
use crate::store::journal::DeliveredMark;

/// How often `point` events are written at most when no journal needs
/// each one.
const POINT_EVENT_EVERY: Duration = Duration::from_millis(100);

/// What the status line shows.
#[derive(Default)]
pub(crate) struct Status {
    pub(crate) point: u64,
    pub(crate) link_up: bool,
    pub(crate) rtt: Option<Duration>,
    pub(crate) lag: u64,
    pub(crate) finished_on: Option<Side>,
}

pub(crate) fn side(s: Side) -> String {
    s.as_str().to_string()
}

/// The session's answers to the drain: output, events, the end.
pub(crate) struct Shown<'a> {
    events: &'a mut EventLog,
    pub(crate) console: &'a Console,
    capture: Option<Arc<Mutex<Vec<u8>>>>,
    init_output: Option<Writes>,
    worker: Worker,
    /// Where shown output is noted at once, beside the journal's log.
    mark: Option<DeliveredMark>,
    pub(crate) status: Status,
    /// Every point is logged (a journal needs each one, or the executor
    /// already thins out the digests).
    every_point: bool,
    last_point_event: Option<Instant>,
    /// A point event held back by the thinning, written if it turns out
    /// to be the last.
    held_point: Option<Event>,
    /// Points reached here, not yet known to be journaled: their events
    /// wait, so that a logged point is always one a resume can start from.
    waiting: VecDeque<StateRef>,
    pub(crate) finish: Option<(Option<StateRef>, Outcome)>,
    pub(crate) refused: Option<String>,
}

impl<'a> Shown<'a> {
    /// What a session shows: output to `console` (or framed into
    /// `capture`), events to `events` (every point's if `every_point`),
    /// `init_output` before anything else.
    pub(crate) fn new(
        events: &'a mut EventLog,
        console: &'a Console,
        capture: Option<Arc<Mutex<Vec<u8>>>>,
        init_output: Writes,
        worker: Worker,
        mark: Option<DeliveredMark>,
        every_point: bool,
    ) -> Shown<'a> {
        Shown {
            events,
            console,
            capture,
            init_output: Some(init_output),
            worker,
            mark,
            status: Status::default(),
            every_point,
            last_point_event: None,
            held_point: None,
            waiting: VecDeque::new(),
            finish: None,
            refused: None,
        }
    }

    pub(crate) fn write_out(&self, stream: OutStream, bytes: &[u8]) {
        match &self.capture {
            Some(c) => {
                let mut v = c.lock().unwrap_or_else(|p| p.into_inner());
                OutputFrames::push(&mut v, stream, bytes);
            }
            None => self.console.write(stream, bytes),
        }
    }

    pub(crate) fn flush_init(&mut self) {
        for (stream, bytes) in self.init_output.take().unwrap_or_default() {
            self.write_out(stream, &bytes);
        }
    }

    pub(crate) fn emit(&mut self, e: Event) -> Result<()> {
        self.events
            .emit(e)
            .context("cannot write to the events file")
    }

    /// Writes a point's event, thinned to one per [`POINT_EVENT_EVERY`]
    /// unless every point is wanted.
    fn point(&mut self, state: StateRef, s: Side) -> Result<()> {
        let ev = Event::Point {
            n: state.point.0,
            at: side(s),
            digest: state.digest.to_string(),
        };
        if !self.every_point
            && self
                .last_point_event
                .is_some_and(|t| t.elapsed() < POINT_EVENT_EVERY)
        {
            self.held_point = Some(ev);
            return Ok(());
        }
        self.held_point = None;
        self.last_point_event = Some(Instant::now());
        self.emit(ev)
    }

    /// Writes the events of the points reached here through `durable`.
    pub(crate) fn release(&mut self, durable: Option<u64>) -> Result<()> {
        while let Some(s) = self.waiting.front().copied() {
            if durable.is_none_or(|d| s.point.0 > d) {
                break;
            }
            self.waiting.pop_front();
            self.point(s, Side::Local)?;
        }
        Ok(())
    }
}

impl Hooks for Shown<'_> {
    fn action(&mut self, action: Action) {
        match action {
            Action::Deliver(chunk) => {
                self.flush_init();
                for (stream, bytes) in OutputFrames::parse(chunk.bytes.as_bytes()) {
                    self.write_out(stream, bytes);
                }
                // Shown first, noted second: a crash in between shows
                // this chunk again on resume, never loses it. The mark
                // beside the log is noted at once; the log's note may wait
                // behind the executor's queue.
                if let Some(m) = &self.mark {
                    m.note(chunk.point);
                }
                self.worker.send(Cmd::Delivered(chunk.point));
            }
            Action::Finish { state, outcome } => {
                self.flush_init();
                self.finish = Some((state, outcome));
            }
            _ => {}
        }
    }

    fn event(&mut self, e: ProtoEvent) -> Result<()> {
        let ev = match e {
            ProtoEvent::Point { state, side: s } => {
                self.status.point = self.status.point.max(state.point.0);
                if state.digest == baton_proto::Digest::default() {
                    return Ok(()); // not computed: nobody looks at this point
                }
                return match s {
                    Side::Local => {
                        self.waiting.push_back(state);
                        Ok(())
                    }
                    Side::Remote => self.point(state, s),
                };
            }
            ProtoEvent::Finished { side: s, point, .. } => {
                // Written at the end, with the digest; the last point's
                // event first if it was held back. The final state is
                // journaled by now.
                self.status.finished_on = Some(s);
                self.release(Some(point.0))?;
                if let Some(ev) = self.held_point.take() {
                    if matches!(ev, Event::Point { n, .. } if n == point.0) {
                        self.emit(ev)?;
                    }
                }
                return Ok(());
            }
            ProtoEvent::PeerError { code, text } => {
                tracing::warn!(?code, %text, "the agent reported an error");
                self.refused = Some(text.clone());
                Event::PeerError {
                    code: format!("{code:?}"),
                    text,
                }
            }
            ProtoEvent::Disconnected {
                point,
                executor,
                holder,
                lag,
            } => {
                self.status.lag = lag;
                Event::Disconnected {
                    point: point.0,
                    executor: side(executor),
                    holder: side(holder),
                    lag,
                }
            }
            other => match protocol_event(other) {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        self.emit(ev)
    }
}

/// The events that are only translated.
fn protocol_event(e: ProtoEvent) -> Option<Event> {
    Some(match e {
        ProtoEvent::Migrated {
            from,
            to,
            point,
            downtime,
        } => Event::Migrated {
            from: side(from),
            to: side(to),
            point: point.0,
            downtime_ms: downtime.as_secs_f64() * 1000.0,
        },
        ProtoEvent::Responsibility {
            point,
            holder,
            executor,
            mode,
            epoch,
            takeover,
        } => Event::Responsibility {
            point: point.0,
            holder: side(holder),
            executor: side(executor),
            mode: mode.as_str().to_string(),
            epoch: epoch.0,
            takeover,
        },
        ProtoEvent::Resumed {
            side: s,
            point,
            lost_steps,
        } => Event::Resumed {
            at: side(s),
            point: point.0,
            lost_steps,
        },
        ProtoEvent::Reconnected {
            point_local,
            point_remote,
            winner,
        } => Event::Reconnected {
            point_local: point_local.map(|p| p.0),
            point_remote: point_remote.map(|p| p.0),
            winner: side(winner),
        },
        ProtoEvent::Divergence {
            point,
            local,
            remote,
        } => Event::Divergence {
            point: point.0,
            digest_local: local.to_string(),
            digest_remote: remote.to_string(),
        },
        _ => return None,
    })
}

/// What happens while the agent cannot be reached, as the agreement says.
pub(crate) fn unreachable_hint(stub: &LocalStub) -> &'static str {
    let a = stub.agreement().assignment;
    match (a.executor, a.responsible) {
        (Side::Remote, Side::Remote) => {
            "the agent is responsible and keeps the task running there; baton keeps trying"
        }
        _ => "the task runs here and baton keeps trying",
    }
}

/// The status line of a run with an agent.
pub(crate) fn draw_status(
    console: &Console,
    id: &str,
    stub: &LocalStub,
    status: &Status,
    agent: &str,
    pinned_local: bool,
) {
    if !console.shows_status() {
        return;
    }
    let a = stub.agreement().assignment;
    let at = match a.executor {
        Side::Local => "running here".to_string(),
        Side::Remote => format!("running on {agent}"),
    };
    let link = match (status.link_up, status.rtt) {
        (true, Some(rtt)) => format!("link up, rtt {:.1} ms", rtt.as_secs_f64() * 1000.0),
        (true, None) => "link up".to_string(),
        (false, _) => format!("link down (lag {})", status.lag),
    };
    let synced = stub
        .durable()
        .map_or("-".to_string(), |d| d.point.0.to_string());
    let hint = if pinned_local {
        "Ctrl-\\ sends it out"
    } else {
        "Ctrl-\\ brings it back"
    };
    console.status(&format!(
        "baton · {id} · {at} · point {} · held here {synced} · {} responsible · {link} · {hint}",
        status.point,
        a.responsible.as_str(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(n: u64) -> StateRef {
        StateRef::new(baton_proto::Point(n), baton_proto::Digest([n as u8; 32]))
    }

    /// An event log that only hands its events to the returned receiver.
    fn observed() -> (EventLog, tokio::sync::mpsc::UnboundedReceiver<(u64, Event)>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut events = EventLog::none(Instant::now());
        events.observe(tx);
        (events, rx)
    }

    fn logged(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, Event)>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok((_, e)) = rx.try_recv() {
            if let Event::Point { n, .. } = e {
                out.push(n);
            }
        }
        out
    }

    #[test]
    fn a_point_is_logged_only_once_it_is_journaled() {
        let (mut events, mut rx) = observed();
        let console = Console::global().clone();
        let mut shown = Shown::new(
            &mut events,
            &console,
            None,
            Vec::new(),
            Worker::detached(),
            None,
            true,
        );
        for n in 1..=3 {
            let e = ProtoEvent::Point {
                state: point(n),
                side: Side::Local,
            };
            shown.event(e).unwrap();
        }
        assert_eq!(
            shown.status.point, 3,
            "the status shows the newest point at once"
        );
        shown.release(None).unwrap();
        shown.release(Some(1)).unwrap();
        assert_eq!(logged(&mut rx), [1]);
        // A point the agent reached is logged when heard of.
        let remote = ProtoEvent::Point {
            state: point(9),
            side: Side::Remote,
        };
        shown.event(remote).unwrap();
        assert_eq!(logged(&mut rx), [9]);
        // The end releases what is left: the final state is journaled.
        let end = ProtoEvent::Finished {
            outcome: Outcome::Exit(0),
            point: baton_proto::Point(3),
            side: Side::Local,
        };
        shown.event(end).unwrap();
        assert_eq!(logged(&mut rx), [2, 3]);
    }

    #[test]
    fn unknown_digests_are_not_logged_and_thinned_points_keep_the_last() {
        let (mut events, mut rx) = observed();
        let console = Console::global().clone();
        let mut shown = Shown::new(
            &mut events,
            &console,
            None,
            Vec::new(),
            Worker::detached(),
            None,
            false,
        );
        let unknown = StateRef::new(baton_proto::Point(1), baton_proto::Digest::default());
        shown
            .event(ProtoEvent::Point {
                state: unknown,
                side: Side::Local,
            })
            .unwrap();
        for n in 2..=5 {
            shown
                .event(ProtoEvent::Point {
                    state: point(n),
                    side: Side::Local,
                })
                .unwrap();
        }
        shown.release(Some(5)).unwrap();
        // Thinned: the first known point only, within 100 ms.
        assert_eq!(logged(&mut rx), [2]);
        let end = ProtoEvent::Finished {
            outcome: Outcome::Exit(0),
            point: baton_proto::Point(5),
            side: Side::Local,
        };
        shown.event(end).unwrap();
        assert_eq!(logged(&mut rx), [5], "the last point is always logged");
    }
}
