//! The local side of a task: `baton run` and `baton resume`, with or
//! without an agent.
//!
//! Owns [`Session`]: the local stub on the one [`Driver`], plus what only
//! this side has: the dialer (when the run extends onto an agent), Ctrl-C
//! (stop at a point) and Ctrl-\ (bring the task back here, or send it out
//! again), the output the stub delivers (exactly once and in order), the
//! status line, the event log, and the end (files written back, the
//! journal marked finished). A local run is the same session with
//! migration `never` and no dialer.
//!
//! It must not decide anything the stub decides (who runs, who is
//! responsible, when to ship state).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use baton_net::{Client, Fingerprint, Identity, NetConfig};
use baton_proto::{
    Action, Event as ProtoEvent, FailKind, LocalConfig, LocalRecord, LocalStub, Outcome, Point,
    Side, StateRef,
};
use baton_task::wasi::{OutStream, Preopen};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

use crate::client::console::Console;
use crate::client::events::{Event, EventLog};
use crate::client::link::{dial, LinkNews};
use crate::drive::exec::{ExecCore, OutputFrames};
use crate::drive::worker::{Durable, Worker};
use crate::drive::{Driver, Hooks, Wake};
use crate::store::journal::{FinishRecord, Journal};
use crate::units::human_bytes;

/// How often `point` events are written at most when no journal needs
/// each one.
const POINT_EVENT_EVERY: Duration = Duration::from_millis(100);

/// Output writes in order: what a task printed while it was created.
pub type Writes = Vec<(OutStream, Vec<u8>)>;

/// How a run ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The task finished with this status.
    Finished(i32),
    /// Ctrl-C stopped it; the journal holds this point.
    Interrupted(u64),
}

/// A task that failed on either side, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct TaskFailed {
    /// Trap, limit or other.
    pub kind: FailKind,
    /// The reason, for the user.
    pub text: String,
}

/// The agent a session extends onto.
pub struct Remote {
    /// Its address.
    pub addr: SocketAddr,
    /// Its pinned fingerprint.
    pub fingerprint: Fingerprint,
    /// Our identity.
    pub identity: Identity,
    /// Transport settings.
    pub net: NetConfig,
}

/// Everything a session needs.
pub struct Session<'a> {
    /// The task's id.
    pub id: &'a str,
    /// The agent, if the run extends onto one.
    pub remote: Option<Remote>,
    /// The stub's configuration.
    pub config: LocalConfig,
    /// The executor, holding the task at `initial` (or resuming).
    pub core: ExecCore,
    /// The state at point 0 (for a new task).
    pub initial: StateRef,
    /// The `--events` log.
    pub events: &'a mut EventLog,
    /// The terminal.
    pub console: &'a Console,
    /// Where to write the task's files back at the end.
    pub preopens: &'a [Preopen],
    /// The module's digest (for the `started` event).
    pub module: String,
    /// Collect the task's output here instead of writing it to the console
    /// (`baton demo`), as framed by [`OutputFrames`].
    pub capture: Option<Arc<Mutex<Vec<u8>>>>,
    /// What the task printed while it was created, written once the agent
    /// is known to be the pinned one (or unreachable): a refused identity
    /// leaves stdout empty.
    pub init_output: Writes,
    /// Set by `baton resume`: the journaled record and the newest point
    /// whose output was shown.
    pub resume: Option<(LocalRecord, Point)>,
    /// Where persisted writes go (the task's journal log), if anywhere.
    pub durable: Option<Durable>,
    /// The task's journal, marked finished at the end.
    pub journal: Option<&'a Journal>,
}

/// What the status line shows.
#[derive(Default)]
struct Status {
    point: u64,
    link_up: bool,
    rtt: Option<Duration>,
    lag: u64,
    finished_on: Option<Side>,
}

fn side(s: Side) -> String {
    s.as_str().to_string()
}

/// The session's answers to the drain: output, events, the end.
struct ClientHooks<'a> {
    events: &'a mut EventLog,
    console: &'a Console,
    capture: Option<Arc<Mutex<Vec<u8>>>>,
    init_output: Option<Writes>,
    worker: Worker,
    status: Status,
    /// Every point is logged (a journal needs each one, or the executor
    /// already thins out the digests).
    every_point: bool,
    last_point_event: Option<Instant>,
    /// A point event held back by the thinning, written if it turns out
    /// to be the last.
    held_point: Option<Event>,
    /// Points reached here, not yet known to be journaled: their events
    /// wait, so that a logged point is always one a resume can start from.
    waiting: std::collections::VecDeque<StateRef>,
    finish: Option<(Option<StateRef>, Outcome)>,
    refused: Option<String>,
}

impl ClientHooks<'_> {
    fn write_out(&self, stream: OutStream, bytes: &[u8]) {
        match &self.capture {
            Some(c) => {
                let mut v = c.lock().unwrap_or_else(|p| p.into_inner());
                OutputFrames::push(&mut v, stream, bytes);
            }
            None => self.console.write(stream, bytes),
        }
    }

    fn flush_init(&mut self) {
        for (stream, bytes) in self.init_output.take().unwrap_or_default() {
            self.write_out(stream, &bytes);
        }
    }

    fn emit(&mut self, e: Event) -> Result<()> {
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
    fn release(&mut self, durable: Option<u64>) -> Result<()> {
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

impl Hooks for ClientHooks<'_> {
    fn action(&mut self, action: Action) {
        match action {
            Action::Deliver(chunk) => {
                self.flush_init();
                for (stream, bytes) in OutputFrames::parse(chunk.bytes.as_bytes()) {
                    self.write_out(stream, bytes);
                }
                // Shown first, noted second: a crash in between shows
                // this chunk again on resume, never loses it.
                self.worker
                    .send(crate::drive::worker::Cmd::Delivered(chunk.point));
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

/// What the session listens to besides the executor and the timer.
enum Input {
    Link(Option<LinkNews>),
    Interrupt,
    Quit,
}

/// The dialer's side of a session.
struct Dialer {
    news: mpsc::UnboundedReceiver<LinkNews>,
    task: tokio::task::JoinHandle<()>,
    /// Still dialling (not stopped by a refusal or a fatal error).
    on: bool,
    agent: SocketAddr,
    warned_unreachable: bool,
    ever_connected: bool,
    pinned_local: bool,
}

impl Session<'_> {
    /// Runs the task to its end (or to Ctrl-C) on a runtime of its own.
    ///
    /// # Errors
    ///
    /// A refused identity, a failed task, a bad state from the agent, an
    /// unwritable event log, journal or output directory.
    pub fn drive(self) -> Result<Ending> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(self.drive_async())
    }

    /// [`Self::drive`] on the caller's runtime.
    ///
    /// # Errors
    ///
    /// As [`Self::drive`].
    pub async fn drive_async(self) -> Result<Ending> {
        let Session {
            id,
            remote,
            config,
            core,
            initial,
            events,
            console,
            preopens,
            module,
            capture,
            init_output,
            resume,
            durable,
            journal,
        } = self;
        let origin = Instant::now();
        let module_digest = config.module.digest;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let worker = Worker::spawn(core, durable, Arc::new(Semaphore::new(1)), done_tx);
        let mut dialer = match remote {
            Some(r) => Some(start_dialer(r)?),
            None => None,
        };
        let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        // Ctrl-\ means something only when there is an agent to move to.
        let mut sigquit = match dialer {
            Some(_) => Some(signal(SignalKind::quit()).context("cannot catch SIGQUIT")?),
            None => None,
        };
        events
            .emit(Event::Started {
                task: id.to_string(),
                at: "local".to_string(),
                module,
                resumed_from: resume
                    .as_ref()
                    .map(|(r, _)| r.durable.map_or(0, |d| d.point.0)),
            })
            .context("cannot write to the events file")?;
        let now = baton_proto::Time::ZERO;
        let stub = match resume {
            Some((record, delivered)) => LocalStub::recover(config, now, record, delivered),
            None => LocalStub::new(config, now, initial),
        };
        let mut driver = Driver::new(stub, worker.clone(), done_rx, module_digest, origin);
        let mut hooks = ClientHooks {
            every_point: journal.is_some(),
            events,
            console,
            capture,
            init_output: Some(init_output),
            worker,
            status: Status::default(),
            last_point_event: None,
            held_point: None,
            waiting: std::collections::VecDeque::new(),
            finish: None,
            refused: None,
        };
        let ending = loop {
            driver.drain(&mut hooks)?;
            hooks.release(driver.stub.durable().map(|d| d.point.0))?;
            if let Some(text) = hooks.refused.take() {
                if let Some(d) = dialer.as_mut().filter(|d| d.on) {
                    // The agent will not (or can no longer) hold this task:
                    // stop asking and let the stub carry on here.
                    console.line(&format!(
                        "baton: warning: agent {} refused the task: {text}; it runs here",
                        d.agent
                    ));
                    d.task.abort();
                    d.on = false;
                    if driver.lost(None) {
                        hooks.status.link_up = false;
                    }
                    continue;
                }
            }
            if let Some((state, outcome)) = hooks.finish.take() {
                break finish(&driver, &mut hooks, preopens, journal, state, outcome).await?;
            }
            if let Some(d) = &dialer {
                draw_status(console, id, &driver.stub, &hooks.status, d);
            } else {
                console.status(&format!(
                    "baton · {id} · local · point {} · {:.1}s · Ctrl-C stops at the next point",
                    hooks.status.point,
                    origin.elapsed().as_secs_f64()
                ));
            }
            let input = next_input(&mut dialer, &mut sigint, &mut sigquit);
            match driver.wait(input).await {
                Wake::Progress | Wake::Program(_) => {}
                Wake::PersistFailed(e) => {
                    return Err(anyhow!(e).context("a state could not be kept (a state from the agent that does not fit this task, or a disk error)"));
                }
                Wake::ExecutorGone => bail!("the executor stopped unexpectedly"),
                Wake::Input(Input::Interrupt) => break Ending::Interrupted(hooks.status.point),
                Wake::Input(Input::Quit) => {
                    if let Some(d) = dialer.as_mut() {
                        d.pinned_local = !d.pinned_local;
                        let (to, msg) = if d.pinned_local {
                            (
                                Side::Local,
                                "back here (Ctrl-\\ again to send it out again)",
                            )
                        } else {
                            (
                                Side::Remote,
                                "to the agent (Ctrl-\\ again to bring it back)",
                            )
                        };
                        console.line(&format!("baton: moving the task {msg}"));
                        let now = driver.now();
                        driver.stub.migrate(now, to);
                    }
                }
                Wake::Input(Input::Link(news)) => {
                    if let Some(d) = dialer.as_mut() {
                        on_link(d, news, &mut driver, &mut hooks)?;
                    }
                }
            }
        };
        if let Ending::Interrupted(_) = ending {
            // A second Ctrl-C ends the process at once, even while the step
            // in flight finishes.
            // SAFETY: restoring the default disposition of a signal.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
            }
            driver
                .worker()
                .close()
                .await
                .context("cannot sync the journal")?;
            // Every write handed to the executor is on disk now, so every
            // point reached is one a resume starts from.
            hooks.release(Some(hooks.status.point))?;
        }
        if let Some(d) = dialer {
            d.task.abort();
        }
        if let Some((_, outbox)) = driver.link() {
            // Let the last messages (the final heartbeat) go out.
            tokio::time::sleep(Duration::from_millis(20)).await;
            outbox.conn().close("task finished");
        }
        console.clear();
        Ok(ending)
    }
}

fn start_dialer(r: Remote) -> Result<Dialer> {
    let bind: SocketAddr = if r.addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let client = Client::bind(bind, r.identity, r.net)?;
    let (tx, news) = mpsc::unbounded_channel();
    let task = tokio::spawn(dial(Arc::new(client), r.addr, r.fingerprint, tx));
    Ok(Dialer {
        news,
        task,
        on: true,
        agent: r.addr,
        warned_unreachable: false,
        ever_connected: false,
        pinned_local: false,
    })
}

async fn next_input(
    dialer: &mut Option<Dialer>,
    sigint: &mut Signal,
    sigquit: &mut Option<Signal>,
) -> Input {
    let link = async {
        match dialer.as_mut().filter(|d| d.on) {
            Some(d) => d.news.recv().await,
            None => std::future::pending().await,
        }
    };
    let quit = async {
        match sigquit.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        news = link => Input::Link(news),
        _ = sigint.recv() => Input::Interrupt,
        _ = quit => Input::Quit,
    }
}

/// What the dialer reports.
fn on_link(
    d: &mut Dialer,
    news: Option<LinkNews>,
    driver: &mut Driver<LocalStub>,
    hooks: &mut ClientHooks<'_>,
) -> Result<()> {
    let agent = d.agent.to_string();
    match news {
        Some(LinkNews::Up { id: n, outbox }) => {
            let addr = outbox.conn().remote_address();
            hooks.status.link_up = true;
            hooks.status.rtt = Some(outbox.conn().rtt());
            d.ever_connected = true;
            d.warned_unreachable = false;
            hooks.flush_init();
            tracing::info!(agent = %addr, "connected");
            hooks.emit(Event::Link {
                state: "up".into(),
                agent,
                reason: None,
            })?;
            driver.connected(n, outbox);
        }
        Some(LinkNews::Message { id: n, message }) => {
            if let Some((current, outbox)) = driver.link() {
                if current == n {
                    hooks.status.rtt = Some(outbox.conn().rtt());
                    let now = driver.now();
                    driver.stub.handle_message(now, *message);
                }
            }
        }
        Some(LinkNews::Down { id: n, error }) => {
            if driver.lost(Some(n)) {
                hooks.status.link_up = false;
                tracing::info!(error = %error, "link lost");
                hooks.emit(Event::Link {
                    state: "down".into(),
                    agent,
                    reason: Some(error.to_string()),
                })?;
            }
        }
        Some(LinkNews::Unreachable(error)) => {
            hooks.flush_init();
            if !d.warned_unreachable {
                d.warned_unreachable = true;
                hooks.console.line(&format!(
                    "baton: warning: agent {agent} is unreachable ({error}); {}",
                    unreachable_hint(&driver.stub)
                ));
                hooks.emit(Event::Link {
                    state: "unreachable".into(),
                    agent,
                    reason: Some(error.to_string()),
                })?;
            }
        }
        Some(LinkNews::Fatal(error)) => {
            if !d.ever_connected {
                return Err(anyhow!(error).context("nothing runs remotely"));
            }
            // The agent we were talking to now has another identity (or
            // refuses us): never send it anything again, but do not throw
            // away the task here.
            hooks.console.line(&format!(
                "baton: warning: {error}; no longer extending onto it, the task goes on here"
            ));
            d.on = false;
        }
        // The dialer ended (after a fatal error it reported).
        None => d.on = false,
    }
    Ok(())
}

/// What happens while the agent cannot be reached, as the agreement says.
fn unreachable_hint(stub: &LocalStub) -> &'static str {
    let a = stub.agreement().assignment;
    match (a.executor, a.responsible) {
        (Side::Remote, Side::Remote) => {
            "the agent is responsible and keeps the task running there; baton keeps trying"
        }
        _ => "the task runs here and baton keeps trying",
    }
}

fn draw_status(console: &Console, id: &str, stub: &LocalStub, status: &Status, d: &Dialer) {
    if !console.shows_status() {
        return;
    }
    let a = stub.agreement().assignment;
    let at = match a.executor {
        Side::Local => "running here".to_string(),
        Side::Remote => format!("running on {}", d.agent),
    };
    let link = match (status.link_up, status.rtt) {
        (true, Some(rtt)) => format!("link up, rtt {:.1} ms", rtt.as_secs_f64() * 1000.0),
        (true, None) => "link up".to_string(),
        (false, _) => format!("link down (lag {})", status.lag),
    };
    let synced = stub
        .durable()
        .map_or("-".to_string(), |d| d.point.0.to_string());
    let hint = if d.pinned_local {
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

/// The end: files written back from the final state, the outcome reported
/// and journaled.
async fn finish(
    driver: &Driver<LocalStub>,
    hooks: &mut ClientHooks<'_>,
    preopens: &[Preopen],
    journal: Option<&Journal>,
    state: Option<StateRef>,
    outcome: Outcome,
) -> Result<Ending> {
    hooks.console.clear();
    let at = side(hooks.status.finished_on.unwrap_or(Side::Local));
    let status = match outcome {
        Outcome::Exit(status) => status,
        Outcome::Failed { kind, reason } => {
            return Err(TaskFailed { kind, text: reason }.into());
        }
        Outcome::Diverged { point } => bail!(
            "the two sides computed different states at point {point}; the task was stopped (is one machine faulty?)"
        ),
    };
    let Some(state) = state else {
        bail!("the final state of the task is not here; its files cannot be written back");
    };
    let worker = driver.worker();
    let report = worker
        .finish(state, preopens)
        .await
        .context("the task finished, but")?;
    for path in &report.written.files_written {
        tracing::info!(path = %path.display(), "wrote back");
    }
    if let Some(asked) = report.memory_refused {
        hooks.console.line(&format!(
            "baton: note: the task asked for {} of memory, beyond --max-memory; memory.grow failed for it",
            human_bytes(asked)
        ));
    }
    let digest = state.digest.to_string();
    if let Some(j) = journal {
        j.write_finished(&FinishRecord {
            exit_status: status,
            points: state.point.0,
            digest: digest.clone(),
            memory: Some(report.memory),
        })?;
        // The log is done with: keep the journal small.
        worker.close().await.context("cannot sync the journal")?;
        j.shed_finished();
    }
    hooks.emit(Event::Finished {
        exit_status: status,
        points: state.point.0,
        at,
        digest,
    })?;
    Ok(Ending::Finished(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_events_without_a_log_line_are_dropped() {
        let e = ProtoEvent::Point {
            state: StateRef::new(Point(1), baton_proto::Digest::default()),
            side: Side::Local,
        };
        assert!(protocol_event(e).is_none());
    }
}
