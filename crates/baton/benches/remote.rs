//! The remote benchmarks of BENCHMARKS.md:
//! `cargo bench -p baton --bench remote [-- --runs N]`.
//!
//! Owns the benchmark scenarios only; each run goes through the demo's
//! runner (`baton::lab::run_part`): the real client code against an
//! in-process agent behind the fault-injecting relay, on loopback. It
//! measures, side by side in one process:
//!
//! 1. migration downtime vs state size (1, 64, 256 MiB) with and without
//!    pre-copy (the `migrated` event's `downtime_ms`);
//! 2. time from a link cut to the responsible local side executing again,
//!    for several `--disconnect-after` values;
//! 3. total run time: local vs remote in sync mode vs remote in async mode.
//!
//! Every run is also checked byte for byte against a local run.

use std::time::Duration;

use std::path::Path;

use anyhow::{bail, Context, Result};
use baton::agent::datadir::{create_task_dir, task_dir, TaskDirMeta};
use baton::drive::exec::wire_digest;
use baton::lab::{run_part, Lab, Part, RunResult};
use baton::spec::AgentSettings;
use baton::store::log::StateBytes;
use baton_net::{Identity, Role};
use baton_proto::message::WireTiming;
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_proto::{Agreement, Assignment, Epoch, Mode, Point, RemoteRecord, StateRef};
use baton_task::Engine;

const PI: &[u8] = include_bytes!("../../../examples/pi.wasm");
const NBODY: &[u8] = include_bytes!("../../../examples/nbody.wasm");
const BIGSTATE: &[u8] = include_bytes!("../../../examples/bigstate.wasm");

/// The benchmark's options: `--runs N` (runs per configuration, the median
/// is reported; default 3). Cargo's own `--bench` flag is ignored.
struct BenchArgs {
    runs: usize,
}

impl BenchArgs {
    fn parse() -> Result<BenchArgs> {
        let mut runs = 3;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--runs" => {
                    let n = args.next().context("--runs needs a number")?;
                    runs = n.parse().with_context(|| format!("--runs `{n}`"))?;
                }
                "--bench" => {}
                other => bail!("unknown option `{other}` (use --runs N)"),
            }
        }
        Ok(BenchArgs { runs })
    }
}

fn main() -> Result<()> {
    BenchArgs::parse()?.execute()
}

/// Writes `count` tasks of `module` (at point 0, this side and the client
/// having agreed that the client executes and is responsible) into
/// `data_dir` as an agent leaves them, for measuring restarts. Returns the
/// bytes written.
fn write_parked_tasks(
    engine: &Engine,
    data_dir: &Path,
    module: &[u8],
    name: &str,
    args: &[&str],
    count: usize,
) -> Result<u64> {
    let program = engine.load(module)?;
    let mut cfg = baton_task::TaskConfig::new(name);
    cfg.host.args = std::iter::once(name)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let mut task =
        baton_task::Task::create(engine, &program, cfg, Box::new(baton_task::wasi::Discard))?;
    let full = task.checkpoint()?;
    let at = StateRef::new(Point(full.point), wire_digest(full.digest));
    let digest = wire_digest(program.digest());
    std::fs::create_dir_all(data_dir.join("modules"))?;
    std::fs::write(
        data_dir.join("modules").join(format!("{digest}.wasm")),
        module,
    )?;
    let client = Identity::generate(Role::Client)?.fingerprint();
    let record = RemoteRecord {
        agreement: Agreement {
            epoch: Epoch(2),
            assignment: Assignment::local(Mode::Sync),
            anchor: Some(at),
        },
        durable: Some(at),
        output_acked: Point(0),
        finished: None,
        handed_back: false,
        has_module: true,
        timing: WireTiming {
            heartbeat_nanos: 500_000_000,
            disconnect_after_nanos: 2_000_000_000,
        },
    }
    .encode();
    let mut total = 0;
    for i in 0..count {
        let id = format!("parked-{i}");
        let dir = task_dir(data_dir, &client, &id);
        let meta = TaskDirMeta {
            client: client.to_string(),
            task: id,
            module: baton_proto::ModuleRef {
                digest,
                size: module.len() as u64,
            },
            meta: AgentSettings {
                max_memory: baton_task::Limits::default().max_memory,
                max_step_time_ms: None,
                virtual_clock_start_ns: Some(0),
                point_every_ms: None,
                sync_every: baton_proto::SyncEvery::default(),
            },
        };
        let mut log = create_task_dir(&dir, &meta)?;
        log.append(&record, Some(StateBytes::Full(&full.bytes)), &[])?;
        total += std::fs::metadata(dir.join("log"))?.len();
    }
    Ok(total)
}

/// One task's run times: name, local, remote sync, remote async (seconds).
type Overhead = (String, f64, f64, f64);

/// Total run time of two tasks, local vs remote sync vs remote async, with
/// the client's journal on or off (the lab's agent decides its own store).
async fn overhead(lab: &Lab, engine: &Engine, runs: usize, journal: bool) -> Result<Vec<Overhead>> {
    let mut out = Vec::new();
    for (module, name, args) in [
        (NBODY, "nbody.wasm", ["100", "100000"]),
        (BIGSTATE, "bigstate.wasm", ["48", "100"]),
    ] {
        let mut local = Vec::new();
        let mut cols = Vec::new();
        for mode in [ModeChoice::Sync, ModeChoice::Async] {
            let mut v = Vec::new();
            for _ in 0..runs {
                let mut p = part(module, name, &args);
                p.mode = mode;
                p.journal = journal;
                p.responsible = if mode == ModeChoice::Sync {
                    Responsible::Local
                } else {
                    Responsible::Remote
                };
                let r = run_part(0, &p, engine, lab).await?;
                if !r.same {
                    bail!("{name}: output differs from a local run");
                }
                v.push(r.total);
                local.push(r.reference_ms / 1000.0);
            }
            cols.push(median(v));
        }
        out.push((
            format!("{name} {}", args.join(" ")),
            median(local),
            cols[0],
            cols[1],
        ));
    }
    Ok(out)
}

fn print_overhead(rows: &[Overhead]) {
    println!(
        "   {:<28}  {:>9}  {:>12}  {:>12}",
        "task", "local", "remote sync", "remote async"
    );
    for (name, l, sync, asyn) in rows {
        println!(
            "   {:<28}  {:>7.2} s  {:>7.2} s ×{:.2}  {:>7.2} s ×{:.2}",
            name,
            l,
            sync,
            sync / l,
            asyn,
            asyn / l
        );
    }
}

/// How long an agent takes to start on a data dir holding many tasks:
/// 100 small ones (pi) and 10 of 48 MiB (bigstate), written as an agent
/// would have left them, this side responsible (so that nothing starts
/// executing and the figure is the recovery alone).
fn restart_time() -> Result<()> {
    use baton::agent::{self, AgentLimits, AgentOptions};
    use baton_net::ClientPolicy;

    println!("\n5. agent restart with many tasks in its data dir (median of 3 starts)");
    let engine = Engine::with_step_limits(false)?;
    for (module, name, args, count) in [
        (PI, "pi.wasm", vec!["50", "1000"], 100usize),
        (BIGSTATE, "bigstate.wasm", vec!["48", "10", "256"], 10),
    ] {
        let dir = tempfile::Builder::new()
            .prefix("baton-bench-restart-")
            .tempdir()?;
        let data = dir.path().join("agent");
        let bytes = write_parked_tasks(&engine, &data, module, name, &args, count)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let running = rt.block_on(async {
                agent::start(AgentOptions {
                    listen: "127.0.0.1:0".parse()?,
                    data_dir: data.clone(),
                    policy: ClientPolicy::AllowAny,
                    workers: 1,
                    limits: AgentLimits::default(),
                    idle_timeout: Duration::from_secs(60),
                    retention: Duration::from_secs(3600),
                    ephemeral: false,
                })
            })?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let held = running.task_count();
            if held != count {
                bail!("{held} of {count} tasks came back");
            }
            let _ = rt.block_on(running.shutdown(Duration::ZERO));
        }
        println!(
            "   {count:>4} × {name:<14} ({} on disk)  {:>8.1} ms",
            baton::units::human_bytes(bytes),
            median(times)
        );
    }
    Ok(())
}

fn part(module: &'static [u8], name: &'static str, args: &[&str]) -> Part {
    Part {
        title: "",
        module,
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        migrate: Migrate::Start,
        responsible: Responsible::Remote,
        mode: ModeChoice::Auto,
        cut_at_remote_point: None,
        heal_after: None,
        disconnect_after: Duration::from_secs(1),
        precopy: true,
        sync_every: baton_proto::SyncEvery::default(),
        verbose: false,
        // Straight to the agent: the relay forwards in user space and would
        // measure itself.
        via_relay: false,
        journal: true,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

impl BenchArgs {
    /// Runs the benchmarks and prints a table per benchmark; fails if a run
    /// fails or gives a wrong result.
    fn execute(self) -> Result<()> {
        let runs = self.runs.max(1);
        let on = Lab::run(false, |lab| Box::pin(self.run(lab)))?;
        Lab::run(true, |lab| {
            Box::pin(async move {
                let engine = Engine::with_step_limits(false)?;
                let off = overhead(lab, &engine, runs, false).await?;
                println!("\n4. the cost of durability: the runs of 3 with the agent's store and the client's journal off, median of {runs}");
                println!(
                    "   {:<28}  {:>22}  {:>22}",
                    "task", "sync: on / off", "async: on / off"
                );
                for (a, b) in on.iter().zip(&off) {
                    println!(
                        "   {:<28}  {:>7.2} / {:>5.2} s ×{:.2}  {:>7.2} / {:>5.2} s ×{:.2}",
                        a.0,
                        a.2,
                        b.2,
                        a.2 / b.2,
                        a.3,
                        b.3,
                        a.3 / b.3
                    );
                }
                Ok(())
            })
        })?;
        restart_time()
    }

    async fn run(self, lab: &Lab) -> Result<Vec<Overhead>> {
        let engine = Engine::with_step_limits(false)?;
        let runs = self.runs.max(1);
        let mut n = 0;
        let mut go = |p: Part| {
            n += 1;
            let engine = &engine;
            async move {
                let r: RunResult = run_part(n, &p, engine, lab).await?;
                if !r.same {
                    bail!(
                        "{} {}: output differs from a local run",
                        p.name,
                        p.args.join(" ")
                    );
                }
                Ok::<_, anyhow::Error>(r)
            }
        };

        println!("1. migration downtime (bigstate, 64 KiB changed per step; the switch comes at point N, after about a second of running here), median of {runs}");
        println!(
            "   {:>9}  {:>5}  {:>14}  {:>14}",
            "state", "N", "pre-copy", "no pre-copy"
        );
        for (mib, at) in [("1", 400u64), ("64", 150), ("256", 120)] {
            let mut cols = Vec::new();
            for precopy in [true, false] {
                let mut v = Vec::new();
                for _ in 0..runs {
                    let steps = (at + 10).to_string();
                    let mut p = part(BIGSTATE, "bigstate.wasm", &[mib, &steps, "64"]);
                    p.migrate = Migrate::AtPoint(Point(at));
                    p.precopy = precopy;
                    // A remote responsible side would be sent the state
                    // all along anyway; this measures pre-copy itself.
                    p.responsible = Responsible::Local;
                    let r = go(p).await?;
                    v.push(r.timeline.downtime_ms.unwrap_or(f64::NAN));
                }
                cols.push(median(v));
            }
            println!(
                "   {:>5} MiB  {:>5}  {:>11.1} ms  {:>11.1} ms",
                mib, at, cols[0], cols[1]
            );
        }

        println!("\n2. link cut → the responsible local side executing again (sync mode), median of {runs}");
        println!(
            "   {:>16}  {:>12}  {:>14}",
            "disconnect-after", "failover", "beyond budget"
        );
        for ms in [250u64, 500, 1000] {
            let mut v = Vec::new();
            for _ in 0..runs {
                let mut p = part(PI, "pi.wasm", &["400", "400000"]);
                p.responsible = Responsible::Local;
                p.mode = ModeChoice::Sync;
                p.cut_at_remote_point = Some(20);
                p.via_relay = true;
                p.disconnect_after = Duration::from_millis(ms);
                let r = go(p).await?;
                let tl = &r.timeline;
                match (tl.cut_at, tl.resumed_at) {
                    (Some(c), Some(s)) => v.push((s - c) * 1000.0),
                    _ => bail!("no failover seen with disconnect-after {ms} ms"),
                }
            }
            let m = median(v);
            println!(
                "   {:>13} ms  {:>9.0} ms  {:>+11.0} ms",
                ms,
                m,
                m - ms as f64
            );
        }

        println!("\n3. total run time, median of {runs} (local = the same steps in-process, no protocol; both stores on)");
        let on = overhead(lab, &engine, runs, true).await?;
        print_overhead(&on);
        Ok(on)
    }
}
