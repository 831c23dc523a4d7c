//! What making a command suspendable costs (issue 10, BENCHMARKS.md).
//!
//!     cargo bench -p baton-task --bench commands -- [--rounds N] [--every MS] [--no-point-cost] [--only plain|points] [--nans canonical|native] MODULE [ARGS...]
//!
//! Loads MODULE twice on one engine: as is (one step, no checks) and made
//! suspendable. Then, round by round and interleaved so that machine noise
//! hits both alike, it runs `_start` to the end in a fresh task:
//!
//! - `plain`: the module as is;
//! - `points`: the suspendable module with a point every `--every` ms
//!   (default 100): each point unwinds the stack, captures the state's
//!   digest (as a plain `baton run` does at a point) and rewinds;
//! - `points-1ms`: the same with a point every millisecond, which gives the
//!   cost of one point: (time(1 ms) - time(every)) / (points(1 ms) -
//!   points(every)); `--no-point-cost` leaves this run out.
//!
//! `--nans native` loads both without NaN canonicalisation, as `baton run`
//! with no agent does. Loading and compiling are outside the clock; each run's output is
//! checked to be byte-identical to the plain run's. Prints medians and the
//! ratio to plain.

use std::time::{Duration, Instant};

use baton_task::wasi::CapturedOutput;
use baton_task::{Engine, Program, StepOutcome, Task, TaskConfig};

struct Run {
    secs: f64,
    points: u64,
    out: Vec<u8>,
}

fn run(engine: &Engine, program: &Program, config: &TaskConfig, every: Duration) -> Run {
    let out = CapturedOutput::new();
    let mut config = config.clone();
    config.limits.point_every = every;
    let mut task = match Task::create(engine, program, config, Box::new(out.clone())) {
        Ok(t) => t,
        Err(e) => fail(&format!("cannot create the task: {e}")),
    };
    let started = Instant::now();
    let mut points = 0;
    loop {
        match task.step() {
            Ok(StepOutcome::Finished(_)) => break,
            Ok(StepOutcome::Continue) => {
                points += 1;
                if let Err(e) = task.digest() {
                    fail(&format!("digest at point {points}: {e}"));
                }
            }
            Err(e) => fail(&format!("step failed: {e}")),
        }
    }
    Run {
        secs: started.elapsed().as_secs_f64(),
        points,
        out: out.stdout(),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("commands bench: {msg}");
    std::process::exit(1)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut rounds = 3usize;
    let mut every = 100u64;
    let mut per_point = true;
    let mut only: Option<String> = None;
    let mut nans = baton_task::Nans::Canonical;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        if flag == "--nans" {
            nans = match args.first().map(String::as_str) {
                Some("native") => baton_task::Nans::Native,
                Some("canonical") => baton_task::Nans::Canonical,
                _ => fail("--nans needs canonical or native"),
            };
            args.remove(0);
            continue;
        }
        if flag == "--no-point-cost" {
            per_point = false;
            continue;
        }
        if flag == "--only" {
            // One kind of run only, without the reference run or checks:
            // for `perf stat` and profilers.
            only = Some(if args.is_empty() {
                String::new()
            } else {
                args.remove(0)
            });
            continue;
        }
        let value = if args.is_empty() {
            fail(&format!("{flag} needs a value"))
        } else {
            args.remove(0)
        };
        let n: u64 = value
            .parse()
            .unwrap_or_else(|_| fail(&format!("{flag}: not a number: {value}")));
        match flag.as_str() {
            "--rounds" => rounds = n.max(1) as usize,
            "--every" => every = n.max(1),
            _ => fail(&format!("unknown option {flag}")),
        }
    }
    if args.is_empty() {
        fail("usage: commands [--rounds N] [--every MS] MODULE [ARGS...]");
    }
    let path = args.remove(0);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let engine = Engine::with_step_limits(false).unwrap_or_else(|e| fail(&e.to_string()));
    let t = Instant::now();
    let plain = engine
        .load_as(&bytes, false, nans)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let plain_load = t.elapsed();
    let t = Instant::now();
    let points = engine
        .load_as(&bytes, true, nans)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let points_load = t.elapsed();
    println!(
        "{path}: load plain {:.1} s, suspendable {:.1} s; {:?}",
        plain_load.as_secs_f64(),
        points_load.as_secs_f64(),
        points.points()
    );
    let name = std::path::Path::new(&path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.clone());
    let mut config = TaskConfig::new(&name);
    config.host.args.extend(args);
    let every = Duration::from_millis(every);
    let fast = Duration::from_millis(1);
    if let Some(kind) = only {
        let program = match kind.as_str() {
            "plain" => &plain,
            "points" => &points,
            other => fail(&format!("--only plain|points, not {other:?}")),
        };
        for round in 1..=rounds {
            let r = run(&engine, program, &config, every);
            println!(
                "{kind} round {round}/{rounds}: {:.3} s, {} points",
                r.secs, r.points
            );
        }
        return;
    }
    let reference = run(&engine, &plain, &config, every);
    let (mut tp, mut tq, mut tf) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pq, mut pf) = (0, 0);
    for round in 1..=rounds {
        let a = run(&engine, &plain, &config, every);
        let b = run(&engine, &points, &config, every);
        let c = if per_point {
            run(&engine, &points, &config, fast)
        } else {
            Run {
                secs: 0.0,
                points: 0,
                out: reference.out.clone(),
            }
        };
        for r in [&a, &b, &c] {
            if r.out != reference.out {
                fail("output differs from the plain run");
            }
        }
        println!(
            "round {round}/{rounds}: plain {:.3} s; points every {} ms {:.3} s ({} points); every 1 ms {:.3} s ({} points)",
            a.secs,
            every.as_millis(),
            b.secs,
            b.points,
            c.secs,
            c.points
        );
        tp.push(a.secs);
        tq.push(b.secs);
        tf.push(c.secs);
        pq = b.points;
        pf = c.points;
    }
    let (p, q, f) = (median(&mut tp), median(&mut tq), median(&mut tf));
    println!(
        "median: plain {p:.3} s, points every {} ms {q:.3} s = {:.3}x plain; every 1 ms {f:.3} s",
        every.as_millis(),
        q / p
    );
    if pf > pq {
        println!(
            "one point (unwind, digest, rewind): {:.3} ms",
            (f - q) * 1000.0 / (pf - pq) as f64
        );
    }
}
