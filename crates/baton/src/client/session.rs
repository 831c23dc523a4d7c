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
use baton_proto::{FailKind, LocalConfig, LocalRecord, LocalStub, Outcome, Point, Side, StateRef};
use baton_task::wasi::{OutStream, Preopen};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, Semaphore};

use crate::client::console::Console;
use crate::client::events::{Event, EventLog};
use crate::client::link::{dial, LinkNews};
use crate::client::show::{draw_status, side, unreachable_hint, Shown};
use crate::drive::exec::ExecCore;
use crate::drive::worker::{Durable, Worker};
use crate::drive::{Driver, Wake};
use crate::store::journal::{FinishRecord, Journal};
use crate::units::human_bytes;

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
    /// (`baton demo`), as framed by [`crate::drive::frames::OutputFrames`].
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

/// A session's signals: Ctrl-C always, Ctrl-\\ only with an agent to move
/// to (without one it keeps its usual meaning).
struct Signals {
    /// The first Ctrl-C. It is caught by a task of its own, which at once
    /// gives SIGINT back its default action: a second Ctrl-C then ends the
    /// process even while a step computes on the driver's thread.
    interrupt: mpsc::UnboundedReceiver<()>,
    quit: Option<Signal>,
}

impl Signals {
    fn new(with_agent: bool) -> Result<Signals> {
        let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        let (tx, interrupt) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            if sigint.recv().await.is_some() {
                // SAFETY: restoring the default disposition of a signal.
                unsafe {
                    libc::signal(libc::SIGINT, libc::SIG_DFL);
                }
                let _ = tx.send(());
            }
        });
        let quit = match with_agent {
            true => Some(signal(SignalKind::quit()).context("cannot catch SIGQUIT")?),
            false => None,
        };
        Ok(Signals { interrupt, quit })
    }
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
            .thread_stack_size(baton_task::TASK_THREAD_STACK)
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
        let origin = Instant::now();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        // With no agent, nothing else has to move while a step computes:
        // the executor runs on the driver's own thread.
        let worker = match self.remote {
            Some(_) => Worker::spawn(
                self.core,
                self.durable,
                Arc::new(Semaphore::new(1)),
                done_tx,
            ),
            None => Worker::inline(self.core, self.durable, done_tx),
        };
        let mut dialer = self.remote.map(start_dialer).transpose()?;
        let mut signals = Signals::new(dialer.is_some())?;
        self.events
            .emit(Event::Started {
                task: self.id.to_string(),
                at: "local".to_string(),
                module: self.module,
                resumed_from: self
                    .resume
                    .as_ref()
                    .map(|(r, _)| r.durable.map_or(0, |d| d.point.0)),
            })
            .context("cannot write to the events file")?;
        let (config, now) = (self.config, baton_proto::Time::ZERO);
        let module = config.module.digest;
        let stub = match self.resume {
            Some((record, delivered)) => LocalStub::recover(config, now, record, delivered),
            None => LocalStub::new(config, now, self.initial),
        };
        let mut driver = Driver::new(stub, worker.clone(), done_rx, module, origin);
        let every_point = self.journal.is_some();
        let mut shown = Shown::new(
            self.events,
            self.console,
            self.capture,
            self.init_output,
            worker,
            self.journal.and_then(|j| {
                j.delivered_mark()
                    .map_err(|e| tracing::warn!(error = %e, "cannot note shown output beside the journal"))
                    .ok()
            }),
            every_point,
        );
        let end = RunEnd {
            id: self.id,
            preopens: self.preopens,
            journal: self.journal,
            origin,
        };
        let ending = run(&mut driver, &mut shown, &mut dialer, &mut signals, &end).await?;
        if let Ending::Interrupted(_) = ending {
            // The step in flight finishes (a second Ctrl-C ends the process
            // at once); then everything handed to the executor is on disk.
            driver
                .worker()
                .close()
                .await
                .context("cannot sync the journal")?;
            // Every write handed to the executor is on disk now, so every
            // point reached is one a resume starts from.
            shown.release(Some(shown.status.point))?;
        }
        if let Some(d) = dialer {
            d.task.abort();
        }
        if let Some((_, outbox)) = driver.link() {
            // Let the last messages (the final heartbeat) go out.
            tokio::time::sleep(Duration::from_millis(20)).await;
            outbox.conn().close("task finished");
        }
        shown.console.clear();
        Ok(ending)
    }
}

/// What the end of a run needs.
struct RunEnd<'a> {
    id: &'a str,
    preopens: &'a [Preopen],
    journal: Option<&'a Journal>,
    origin: Instant,
}

/// The loop: drain, show, wait, until the task finishes or Ctrl-C.
async fn run(
    driver: &mut Driver<LocalStub>,
    shown: &mut Shown<'_>,
    dialer: &mut Option<Dialer>,
    signals: &mut Signals,
    end: &RunEnd<'_>,
) -> Result<Ending> {
    loop {
        driver.drain(shown)?;
        shown.release(driver.stub.durable().map(|d| d.point.0))?;
        if let Some(text) = shown.refused.take() {
            if let Some(d) = dialer.as_mut().filter(|d| d.on) {
                // The agent will not (or can no longer) hold this task:
                // stop asking and let the stub carry on here.
                shown.console.line(&format!(
                    "baton: warning: agent {} refused the task: {text}; it runs here",
                    d.agent
                ));
                d.task.abort();
                d.on = false;
                if driver.lost(None) {
                    shown.status.link_up = false;
                }
                continue;
            }
        }
        if let Some((state, outcome)) = shown.finish.take() {
            return finish(driver, shown, end, state, outcome).await;
        }
        match dialer {
            Some(d) => draw_status(
                shown.console,
                end.id,
                &driver.stub,
                &shown.status,
                &d.agent.to_string(),
                d.pinned_local,
            ),
            None => shown.console.status(&format!(
                "baton · {} · local · point {} · {:.1}s · Ctrl-C stops at the next point",
                end.id,
                shown.status.point,
                end.origin.elapsed().as_secs_f64()
            )),
        }
        let input = next_input(dialer, signals);
        match driver.wait(input).await {
            Wake::Progress | Wake::Program(_) => {}
            Wake::PersistFailed(e) => {
                return Err(anyhow!(e).context("a state could not be kept (a state from the agent that does not fit this task, or a disk error)"));
            }
            Wake::ExecutorGone => bail!("the executor stopped unexpectedly"),
            Wake::Input(Input::Interrupt) => return Ok(Ending::Interrupted(shown.status.point)),
            Wake::Input(Input::Quit) => {
                if let Some(d) = dialer.as_mut() {
                    move_task(d, driver, shown.console);
                }
            }
            Wake::Input(Input::Link(news)) => {
                if let Some(d) = dialer.as_mut() {
                    on_link(d, news, driver, shown)?;
                }
            }
        }
    }
}

/// Ctrl-\: bring the task back here, or send it out again.
fn move_task(d: &mut Dialer, driver: &mut Driver<LocalStub>, console: &Console) {
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

async fn next_input(dialer: &mut Option<Dialer>, signals: &mut Signals) -> Input {
    let link = async {
        match dialer.as_mut().filter(|d| d.on) {
            Some(d) => d.news.recv().await,
            None => std::future::pending().await,
        }
    };
    let quit = async {
        match signals.quit.as_mut() {
            Some(s) => s.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        news = link => Input::Link(news),
        Some(()) = signals.interrupt.recv() => Input::Interrupt,
        _ = quit => Input::Quit,
    }
}

/// What the dialer reports.
fn on_link(
    d: &mut Dialer,
    news: Option<LinkNews>,
    driver: &mut Driver<LocalStub>,
    hooks: &mut Shown<'_>,
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
            let drained = driver.stub.peer_draining();
            if driver.lost(Some(n)) {
                hooks.status.link_up = false;
                tracing::info!(error = %error, "link lost");
                hooks.emit(Event::Link {
                    state: "down".into(),
                    agent: agent.clone(),
                    reason: Some(error.to_string()),
                })?;
                let a = driver.stub.agreement().assignment;
                if drained && a.executor == Side::Local && a.responsible == Side::Local {
                    // The agent handed the task back and left: stop
                    // calling it; the task finishes here.
                    hooks.console.line(&format!(
                        "baton: agent {agent} shut down and handed the task back; it finishes here"
                    ));
                    d.task.abort();
                    d.on = false;
                }
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

/// The end: files written back from the final state, the outcome reported
/// and journaled.
async fn finish(
    driver: &Driver<LocalStub>,
    hooks: &mut Shown<'_>,
    end: &RunEnd<'_>,
    state: Option<StateRef>,
    outcome: Outcome,
) -> Result<Ending> {
    let (preopens, journal) = (end.preopens, end.journal);
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
