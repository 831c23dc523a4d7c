//! What a point costs when a step changes little of a large memory (issue
//! 11, "a point costs what the step changed"):
//! `cargo bench -p baton --bench churn [-- --runs N]`.
//!
//! Workload: `examples/churn.wasm` with its default arguments (64 MiB,
//! 2000 steps of about 0.5 ms, 64 scattered 4 KiB pages dirtied per step),
//! and the demo's 48 MiB case, `examples/bigstate.wasm` with its default
//! arguments (100 steps, 256 KiB changed per step). Each is run, side by
//! side in one process:
//!
//! - locally by the real `baton run` binary as a subprocess, plain (no
//!   journal) and journaled (`--state-dir` in a fresh temporary directory);
//!   their peak RSS is sampled from `/proc/<pid>/status` (`VmHWM`);
//! - through the real client onto an in-process agent on loopback
//!   (`baton::lab`, no relay), migrating at the start: churn in async mode
//!   with the agent responsible and in sync mode with this side
//!   responsible; bigstate as the demo's 48 MiB part does it (migration at
//!   point 20 with pre-copy, the agent responsible, mode auto). The client
//!   journals, as `baton run --remote` always does. The agent shares this
//!   process, so no RSS is given for these runs.
//!
//! Every lab run first runs the task uninterrupted in-process (the lab's
//! reference: engine and step loop only, no client, no journal); that time
//! is reported as its own row.
//!
//! Rounds are interleaved (round r runs every configuration once, in turn,
//! so that machine noise hits all alike); the median of N rounds (default
//! 3) is reported with the ratio to the plain local run of the same
//! workload. Every run's output and exit status are checked byte for byte
//! against the plain local run (made once before the rounds, which also
//! warms the compiled-code caches); any difference fails the benchmark.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use baton::lab::{run_part, Lab, Part};
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_proto::Point;
use baton_task::Engine;

const CHURN: &[u8] = include_bytes!("../../../examples/churn.wasm");
const BIGSTATE: &[u8] = include_bytes!("../../../examples/bigstate.wasm");

/// The `baton` binary of this build (copied to a scratch directory at the
/// start, so that a rebuild in the meantime cannot change it under the
/// rounds).
const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// The lab's seed; the subprocess runs are given the same one.
const SEED: &str = "7";

/// Longest any one run may take before the benchmark gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// The benchmark's options: `--runs N` (rounds; the median is reported;
/// default 3). Cargo's own `--bench` flag is ignored.
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
        if runs == 0 || runs > 1000 {
            bail!("--runs {runs}: give 1 to 1000");
        }
        Ok(BenchArgs { runs })
    }
}

fn main() -> Result<()> {
    let args = BenchArgs::parse()?;
    let scratch = tempfile::Builder::new()
        .prefix("baton-bench-churn-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let baton = scratch.path().join("baton");
    std::fs::copy(BATON, &baton).with_context(|| format!("cannot copy {BATON}"))?;
    let workloads = vec![
        Workload::new(CHURN, "churn.wasm", &[], scratch.path())?,
        Workload::new(BIGSTATE, "bigstate.wasm", &[], scratch.path())?,
    ];
    let runs = args.runs;
    let (workloads, rows) = Lab::run(false, move |lab| {
        Box::pin(async move {
            let rows = measure(lab, &baton, &workloads, runs).await?;
            Ok((workloads, rows))
        })
    })?;
    print_table(&workloads, &rows, runs);
    Ok(())
}

/// A module with its arguments, and the plain local run's output to check
/// every other run against.
struct Workload {
    bytes: &'static [u8],
    name: &'static str,
    args: Vec<String>,
    /// The module written to a scratch file for the subprocess runs (the
    /// very bytes the lab runs).
    path: PathBuf,
}

impl Workload {
    fn new(bytes: &'static [u8], name: &'static str, args: &[&str], dir: &Path) -> Result<Self> {
        let sub = dir.join(name.trim_end_matches(".wasm"));
        std::fs::create_dir_all(&sub)?;
        let path = sub.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(Workload {
            bytes,
            name,
            args: args.iter().map(|a| a.to_string()).collect(),
            path,
        })
    }

    fn title(&self) -> String {
        if self.args.is_empty() {
            format!("{} (default arguments)", self.name)
        } else {
            format!("{} -- {}", self.name, self.args.join(" "))
        }
    }
}

/// How a configuration runs its workload.
#[derive(Clone)]
enum How {
    /// `baton run` as a subprocess; with a fresh `--state-dir` if `journal`.
    Binary { journal: bool },
    /// Through the real client onto the lab's agent.
    Agent {
        migrate: Migrate,
        responsible: Responsible,
        mode: ModeChoice,
        precopy: bool,
    },
}

/// One configuration and what its runs gave.
struct Row {
    /// Index into the workloads.
    workload: usize,
    label: &'static str,
    how: Option<How>,
    /// Seconds, one per round.
    secs: Vec<f64>,
    /// Peak RSS in KiB, one per round, where measurable.
    rss_kib: Vec<u64>,
    /// Steps run here / on the agent, and where it finished (agent runs).
    placement: Option<(u64, u64, String)>,
}

impl Row {
    fn new(workload: usize, label: &'static str, how: Option<How>) -> Row {
        Row {
            workload,
            label,
            how,
            secs: Vec::new(),
            rss_kib: Vec::new(),
            placement: None,
        }
    }
}

/// What a subprocess run gave.
struct BinRun {
    secs: f64,
    rss_kib: Option<u64>,
    stdout: Vec<u8>,
    status: i32,
}

/// The configurations, in the order of the table. Rows without a `how`
/// are filled from the lab runs' in-process references.
fn configurations() -> Vec<Row> {
    let agent = |responsible, mode| How::Agent {
        migrate: Migrate::Start,
        responsible,
        mode,
        precopy: true,
    };
    vec![
        Row::new(0, "local, plain", Some(How::Binary { journal: false })),
        Row::new(0, "local, journaled", Some(How::Binary { journal: true })),
        Row::new(0, "local, in-process loop", None),
        Row::new(
            0,
            "agent, async, agent responsible",
            Some(agent(Responsible::Remote, ModeChoice::Async)),
        ),
        Row::new(
            0,
            "agent, sync, this side responsible",
            Some(agent(Responsible::Local, ModeChoice::Sync)),
        ),
        Row::new(1, "local, plain", Some(How::Binary { journal: false })),
        Row::new(1, "local, journaled", Some(How::Binary { journal: true })),
        Row::new(1, "local, in-process loop", None),
        Row::new(
            1,
            "agent, as the demo (point 20, pre-copy)",
            Some(How::Agent {
                migrate: Migrate::AtPoint(Point(20)),
                responsible: Responsible::Remote,
                mode: ModeChoice::Auto,
                precopy: true,
            }),
        ),
    ]
}

/// Runs every configuration `runs` times in interleaved rounds.
async fn measure(lab: &Lab, baton: &Path, workloads: &[Workload], runs: usize) -> Result<Vec<Row>> {
    let engine = Engine::with_step_limits(false)?;
    let mut rows = configurations();
    let mut task_no = 0;

    // The references (and warm compiled-code caches): a plain local run
    // of each workload, and a short run of each module on the agent.
    let mut reference = Vec::new();
    for w in workloads {
        let r = run_binary(baton, w, false).await?;
        if r.status != 0 {
            bail!(
                "{}: the plain local run exited with status {}",
                w.name,
                r.status
            );
        }
        reference.push(r.stdout);
        task_no += 1;
        let mut p = part(
            w,
            Migrate::Start,
            Responsible::Remote,
            ModeChoice::Auto,
            true,
        );
        p.args = vec!["1".into(), "2".into()];
        let r = run_lab(task_no, &p, &engine, lab).await?;
        if !r.same {
            bail!(
                "{}: the warm-up run on the agent gave a different output",
                w.name
            );
        }
    }

    for round in 0..runs {
        eprintln!("churn bench: round {}/{runs}", round + 1);
        let mut in_process: Vec<(usize, f64)> = Vec::new();
        for row in rows.iter_mut() {
            let Some(how) = row.how.clone() else {
                continue;
            };
            let w = &workloads[row.workload];
            let expect = &reference[row.workload];
            match how {
                How::Binary { journal } => {
                    let r = run_binary(baton, w, journal).await?;
                    if r.status != 0 || &r.stdout != expect {
                        bail!(
                            "{} {}: output or exit status ({}) differs from the plain local run",
                            w.name,
                            row.label,
                            r.status
                        );
                    }
                    row.secs.push(r.secs);
                    row.rss_kib.extend(r.rss_kib);
                }
                How::Agent {
                    migrate,
                    responsible,
                    mode,
                    precopy,
                } => {
                    task_no += 1;
                    let p = part(w, migrate, responsible, mode, precopy);
                    let r = run_lab(task_no, &p, &engine, lab).await?;
                    if !r.same || r.status != 0 || &r.output != expect {
                        bail!(
                            "{} {}: output or exit status ({}) differs from the plain local run",
                            w.name,
                            row.label,
                            r.status
                        );
                    }
                    row.secs.push(r.total);
                    let tl = &r.timeline;
                    row.placement = Some((
                        tl.local_points,
                        tl.remote_points,
                        tl.finished_on.clone().unwrap_or_else(|| "?".into()),
                    ));
                    in_process.push((row.workload, r.reference_ms / 1000.0));
                }
            }
        }
        for row in rows.iter_mut().filter(|r| r.how.is_none()) {
            let w = row.workload;
            row.secs
                .extend(in_process.iter().filter(|(i, _)| *i == w).map(|(_, s)| s));
        }
    }
    Ok(rows)
}

fn part(
    w: &Workload,
    migrate: Migrate,
    responsible: Responsible,
    mode: ModeChoice,
    precopy: bool,
) -> Part {
    Part {
        title: "",
        module: w.bytes,
        name: w.name,
        args: w.args.clone(),
        migrate,
        responsible,
        mode,
        cut_at_remote_point: None,
        heal_after: None,
        disconnect_after: Duration::from_secs(2),
        precopy,
        sync_every: baton_proto::SyncEvery::default(),
        verbose: false,
        // Straight to the agent: the relay forwards in user space and
        // would measure itself.
        via_relay: false,
        // `baton run --remote` always journals.
        journal: true,
    }
}

/// One lab run, bounded by [`RUN_LIMIT`].
async fn run_lab(n: usize, p: &Part, engine: &Engine, lab: &Lab) -> Result<baton::lab::RunResult> {
    tokio::time::timeout(RUN_LIMIT, run_part(n, p, engine, lab))
        .await
        .with_context(|| format!("{}: a run on the agent took over {RUN_LIMIT:?}", p.name))?
}

/// Runs `baton run` on the workload in a subprocess (on a blocking thread).
async fn run_binary(baton: &Path, w: &Workload, journal: bool) -> Result<BinRun> {
    let baton = baton.to_path_buf();
    let path = w.path.clone();
    let args = w.args.clone();
    tokio::task::spawn_blocking(move || run_binary_blocking(&baton, &path, &args, journal))
        .await
        .context("the subprocess thread failed")?
}

fn run_binary_blocking(
    baton: &Path,
    module: &Path,
    args: &[String],
    journal: bool,
) -> Result<BinRun> {
    let state = tempfile::Builder::new()
        .prefix("baton-bench-churn-state-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let mut cmd = Command::new(baton);
    cmd.arg("run").arg(module).arg("--seed").arg(SEED);
    if journal {
        cmd.arg("--state-dir").arg(state.path());
    }
    cmd.arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", baton.display()))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let waited = wait_sampling_rss(&mut child, start + RUN_LIMIT);
    let secs = start.elapsed().as_secs_f64();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let (status, rss_kib) = waited?;
    if status != 0 {
        bail!(
            "`baton run {}` exited with status {status}: {}",
            module.display(),
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(BinRun {
        secs,
        rss_kib,
        stdout,
        status,
    })
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child`, killing it if it is still running at `deadline`;
/// samples its peak RSS (`VmHWM` of `/proc/<pid>/status`, KiB) every 2 ms
/// meanwhile. Returns the exit status (128 + the signal if a signal ended
/// it) and the last sample.
///
/// Not `wait4`'s `ru_maxrss`: at `exec` the kernel folds the high-water
/// mark of the memory the child was spawned with (this process's, which
/// holds the in-process agent and its tasks) into the child's figure.
fn wait_sampling_rss(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Result<(i32, Option<u64>)> {
    use std::os::unix::process::ExitStatusExt;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = None;
    loop {
        if let Some(kib) = vm_hwm_kib(&status_file) {
            peak = Some(kib);
        }
        if let Some(st) = child.try_wait().context("waiting for `baton run`")? {
            let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            return Ok((code, peak));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("a `baton run` took over {RUN_LIMIT:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The `VmHWM` line of a `/proc/<pid>/status` file, in KiB (none once the
/// process has exited or where there is no /proc).
fn vm_hwm_kib(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn median_u64(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn print_table(workloads: &[Workload], rows: &[Row], runs: usize) {
    println!("\nchurn bench: median of {runs} interleaved round(s); every output identical to the plain local run");
    for (i, w) in workloads.iter().enumerate() {
        println!("\n{}", w.title());
        println!(
            "   {:<40}  {:>8}  {:>7}  {:>10}  runs (s)",
            "configuration", "median", "× plain", "peak RSS"
        );
        let mine: Vec<&Row> = rows.iter().filter(|r| r.workload == i).collect();
        let plain = mine
            .iter()
            .find(|r| matches!(r.how, Some(How::Binary { journal: false })))
            .map_or(f64::NAN, |r| median(&r.secs));
        for r in mine {
            let m = median(&r.secs);
            let rss = match (&r.how, median_u64(&r.rss_kib)) {
                (Some(How::Binary { .. }), Some(k)) => format!("{:.0} MiB", k as f64 / 1024.0),
                (Some(How::Binary { .. }), None) => "?".to_string(),
                _ => "in-process".to_string(),
            };
            let each: Vec<String> = r.secs.iter().map(|s| format!("{s:.2}")).collect();
            let mut extra = String::new();
            if let Some((here, there, on)) = &r.placement {
                extra = format!("  [steps here {here}, on the agent {there}; finished {on}]");
            }
            println!(
                "   {:<40}  {:>6.2} s  {:>7.2}  {:>10}  {}{}",
                r.label,
                m,
                m / plain,
                rss,
                each.join(" "),
                extra
            );
        }
    }
    println!("\n   peak RSS: VmHWM of the `baton run` subprocess, sampled every 2 ms; runs on the in-process agent share this process, so theirs is not separable.");
    println!("   local, in-process loop: the lab's reference run before each agent run (engine and step loop, no client, no journal).");
}
