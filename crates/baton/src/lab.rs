//! The demo's laboratory: an agent in this process on loopback behind a
//! fault-injecting UDP relay, and a runner that drives one task through the
//! real client code against it, cutting and healing the link as a script
//! says, and checks the output against an uninterrupted local run.
//!
//! Owns [`Lab`], [`Part`] and [`run_part`], shared by `baton demo` (which
//! prints) and the remote benchmarks (`benches/remote.rs`, which measure).
//! It must not print anything but a part's timeline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use baton_net::relay::Relay;
use baton_net::{ClientPolicy, Identity, NetConfig, Role};
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_task::wasi::{ClockMode, OutStream, OutputSink};
use baton_task::{Engine, Limits, Program, StepOutcome, Task, TaskConfig};
use tokio::sync::mpsc;

use crate::agent::{self, AgentLimits, AgentOptions};
use crate::client::console::Console;
use crate::client::events::{Event, EventLog};
use crate::client::session::{Ending, Remote, Session};
use crate::client::{self, Loaded, Prepared};
use crate::drive::exec::OutputFrames;
use crate::spec::{Clock, ModuleInfo, Policy, Target, TaskLimits, TaskSpec, SPEC_VERSION};
/// Collects a task's output in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl OutputSink for Capture {
    fn write(&mut self, _stream: OutStream, bytes: &[u8]) {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(bytes);
        }
    }
}

fn config(name: &str, args: &[String], seed: u64) -> TaskConfig {
    let mut c = TaskConfig::new(name);
    c.host.args = std::iter::once(name.to_string())
        .chain(args.iter().cloned())
        .collect();
    c.host.seed = seed;
    c.host.clock = ClockMode::Virtual {
        start_realtime_ns: 0,
    };
    c
}

/// One part of the demo (or one benchmark run).
pub struct Part {
    /// The part's heading.
    pub title: &'static str,
    /// The module's bytes.
    pub module: &'static [u8],
    /// The module's file name (the task's `argv[0]`).
    pub name: &'static str,
    /// The task's arguments.
    pub args: Vec<String>,
    /// `--migrate`.
    pub migrate: Migrate,
    /// `--responsible`.
    pub responsible: Responsible,
    /// `--mode`.
    pub mode: ModeChoice,
    /// Cut the link once the agent has reached this point.
    pub cut_at_remote_point: Option<u64>,
    /// Heal this long after the cut (never if `None`).
    pub heal_after: Option<Duration>,
    /// The protocol's disconnect-after.
    pub disconnect_after: Duration,
    /// Send state ahead while the task runs here.
    pub precopy: bool,
    /// `--sync-every`.
    pub sync_every: baton_proto::SyncEvery,
    /// Print the timeline as it happens.
    pub verbose: bool,
    /// Connect through the relay (needed to cut the link; it forwards
    /// datagrams in user space, which slows bulk transfers down).
    pub via_relay: bool,
    /// Keep the client's journal log (in a scratch directory), as `baton
    /// run --remote` does.
    pub journal: bool,
}

/// What happened during a part, for its summary (times in seconds since
/// the start of the run).
#[derive(Default)]
pub struct Timeline {
    /// When the link was cut (seconds since the start).
    pub cut_at: Option<f64>,
    /// When it was healed.
    pub healed_at: Option<f64>,
    /// When the client saw the link down.
    pub detected_at: Option<f64>,
    /// When a side resumed executing after the cut.
    pub resumed_at: Option<f64>,
    /// The migration's downtime, from the `migrated` event.
    pub downtime_ms: Option<f64>,
    /// Points reached here.
    pub local_points: u64,
    /// Points reached on the agent.
    pub remote_points: u64,
    /// The newest point seen, for attributing steps to sides.
    pub last_point: u64,
    /// The side the task finished on.
    pub finished_on: Option<String>,
}

impl Part {
    /// The spec of this part's task, as `baton run --remote` would make it
    /// (seed 7, virtual clock from 0, default limits, the part's policy).
    ///
    /// # Errors
    ///
    /// Never in practice: the policy words are the part's own.
    pub fn spec(
        &self,
        id: &str,
        digest: String,
        agent: std::net::SocketAddr,
        lab: &Lab,
    ) -> Result<TaskSpec> {
        let limits = Limits::default();
        Ok(TaskSpec {
            version: SPEC_VERSION,
            id: id.to_string(),
            module: ModuleInfo {
                path: self.name.to_string(),
                digest,
                size: self.module.len() as u64,
            },
            args: std::iter::once(self.name.to_string())
                .chain(self.args.iter().cloned())
                .collect(),
            env: Vec::new(),
            dirs: Vec::new(),
            seed: 7,
            clock: Clock::Virtual { start_ns: 0 },
            limits: TaskLimits {
                max_memory: limits.max_memory,
                max_step_time_ms: None,
                point_every_ms: None,
            },
            policy: Policy {
                migrate: self.migrate.clone(),
                responsible: self.responsible.clone(),
                mode: self.mode,
                disconnect_after_ms: self.disconnect_after.as_millis() as u64,
                takeover_after_ms: 30_000,
                precopy: self.precopy,
                sync_every: self.sync_every,
            },
            remote: Some(Target {
                agent: agent.to_string(),
                fingerprint: lab.agent.fingerprint.to_string(),
                identity: None,
            }),
            nans: baton_task::Nans::Canonical,
        })
    }
}

impl Timeline {
    /// Attributes the steps up to point `n` to the side that reported it
    /// (point events are sampled, so this is as fine as the samples).
    fn count(&mut self, n: u64, at: &str) {
        let steps = n.saturating_sub(self.last_point);
        self.last_point = self.last_point.max(n);
        if at == "local" {
            self.local_points += steps;
        } else {
            self.remote_points += steps;
        }
    }
}

/// The demo's `--disconnect-after`.
pub const DISCONNECT_AFTER: Duration = Duration::from_millis(1000);

/// An agent and the relay in front of it, on their own runtime (their own
/// threads), so that they are scheduled apart from the client as on
/// another machine.
pub struct Lab {
    rt: tokio::runtime::Runtime,
    /// The agent.
    pub agent: agent::RunningAgent,
    /// The link to it.
    pub relay: Relay,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Starts an agent (admitting any client, one worker) and its relay.
    ///
    /// # Errors
    ///
    /// No runtime, scratch directory or socket.
    pub fn start(ephemeral: bool) -> Result<Lab> {
        let dir = tempfile::Builder::new()
            .prefix("baton-demo-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_stack_size(baton_task::TASK_THREAD_STACK)
            .worker_threads(2)
            .thread_name("agent")
            .enable_all()
            .build()
            .context("cannot start the agent's runtime")?;
        let data_dir = dir.path().join("agent");
        let (agent, relay) = rt.block_on(async {
            let agent = agent::start(AgentOptions {
                listen: "127.0.0.1:0".parse()?,
                data_dir,
                policy: ClientPolicy::AllowAny,
                workers: 1,
                limits: AgentLimits::default(),
                idle_timeout: Duration::from_secs(60),
                retention: Duration::from_secs(3600),
                ephemeral,
            })?;
            let relay = Relay::start(agent.addr).context("cannot start the relay")?;
            Ok::<_, anyhow::Error>((agent, relay))
        })?;
        Ok(Lab {
            rt,
            agent,
            relay,
            _dir: dir,
        })
    }

    /// Starts a lab, runs `body` on a client runtime of its own against
    /// it, and stops the lab.
    ///
    /// # Errors
    ///
    /// The lab or the runtime cannot start, or `body` fails.
    pub fn run<T>(
        ephemeral: bool,
        body: impl for<'a> FnOnce(
            &'a Lab,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + 'a>,
        >,
    ) -> Result<T> {
        let lab = Lab::start(ephemeral)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_stack_size(baton_task::TASK_THREAD_STACK)
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let result = rt.block_on(body(&lab));
        lab.stop();
        result
    }

    /// Stops the agent (call outside any runtime).
    pub fn stop(self) {
        let Lab {
            rt, agent, relay, ..
        } = self;
        let left = rt.block_on(agent.shutdown(Duration::from_secs(2)));
        relay.stop();
        if left > 0 {
            tracing::debug!(left, "tasks left on the demo agent");
        }
    }
}

/// How one run went.
pub struct RunResult {
    /// Its timeline.
    pub timeline: Timeline,
    /// Whole run, in seconds.
    pub total: f64,
    /// The uninterrupted local run, in milliseconds.
    pub reference_ms: f64,
    /// Output and status equal the uninterrupted run's.
    pub same: bool,
    /// The output, for showing.
    pub output: Vec<u8>,
    /// The exit status.
    pub status: i32,
}
/// Runs one part through the real client against `agent` behind `relay`,
/// cutting and healing the link as the part says.
///
/// # Errors
///
/// The task cannot be created or the run fails.
pub async fn run_part(n: usize, part: &Part, engine: &Engine, lab: &Lab) -> Result<RunResult> {
    let relay = &lab.relay;
    relay.heal();
    let program = engine
        .load(part.module)
        .with_context(|| format!("loading the built-in {} example", part.name))?;
    let (reference, ref_status, ref_ms) = uninterrupted(engine, &program, part)?;
    // The client side, exactly as `baton run --remote` sets it up.
    let id = format!("demo-{n}");
    let agent_addr = if part.via_relay {
        relay.client_side_addr()
    } else {
        lab.agent.addr
    };
    let spec = part.spec(&id, program.digest().to_string(), agent_addr, lab)?;
    let start = Instant::now();
    let mut events = EventLog::none(start);
    let (tx, mut rx) = mpsc::unbounded_channel();
    events.observe(tx);
    let scratch = tempfile::Builder::new()
        .prefix("baton-demo-client-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let loaded = Loaded {
        bytes: part.module.to_vec(),
        engine: engine.clone(),
        program: program.clone(),
    };
    let state_dir = part.journal.then_some(scratch.path());
    let console = Console::global().clone();
    let p = client::prepare(
        &spec,
        loaded,
        Vec::new(),
        state_dir,
        &events,
        console.sink(),
    )?;
    let (journal, durable) = p.journal.map(Prepared::split).unzip();
    let output = Arc::new(Mutex::new(Vec::new()));
    let run = Session {
        id: &id,
        remote: Some(Remote {
            addr: agent_addr,
            fingerprint: lab.agent.fingerprint,
            identity: Identity::generate(Role::Client)?,
            net: NetConfig::with_disconnect_after(part.disconnect_after),
        }),
        config: p.config,
        core: p.core,
        initial: p.initial,
        events: &mut events,
        console: &console,
        preopens: &[],
        module: p.module,
        capture: Some(output.clone()),
        init_output: p.init_output,
        resume: None,
        durable,
        journal: journal.as_ref(),
    };
    let (result, tl) = watch(run.drive_async(), &mut rx, part, relay, start).await;
    let status = match result? {
        Ending::Finished(s) => s,
        Ending::Interrupted(_) => bail!("interrupted"),
    };
    let total = start.elapsed().as_secs_f64();
    let mut got = Vec::new();
    let framed = output.lock().map(|v| v.clone()).unwrap_or_default();
    for (_, bytes) in OutputFrames::parse(&framed) {
        got.extend_from_slice(bytes);
    }
    Ok(RunResult {
        timeline: tl,
        total,
        reference_ms: ref_ms,
        same: got == reference && status == ref_status,
        output: got,
        status,
    })
}

/// Follows a run to its end: the timeline from its events, cutting and
/// healing the link as the part says.
async fn watch(
    drive: impl std::future::Future<Output = Result<Ending>>,
    rx: &mut mpsc::UnboundedReceiver<(u64, Event)>,
    part: &Part,
    relay: &Relay,
    start: Instant,
) -> (Result<Ending>, Timeline) {
    tokio::pin!(drive);
    let mut tl = Timeline::default();
    let mut heal_at: Option<tokio::time::Instant> = None;
    let result = loop {
        let heal = async {
            match heal_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut drive => break r,
            Some((t, ev)) = rx.recv() => on_event(part, relay, &mut tl, &mut heal_at, t, ev),
            _ = heal => {
                heal_at = None;
                relay.heal();
                tl.healed_at = Some(start.elapsed().as_secs_f64());
                if part.verbose {
                    line(tl.healed_at.unwrap_or_default(), "link healed");
                }
            }
        }
    };
    while let Ok((t, ev)) = rx.try_recv() {
        on_event(part, relay, &mut tl, &mut heal_at, t, ev);
    }
    (result, tl)
}

/// Prints a timeline line at `t` seconds.
pub fn line(t: f64, text: &str) {
    println!("   {t:6.2} s  {text}");
}

/// Prints a timeline line if the part is verbose.
fn say(part: &Part, t: f64, text: &str) {
    if part.verbose {
        line(t, text);
    }
}

/// Follows the run's events: prints the timeline and cuts the link.
fn on_event(
    part: &Part,
    relay: &Relay,
    tl: &mut Timeline,
    heal_at: &mut Option<tokio::time::Instant>,
    t_ms: u64,
    ev: Event,
) {
    let t = t_ms as f64 / 1000.0;
    match &ev {
        Event::Point { n, at, .. } => {
            tl.count(*n, at);
            if at == "remote" && part.cut_at_remote_point.is_some_and(|p| *n >= p) {
                cut(part, relay, tl, heal_at, t, *n);
            }
        }
        Event::Migrated { downtime_ms, .. } => tl.downtime_ms = Some(*downtime_ms),
        Event::Disconnected { .. } => tl.detected_at = Some(t),
        Event::Resumed { at, .. } if at == "local" => tl.resumed_at = Some(t),
        Event::Finished { points, at, .. } => {
            tl.count(*points, at);
            tl.finished_on = Some(at.clone());
        }
        _ => {}
    }
    if let Some(text) = describe(part, tl, &ev) {
        say(part, t, &text);
    }
}

/// Cuts the link (once), and schedules the heal if the part wants one.
fn cut(
    part: &Part,
    relay: &Relay,
    tl: &mut Timeline,
    heal_at: &mut Option<tokio::time::Instant>,
    t: f64,
    n: u64,
) {
    if tl.cut_at.is_some() {
        return;
    }
    relay.cut();
    tl.cut_at = Some(t);
    let what = if part.heal_after.is_some() {
        "for a while"
    } else {
        "for good"
    };
    say(
        part,
        t,
        &format!("✂ link cut {what}, the agent at point {n}"),
    );
    if let Some(d) = part.heal_after {
        *heal_at = Some(tokio::time::Instant::now() + d);
    }
}

/// The timeline's line for an event, if it has one.
fn describe(part: &Part, tl: &Timeline, ev: &Event) -> Option<String> {
    Some(match ev {
        Event::Migrated {
            from,
            to,
            point,
            downtime_ms,
        } => format!("migrated {from} → {to} at point {point}, downtime {downtime_ms:.1} ms"),
        Event::Responsibility {
            holder,
            executor,
            mode,
            epoch,
            takeover,
            ..
        } => format!(
            "agreed (epoch {epoch}): {executor} executes, {holder} responsible, {mode} state sync{}",
            if *takeover { " — taken over alone" } else { "" }
        ),
        Event::Disconnected { point, lag, .. } => format!(
            "disconnected (nothing heard for {} ms), last known point {point}, lag {lag}",
            part.disconnect_after.as_millis()
        ),
        Event::Resumed {
            at,
            point,
            lost_steps,
        } => format!("{at} side continues from point {point}, {lost_steps} step(s) to redo"),
        Event::Reconnected {
            point_local,
            point_remote,
            winner,
        } if tl.cut_at.is_some() => format!(
            "reconnected: here at point {}, agent at point {}; the {winner} state wins",
            point_local.unwrap_or(0),
            point_remote.map_or("-".to_string(), |p| p.to_string())
        ),
        Event::Finished {
            points,
            at,
            exit_status,
            ..
        } => format!("finished on the {at} side at point {points}, exit status {exit_status}"),
        Event::Link { state, .. } if state == "up" && tl.cut_at.is_none() => {
            "connected to the agent".to_string()
        }
        _ => return None,
    })
}

/// A fingerprint shortened for display.
pub fn short_fp(fp: &str) -> String {
    format!("{}…", &fp[..fp.len().min(19)])
}

/// The reference: the same task run here, start to end.
fn uninterrupted(engine: &Engine, program: &Program, part: &Part) -> Result<(Vec<u8>, i32, f64)> {
    let capture = Capture::default();
    let t = Instant::now();
    let mut task = Task::create(
        engine,
        program,
        config(part.name, &part.args, 7),
        Box::new(capture.clone()),
    )?;
    let status = loop {
        if let StepOutcome::Finished(s) = task.step()? {
            break s;
        }
    };
    let out = capture.0.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((out, status, t.elapsed().as_secs_f64() * 1000.0))
}
