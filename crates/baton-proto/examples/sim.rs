//! Runs the protocol simulator over many seeds and prints the figures.
//!
//! ```text
//! cargo run --release -p baton-proto --example sim -- --seeds 10000 --start 0
//! cargo run --release -p baton-proto --example sim -- --seeds 2000 --mutate no-fencing
//! cargo run --release -p baton-proto --example sim -- --seed 1234     # replay one seed, with its trace
//! ```
//!
//! The last line is always `N seeds, V violations`; the exit status is 1
//! when V > 0 (and 2 for bad arguments). A failing seed prints its trace (the
//! last events of each side) and replays exactly with `--seed`.

use std::process::ExitCode;
use std::time::Instant;

use baton_proto::sim::{run_seed, run_seeds, Mutation, SeedReport};

struct Args {
    seeds: u64,
    start: u64,
    seed: Option<u64>,
    mutation: Mutation,
    threads: usize,
    traces: usize,
}

const USAGE: &str = "usage: sim [--seeds N] [--start S] [--seed X] [--mutate none|no-fencing|ack-before-durable|no-base-check] [--threads T] [--traces K]";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 1000,
        start: 0,
        seed: None,
        mutation: Mutation::None,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        traces: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = num(value()?)?,
            "--start" => a.start = num(value()?)?,
            "--seed" => a.seed = Some(num(value()?)?),
            "--mutate" => a.mutation = value()?.parse()?,
            "--threads" => a.threads = num(value()?)?.max(1) as usize,
            "--traces" => a.traces = num(value()?)? as usize,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn print_failure(r: &SeedReport, trace: bool, mutation: Mutation) {
    for v in &r.violations {
        println!(
            "seed {}: {} violated at {:.3}s: {}",
            r.seed,
            v.invariant,
            v.at_ns as f64 / 1e9,
            v.what
        );
    }
    if trace {
        print!("{}", r.trace);
        let m = if mutation == Mutation::None {
            String::new()
        } else {
            format!(" --mutate {}", mutation.name())
        };
        println!(
            "replay: cargo run --release -p baton-proto --example sim -- --seed {}{m}",
            r.seed
        );
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let r = run_seed(seed, args.mutation, true);
        print!("{}", r.trace);
        print_failure(&r, false, args.mutation);
        println!(
            "finished: {}, failovers {}, migrations {}, steps executed {} of {}, simulated {:.3}s",
            r.finished,
            r.failovers,
            r.migrations,
            r.steps_executed,
            r.steps_needed,
            r.sim_ns as f64 / 1e9
        );
        let v = u64::from(!r.violations.is_empty());
        println!("1 seeds, {v} violations");
        return if v > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let began = Instant::now();
    let figures = run_seeds(args.start, args.seeds, args.mutation, args.threads);
    for (i, r) in figures.failed.iter().enumerate() {
        print_failure(r, i < args.traces, args.mutation);
    }
    if args.mutation != Mutation::None {
        println!("mutation: {}", args.mutation.name());
    }
    print!("{}", figures.table());
    println!(
        "  {:<40} {:.1}s on {} threads",
        "wall time",
        began.elapsed().as_secs_f64(),
        args.threads
    );
    let v = figures.violations();
    println!("{} seeds, {v} violations", figures.seeds);
    if v > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
