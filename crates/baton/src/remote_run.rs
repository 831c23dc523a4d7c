//! The local side of a task extended onto an agent (`baton run --remote`).
//!
//! Owns the drive loop around a [`LocalStub`]: it feeds the stub the
//! executor's answers ([`crate::worker`]), the link's news
//! ([`crate::link::dial`]), timer ticks and the user's requests (Ctrl-\
//! brings the task back here, a second one sends it out again), and does
//! what the stub asks in the one order the protocol core documents:
//! actions, then transmits, then events, then sleep until the next
//! deadline. It writes output the stub delivers, exactly once and in order,
//! keeps the status line and the event log, and at the end writes back the
//! task's files from the final state.
//!
//! It must not decide anything the stub decides (who runs, who is
//! responsible, when to ship state).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use baton_net::{Client, Fingerprint, Identity, NetConfig};
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_proto::{
    Action, Agreement, Assignment, Blob, Epoch, Event as ProtoEvent, ExecutorEvent, LinkEvent,
    LocalConfig, LocalRecord, LocalStub, ModuleRef, Outcome, Point, Side, StateRef, TaskId, Time,
    Timing,
};
use baton_task::wasi::ClockMode;
use baton_task::wasi::{OutStream, Preopen};
use baton_task::{Limits, Program};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

use crate::console::Console;
use crate::events::{Event, EventLog};
use crate::exec::{wire_digest, ExecCore, FailKind, OutputFrames};
use crate::journal::{FinishRecord, Journal, RemoteSpec};
use crate::link::{dial, LinkNews, Outbox};
use crate::meta::TaskMeta;
use crate::runner::Ending;
use crate::store::{StateBytes, TaskLog};
use crate::worker::{Cmd, Done, Durable, Worker};

/// How often `point` events are written at most.
const POINT_EVENT_EVERY: Duration = Duration::from_millis(100);

/// Output writes in order: what a task printed while it was created.
pub type Writes = Vec<(OutStream, Vec<u8>)>;

/// A task that failed on either side, with the exit status it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct TaskFailed {
    /// Trap, limit or other.
    pub kind: FailKind,
    /// The reason, for the user.
    pub text: String,
}

/// Everything a remote run needs.
pub struct RemoteRun<'a> {
    /// The task's id.
    pub id: &'a str,
    /// The agent's address.
    pub agent: SocketAddr,
    /// Its pinned fingerprint.
    pub fingerprint: Fingerprint,
    /// Our identity.
    pub identity: Identity,
    /// Transport settings.
    pub net: NetConfig,
    /// The stub's configuration.
    pub config: LocalConfig,
    /// The executor, holding the task at point 0.
    pub core: ExecCore,
    /// The state at point 0.
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
    pub capture: Option<Arc<std::sync::Mutex<Vec<u8>>>>,
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
    pub journal: Option<&'a mut Journal>,
}

/// The local stub's configuration for a remote run as `spec` describes it
/// (for `baton run --remote` and for `baton resume` of one alike).
///
/// # Errors
///
/// A policy string that does not parse.
pub fn local_config(
    spec: &RemoteSpec,
    id: &str,
    module: &[u8],
    program: &Program,
    limits: Limits,
    clock: ClockMode,
) -> Result<LocalConfig> {
    let mut cfg = LocalConfig::new(
        TaskId(id.to_string()),
        ModuleRef {
            digest: wire_digest(program.digest()),
            size: module.len() as u64,
        },
        Blob::from(module),
    );
    cfg.timing = Timing::new(
        Duration::from_millis(spec.disconnect_after_ms),
        Duration::from_millis(spec.takeover_after_ms),
    );
    cfg.migrate = Arc::new(spec.migrate.parse::<Migrate>()?);
    cfg.responsible = Arc::new(spec.responsible.parse::<Responsible>()?);
    cfg.mode = Arc::new(spec.mode.parse::<ModeChoice>()?);
    cfg.precopy = spec.precopy;
    cfg.hello_meta = Blob::from(TaskMeta::new(limits, clock).encode());
    Ok(cfg)
}

/// Starts the protocol log of a remote run in its journal directory: the
/// state at point 0 and the record a new local stub starts from (so that a
/// crash before the first write still resumes).
///
/// # Errors
///
/// The log cannot be written.
pub fn start_log(
    dir: &std::path::Path,
    cfg: &LocalConfig,
    initial: StateRef,
    base: &baton_task::Checkpoint,
) -> Result<Durable> {
    let mut log = TaskLog::create(dir)?;
    let mode = cfg.mode.choose(Side::Local, Side::Local);
    let record = LocalRecord {
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
    };
    log.append(&record.encode(), Some(StateBytes::Full(&base.bytes)), &[])?;
    Ok(Durable {
        log,
        module_path: None,
    })
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

impl RemoteRun<'_> {
    /// Runs the task to its end, extending onto the agent.
    ///
    /// # Errors
    ///
    /// A refused identity, a failed task, a bad state from the agent, an
    /// unwritable event log or output directory.
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
        let RemoteRun {
            id,
            agent,
            fingerprint,
            identity,
            net,
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
            mut journal,
        } = self;
        let mut init_output = Some(init_output);
        let write_out = |stream: OutStream, bytes: &[u8]| match &capture {
            Some(c) => {
                let mut v = c.lock().unwrap_or_else(|p| p.into_inner());
                OutputFrames::push(&mut v, stream, bytes);
            }
            None => console.write(stream, bytes),
        };
        let flush_init = |init: &mut Option<Writes>| {
            for (stream, bytes) in init.take().unwrap_or_default() {
                write_out(stream, &bytes);
            }
        };
        let origin = Instant::now();
        let now = || Time::from_nanos(origin.elapsed().as_nanos() as u64);
        let bind: SocketAddr = if agent.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let client = Client::bind(bind, identity, net)?;
        let module_digest = config.module.digest;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let worker = Worker::spawn(core, durable, Arc::new(Semaphore::new(1)), done_tx);
        let (link_tx, mut link_rx) = mpsc::unbounded_channel();
        let dialer = tokio::spawn(dial(Arc::new(client), agent, fingerprint, link_tx));
        let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        let mut sigquit = signal(SignalKind::quit()).context("cannot catch SIGQUIT")?;

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
        let mut stub = match resume {
            Some((record, delivered)) => LocalStub::recover(config, now(), record, delivered),
            None => LocalStub::new(config, now(), initial),
        };
        let mut gen = 0u64;
        let mut link: Option<(u64, Outbox)> = None;
        let mut status = Status::default();
        let mut warned_unreachable = false;
        let mut dialing = true;
        let mut ever_connected = false;
        let mut pinned_local = false;
        let mut last_point_event: Option<Instant> = None;
        let agent_text = agent.to_string();
        let ending = loop {
            // 1. Actions, in order.
            let mut finish = None;
            while let Some(action) = stub.poll_action() {
                tracing::trace!(?action, "action");
                match worker.dispatch(action, &mut gen, module_digest) {
                    Some(Action::Deliver(chunk)) => {
                        flush_init(&mut init_output);
                        for (stream, bytes) in OutputFrames::parse(chunk.bytes.as_bytes()) {
                            write_out(stream, bytes);
                        }
                        // Shown first, noted second: a crash in between shows
                        // this chunk again on resume, never loses it.
                        worker.send(Cmd::Delivered(chunk.point));
                    }
                    Some(Action::Finish { state, outcome }) => {
                        flush_init(&mut init_output);
                        finish = Some((state, outcome));
                    }
                    _ => {}
                }
            }
            // 2. Messages.
            while let Some(t) = stub.poll_transmit() {
                if let Some((_, outbox)) = &link {
                    tracing::trace!(message = ?t.message, "send");
                    outbox.send(t);
                }
            }
            // 3. Events.
            let mut refused = None;
            while let Some(e) = stub.poll_event() {
                if let ProtoEvent::PeerError { text, .. } = &e {
                    refused = Some(text.clone());
                }
                log_event(events, &mut status, &mut last_point_event, e)?;
            }
            if let (Some(text), true) = (refused, dialing) {
                // The agent will not (or can no longer) hold this task:
                // stop asking and let the stub carry on here.
                console.line(&format!(
                    "baton: warning: agent {agent} refused the task: {text}; it runs here"
                ));
                dialer.abort();
                dialing = false;
                if link.take().is_some() {
                    status.link_up = false;
                    stub.handle_link(now(), LinkEvent::Lost);
                }
                continue;
            }
            if let Some((state, outcome)) = finish {
                let on = status.finished_on.unwrap_or(Side::Local);
                let ending =
                    finish_task(&worker, events, console, preopens, state, outcome, on).await;
                if let (Ok(Ending::Finished(code)), Some(j), Some(st)) =
                    (&ending, journal.as_deref_mut(), state)
                {
                    j.write_finished(&FinishRecord {
                        exit_status: *code,
                        points: st.point.0,
                        digest: st.digest.to_string(),
                    })?;
                    // The worker's log is done with: keep the journal small
                    // (remote runs are journaled by default, every one).
                    worker.close().await;
                    j.shed_finished();
                }
                break ending?;
            }
            draw_status(console, id, &stub, &status, &agent_text, pinned_local);
            // 4. Wait for the next input or deadline.
            let deadline = stub.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => {
                        let wait =
                            Duration::from_nanos(t.as_nanos().saturating_sub(now().as_nanos()));
                        tokio::time::sleep(wait).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                done = done_rx.recv() => match done {
                    Some(Done::Exec { gen: g, event }) => {
                        if g == gen {
                            stub.handle_executor(now(), event);
                        }
                    }
                    Some(Done::Captured(cp)) => stub.handle_executor(now(), ExecutorEvent::Captured(cp)),
                    Some(Done::CaptureFailed { state, error }) => {
                        tracing::debug!(error = %error, "could not capture a state for the agent; asked again later");
                        stub.handle_executor(now(), baton_proto::ExecutorEvent::CaptureFailed { state });
                    }
                    Some(Done::Persisted { seq, .. }) => stub.handle_persisted(now(), seq),
                    Some(Done::PersistFailed { error, .. }) => {
                        return Err(anyhow!(error).context("the agent sent a state that does not fit this task"));
                    }
                    None => bail!("the executor stopped unexpectedly"),
                },
                news = link_rx.recv(), if dialing => match news {
                    Some(LinkNews::Up { id: n, outbox }) => {
                        let addr = outbox.conn().remote_address();
                        status.link_up = true;
                        status.rtt = Some(outbox.conn().rtt());
                        link = Some((n, outbox));
                        ever_connected = true;
                        warned_unreachable = false;
                        flush_init(&mut init_output);
                        tracing::info!(agent = %addr, "connected");
                        events.emit(Event::Link { state: "up".into(), agent: agent_text.clone(), reason: None })?;
                        stub.handle_link(now(), LinkEvent::Connected);
                    }
                    Some(LinkNews::Message { id: n, message }) => {
                        if let Some((current, outbox)) = &link {
                            if *current == n {
                                status.rtt = Some(outbox.conn().rtt());
                                stub.handle_message(now(), *message);
                            }
                        }
                    }
                    Some(LinkNews::Down { id: n, error }) => {
                        if link.as_ref().is_some_and(|(c, _)| *c == n) {
                            link = None;
                            status.link_up = false;
                            tracing::info!(error = %error, "link lost");
                            events.emit(Event::Link { state: "down".into(), agent: agent_text.clone(), reason: Some(error.to_string()) })?;
                            stub.handle_link(now(), LinkEvent::Lost);
                        }
                    }
                    Some(LinkNews::Unreachable(error)) => {
                        flush_init(&mut init_output);
                        if !warned_unreachable {
                            warned_unreachable = true;
                            console.line(&format!(
                                "baton: warning: agent {agent} is unreachable ({error}); the task runs here and baton keeps trying"
                            ));
                            events.emit(Event::Link { state: "unreachable".into(), agent: agent_text.clone(), reason: Some(error.to_string()) })?;
                        }
                    }
                    Some(LinkNews::Fatal(error)) => {
                        if !ever_connected {
                            return Err(anyhow!(error).context("nothing runs remotely"));
                        }
                        // The agent we were talking to now has another
                        // identity (or refuses us): never send it anything
                        // again, but do not throw away the task here.
                        console.line(&format!(
                            "baton: warning: {error}; no longer extending onto it, the task goes on here"
                        ));
                        dialing = false;
                    }
                    // The dialer ended (after a fatal error it reported).
                    None => dialing = false,
                },
                _ = sleep => stub.handle_timeout(now()),
                _ = sigint.recv() => {
                    break Ending::Interrupted(status.point);
                }
                _ = sigquit.recv() => {
                    pinned_local = !pinned_local;
                    let to = if pinned_local { Side::Local } else { Side::Remote };
                    console.line(&format!(
                        "baton: moving the task {} (Ctrl-\\ again to {})",
                        if pinned_local { "back here" } else { "to the agent" },
                        if pinned_local { "send it out again" } else { "bring it back" },
                    ));
                    stub.migrate(now(), to);
                }
            }
        };
        dialer.abort();
        if let Some((_, outbox)) = &link {
            // Let the last messages (the final heartbeat) go out.
            tokio::time::sleep(Duration::from_millis(20)).await;
            outbox.conn().close("task finished");
        }
        console.clear();
        Ok(ending)
    }
}

/// Writes one protocol event to the log and the status.
fn log_event(
    events: &mut EventLog,
    status: &mut Status,
    last_point_event: &mut Option<Instant>,
    e: ProtoEvent,
) -> Result<()> {
    let ev = match e {
        ProtoEvent::Point { state, side: s } => {
            status.point = status.point.max(state.point.0);
            if last_point_event.is_some_and(|t| t.elapsed() < POINT_EVENT_EVERY) {
                return Ok(());
            }
            *last_point_event = Some(Instant::now());
            Event::Point {
                n: state.point.0,
                at: side(s),
                digest: state.digest.to_string(),
            }
        }
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
        ProtoEvent::Disconnected {
            point,
            executor,
            holder,
            lag,
        } => {
            status.lag = lag;
            Event::Disconnected {
                point: point.0,
                executor: side(executor),
                holder: side(holder),
                lag,
            }
        }
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
        ProtoEvent::Finished { side: s, .. } => {
            // Written at the end, with the digest.
            status.finished_on = Some(s);
            return Ok(());
        }
        ProtoEvent::PeerError { code, text } => {
            tracing::warn!(?code, %text, "the agent reported an error");
            Event::PeerError {
                code: format!("{code:?}"),
                text,
            }
        }
    };
    events.emit(ev).context("cannot write to the events file")
}

fn draw_status(
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

/// The end: write back files from the final state and report the outcome.
async fn finish_task(
    worker: &Worker,
    events: &mut EventLog,
    console: &Console,
    preopens: &[Preopen],
    state: Option<StateRef>,
    outcome: Outcome,
    on: Side,
) -> Result<Ending> {
    console.clear();
    let stored = worker.stored().await;
    let final_state = match (&stored, state) {
        (Some((r, s)), Some(want)) if *r == want => Some(s),
        _ => None,
    };
    let at = side(on);
    match outcome {
        Outcome::Exit(status) => {
            let Some(fs) = final_state else {
                bail!("the final state of the task is not here; its files cannot be written back");
            };
            let report = fs
                .host
                .write_back_to(preopens)
                .context("cannot write the task's files back")?;
            for path in &report.files_written {
                tracing::info!(path = %path.display(), "wrote back");
            }
            events
                .emit(Event::Finished {
                    exit_status: status,
                    points: fs.point,
                    at,
                    digest: state.map(|s| s.digest.to_string()).unwrap_or_default(),
                })
                .context("cannot write to the events file")?;
            Ok(Ending::Finished(status))
        }
        Outcome::Failed(reason) => {
            let (kind, text) = FailKind::parse(&reason);
            Err(TaskFailed {
                kind,
                text: text.to_string(),
            }
            .into())
        }
        Outcome::Diverged { point } => bail!(
            "the two sides computed different states at point {point}; the task was stopped (is one machine faulty?)"
        ),
    }
}
