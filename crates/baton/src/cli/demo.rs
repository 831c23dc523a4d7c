//! `baton demo`: baton's whole promise on one machine, in under a minute.
//!
//! Starts an agent in-process on loopback with a fault-injecting relay in
//! front of it (the "network"), and runs built-in example tasks through the
//! real client code: a task moves to the agent, keeps running there while
//! the link is cut and comes back; a task that the local side is
//! responsible for fails over when the link dies; a 48 MiB task migrates
//! with pre-copy. Each part ends with a timeline of where the task ran and
//! what each phase cost, and a check that the output is byte-identical to
//! an uninterrupted local run.
//!
//! It owns the demo's script only; the client is [`crate::remote_run`] and
//! the agent [`crate::agent`], exactly as `baton run --remote` and `baton
//! agent` use them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use baton_net::relay::Relay;
use baton_net::{ClientPolicy, Identity, NetConfig, Role};
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_proto::{Blob, LocalConfig, ModuleRef, TaskId, Timing};
use baton_task::wasi::{ClockMode, OutStream, OutputSink};
use baton_task::{Engine, Limits, Program, StepOutcome, Task, TaskConfig};
use clap::Args;
use tokio::sync::mpsc;

use crate::agent::{self, AgentLimits, AgentOptions};
use crate::console::Console;
use crate::events::{Event, EventLog};
use crate::exec::{wire_digest, ExecCore, OutputFrames};
use crate::meta::TaskMeta;
use crate::remote_run::RemoteRun;
use crate::runner::Ending;
use crate::units::human_bytes;

const PI: &[u8] = include_bytes!("../../../../examples/pi.wasm");
const BIGSTATE: &[u8] = include_bytes!("../../../../examples/bigstate.wasm");

/// Options of `baton demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Make the tasks this many times shorter (for a quick look or tests).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub faster: u32,
}

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
pub(crate) struct Part {
    pub(crate) title: &'static str,
    pub(crate) module: &'static [u8],
    pub(crate) name: &'static str,
    pub(crate) args: Vec<String>,
    pub(crate) migrate: Migrate,
    pub(crate) responsible: Responsible,
    pub(crate) mode: ModeChoice,
    /// Cut the link once the agent has reached this point.
    pub(crate) cut_at_remote_point: Option<u64>,
    /// Heal this long after the cut (never if `None`).
    pub(crate) heal_after: Option<Duration>,
    /// The protocol's disconnect-after.
    pub(crate) disconnect_after: Duration,
    /// Send state ahead while the task runs here.
    pub(crate) precopy: bool,
    /// Print the timeline as it happens.
    pub(crate) verbose: bool,
    /// Connect through the relay (needed to cut the link; it forwards
    /// datagrams in user space, which slows bulk transfers down).
    pub(crate) via_relay: bool,
    /// Keep the client's journal log (in a scratch directory), as `baton
    /// run --remote` does.
    pub(crate) journal: bool,
}

/// What happened during a part, for its summary (times in seconds since
/// the start of the run).
#[derive(Default)]
pub(crate) struct Timeline {
    pub(crate) cut_at: Option<f64>,
    pub(crate) healed_at: Option<f64>,
    pub(crate) detected_at: Option<f64>,
    pub(crate) resumed_at: Option<f64>,
    pub(crate) downtime_ms: Option<f64>,
    pub(crate) local_points: u64,
    pub(crate) remote_points: u64,
    /// The newest point seen, for attributing steps to sides.
    last_point: u64,
    finished_on: Option<String>,
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

const DISCONNECT_AFTER: Duration = Duration::from_millis(1000);

/// An agent and the relay in front of it, on their own runtime (their own
/// threads), so that they are scheduled apart from the client as on
/// another machine.
pub(crate) struct Lab {
    rt: tokio::runtime::Runtime,
    /// The agent.
    pub(crate) agent: agent::RunningAgent,
    /// The link to it.
    pub(crate) relay: Relay,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Starts an agent (admitting any client, one worker) and its relay.
    ///
    /// # Errors
    ///
    /// No runtime, scratch directory or socket.
    pub(crate) fn start(ephemeral: bool) -> Result<Lab> {
        let dir = tempfile::Builder::new()
            .prefix("baton-demo-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
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
    pub(crate) fn run<T>(
        ephemeral: bool,
        body: impl for<'a> FnOnce(
            &'a Lab,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + 'a>,
        >,
    ) -> Result<T> {
        let lab = Lab::start(ephemeral)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let result = rt.block_on(body(&lab));
        lab.stop();
        result
    }

    /// Stops the agent (call outside any runtime).
    pub(crate) fn stop(self) {
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
pub(crate) struct RunResult {
    /// Its timeline.
    pub(crate) timeline: Timeline,
    /// Whole run, in seconds.
    pub(crate) total: f64,
    /// The uninterrupted local run, in milliseconds.
    pub(crate) reference_ms: f64,
    /// Output and status equal the uninterrupted run's.
    pub(crate) same: bool,
    /// The output, for showing.
    pub(crate) output: Vec<u8>,
    /// The exit status.
    pub(crate) status: i32,
}

impl DemoArgs {
    /// Runs the demo.
    ///
    /// # Errors
    ///
    /// Only if baton itself is broken: the demo's checks failing is an error.
    pub fn execute(self) -> Result<()> {
        println!("baton demo: a task moves to another machine, survives a cut link, and comes back with the right answer\n");
        Lab::run(false, |lab| Box::pin(self.run(lab)))
    }

    async fn run(self, lab: &Lab) -> Result<()> {
        let k = u64::from(self.faster.max(1));
        println!(
            "  agent  {}  in this process, standing in for a remote machine ({})",
            lab.agent.addr,
            short_fp(&lab.agent.fingerprint.to_string())
        );
        println!(
            "  link   {} → {}  a UDP relay the demo cuts and heals\n",
            lab.relay.client_side_addr(),
            lab.agent.addr
        );
        let engine = Engine::with_step_limits(false)?;
        let parts = [
            Part {
                title: "the agent is responsible: the link is cut for 1.5 s, the task keeps running there",
                module: PI,
                name: "pi.wasm",
                args: vec!["300".into(), (2_000_000 / k).to_string()],
                migrate: Migrate::Start,
                responsible: Responsible::Remote,
                mode: ModeChoice::Auto,
                cut_at_remote_point: Some(60),
                heal_after: Some(Duration::from_millis(1500)),
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                verbose: true,
                via_relay: true,
                journal: true,
            },
            Part {
                title: "this machine is responsible, sync mode: the link dies for good, the task comes back here",
                module: PI,
                name: "pi.wasm",
                args: vec!["300".into(), (2_000_000 / k).to_string()],
                migrate: Migrate::Start,
                responsible: Responsible::Local,
                mode: ModeChoice::Sync,
                cut_at_remote_point: Some(100),
                heal_after: None,
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                verbose: true,
                via_relay: true,
                journal: true,
            },
            Part {
                title: "48 MiB of state migrates at point 20 with pre-copy (straight to the agent, no relay): only the last delta goes at the switch",
                module: BIGSTATE,
                name: "bigstate.wasm",
                args: vec!["48".into(), (400 / k).max(40).to_string(), "256".into()],
                migrate: Migrate::AtPoint(baton_proto::Point(20)),
                responsible: Responsible::Remote,
                mode: ModeChoice::Auto,
                cut_at_remote_point: None,
                heal_after: None,
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                verbose: true,
                via_relay: false,
                journal: true,
            },
        ];
        let mut all_ok = true;
        for (i, part) in parts.iter().enumerate() {
            let ok = self.part(i + 1, part, &engine, lab).await?;
            all_ok &= ok;
        }
        if !all_ok {
            bail!("a part of the demo did not give the uninterrupted run's result: this is a bug in baton");
        }
        println!("next: two terminals.");
        println!("  1$ baton agent --listen 127.0.0.1:7070 --data-dir /tmp/baton-agent --allow-any-client");
        println!("  2$ baton run --remote 127.0.0.1:7070 --agent-fingerprint <printed by 1> examples/pi.wasm -- 300 2000000");
        println!("     (Ctrl-\\ brings the task back; stop the agent to see the client take over)");
        Ok(())
    }

    async fn part(&self, n: usize, part: &Part, engine: &Engine, lab: &Lab) -> Result<bool> {
        println!(
            "{n}. {} -- {}: {}",
            part.name,
            part.args.join(" "),
            part.title
        );
        let r = run_part(n, part, engine, lab).await?;
        self.summary(part, &r.timeline, r.total, r.reference_ms);
        println!(
            "   {} output identical to an uninterrupted local run ({}), exit status {}",
            if r.same { "✓" } else { "✗" },
            human_bytes(r.output.len() as u64),
            r.status
        );
        let text = String::from_utf8_lossy(&r.output);
        let lines: Vec<&str> = text.lines().collect();
        for l in lines.iter().rev().take(2).rev() {
            println!("     │ {l}");
        }
        println!();
        Ok(r.same)
    }

    fn summary(&self, part: &Part, tl: &Timeline, total: f64, ref_ms: f64) {
        println!(
            "   where it ran: {} step(s) here, {} on the agent; finished on the {}",
            tl.local_points,
            tl.remote_points,
            tl.finished_on.as_deref().unwrap_or("?")
        );
        let mut costs = Vec::new();
        if let Some(d) = tl.downtime_ms {
            costs.push(format!("migration downtime {d:.1} ms"));
        }
        if let (Some(c), Some(d)) = (tl.cut_at, tl.detected_at) {
            costs.push(format!(
                "cut noticed after {:.0} ms (disconnect-after {} ms)",
                (d - c) * 1000.0,
                part.disconnect_after.as_millis()
            ));
        }
        if let (Some(c), Some(r)) = (tl.cut_at, tl.resumed_at) {
            costs.push(format!(
                "running here again {:.0} ms after the cut",
                (r - c) * 1000.0
            ));
        }
        if part.heal_after.is_some() && tl.resumed_at.is_none() && tl.cut_at.is_some() {
            costs.push("this machine never ran a step while the agent was away".into());
        }
        costs.push(format!(
            "{total:.2} s in all vs {:.2} s for a local run",
            ref_ms / 1000.0
        ));
        println!("   costs: {}", costs.join("; "));
    }
}

/// Runs one part through the real client against `agent` behind `relay`,
/// cutting and healing the link as the part says.
///
/// # Errors
///
/// The task cannot be created or the run fails.
pub(crate) async fn run_part(
    n: usize,
    part: &Part,
    engine: &Engine,
    lab: &Lab,
) -> Result<RunResult> {
    let relay = &lab.relay;
    relay.heal();
    let program = engine
        .load(part.module)
        .with_context(|| format!("loading the built-in {} example", part.name))?;
    let (reference, ref_status, ref_ms) = uninterrupted(engine, &program, part)?;
    // The client side, exactly as `baton run --remote` sets it up.
    let init = Capture::default();
    let task = Task::create(
        engine,
        &program,
        config(part.name, &part.args, 7),
        Box::new(init.clone()),
    )?;
    let limits = Limits::default();
    let clock = ClockMode::Virtual {
        start_realtime_ns: 0,
    };
    let (core, initial, base) =
        ExecCore::with_task(engine.clone(), program.clone(), clock, limits, task)?;
    let mut cfg = LocalConfig::new(
        TaskId(format!("demo-{n}")),
        ModuleRef {
            digest: wire_digest(program.digest()),
            size: part.module.len() as u64,
        },
        Blob::from(part.module),
    );
    cfg.timing = Timing::new(part.disconnect_after, Duration::from_secs(30));
    cfg.precopy = part.precopy;
    cfg.migrate = Arc::new(part.migrate.clone());
    cfg.responsible = Arc::new(part.responsible.clone());
    cfg.mode = Arc::new(part.mode);
    cfg.hello_meta = Blob::from(TaskMeta::new(limits, clock).encode());
    let start = Instant::now();
    let mut events = EventLog::none(start);
    let (tx, mut rx) = mpsc::unbounded_channel();
    events.observe(tx);
    let scratch = tempfile::Builder::new()
        .prefix("baton-demo-client-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let durable = if part.journal {
        Some(crate::remote_run::start_log(
            scratch.path(),
            &cfg,
            initial,
            &base,
        )?)
    } else {
        None
    };
    let output = Arc::new(Mutex::new(Vec::new()));
    let console = Console::global().clone();
    let run = RemoteRun {
        id: &format!("demo-{n}"),
        agent: if part.via_relay {
            relay.client_side_addr()
        } else {
            lab.agent.addr
        },
        fingerprint: lab.agent.fingerprint,
        identity: Identity::generate(Role::Client)?,
        net: NetConfig::with_disconnect_after(part.disconnect_after),
        config: cfg,
        core,
        initial,
        events: &mut events,
        console: &console,
        preopens: &[],
        module: program.digest().to_string(),
        capture: Some(output.clone()),
        init_output: init
            .0
            .lock()
            .map(|v| vec![(OutStream::Stdout, v.clone())])
            .unwrap_or_default(),
        resume: None,
        durable,
        journal: None,
    };
    let drive = run.drive_async();
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

fn line(t: f64, text: &str) {
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
    match ev {
        Event::Point { n, at, .. } => {
            tl.count(n, &at);
            if at == "remote" {
                if let Some(p) = part.cut_at_remote_point {
                    if n >= p && tl.cut_at.is_none() {
                        relay.cut();
                        tl.cut_at = Some(t);
                        let what = if part.heal_after.is_some() {
                            "for a while"
                        } else {
                            "for good"
                        };
                        say(part, t, &format!("✂ link cut {what}, the agent at point {n}"));
                        if let Some(d) = part.heal_after {
                            *heal_at = Some(tokio::time::Instant::now() + d);
                        }
                    }
                }
            }
        }
        Event::Migrated {
            from,
            to,
            point,
            downtime_ms,
        } => {
            tl.downtime_ms = Some(downtime_ms);
            say(
                part,
                t,
                &format!("migrated {from} → {to} at point {point}, downtime {downtime_ms:.1} ms"),
            );
        }
        Event::Responsibility {
            holder,
            executor,
            mode,
            epoch,
            takeover,
            ..
        } => say(
            part,
            t,
            &format!(
                "agreed (epoch {epoch}): {executor} executes, {holder} responsible, {mode} state sync{}",
                if takeover { " — taken over alone" } else { "" }
            ),
        ),
        Event::Disconnected { point, lag, .. } => {
            tl.detected_at = Some(t);
            say(
                part,
                t,
                &format!("disconnected (nothing heard for {} ms), last known point {point}, lag {lag}", part.disconnect_after.as_millis()),
            );
        }
        Event::Resumed {
            at,
            point,
            lost_steps,
        } => {
            if at == "local" {
                tl.resumed_at = Some(t);
            }
            say(
                part,
                t,
                &format!("{at} side continues from point {point}, {lost_steps} step(s) to redo"),
            );
        }
        Event::Reconnected {
            point_local,
            point_remote,
            winner,
        } if tl.cut_at.is_some() => {
            say(
                part,
                t,
                &format!(
                    "reconnected: here at point {}, agent at point {}; the {winner} state wins",
                    point_local.unwrap_or(0),
                    point_remote.map_or("-".to_string(), |p| p.to_string())
                ),
            );
        }
        Event::Finished {
            points, at, exit_status, ..
        } => {
            tl.count(points, &at);
            tl.finished_on = Some(at.clone());
            say(part, t, &format!("finished on the {at} side at point {points}, exit status {exit_status}"));
        }
        Event::Link { state, .. } if state == "up" && tl.cut_at.is_none() => {
            say(part, t, "connected to the agent");
        }
        _ => {}
    }
}

fn short_fp(fp: &str) -> String {
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
