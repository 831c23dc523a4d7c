//! `baton demo`: shows, on this machine, what baton is built on — a task
//! stopped at a point, its state captured, restored into a fresh instance
//! and continued, with output and digests identical to an uninterrupted run.
//!
//! Uses example tasks compiled into the binary, so it runs anywhere. Later
//! issues extend it to migration and failover.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use baton_task::checkpoint::{self, Decoded};
use baton_task::wasi::{ClockMode, OutStream, OutputSink};
use baton_task::{Digest, Engine, Limits, Program, StepOutcome, Task, TaskConfig};
use clap::Args;

use crate::units::human_bytes;

const PI: &[u8] = include_bytes!("../../../../examples/pi.wasm");
const BIGSTATE: &[u8] = include_bytes!("../../../../examples/bigstate.wasm");

/// Options of `baton demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The point at which the task is stopped and restored.
    #[arg(long, default_value_t = 20)]
    pub stop_at: u64,
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

impl Capture {
    fn take(&self) -> Vec<u8> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

struct Trace {
    digests: Vec<Digest>,
    output: Vec<u8>,
    status: i32,
    millis: f64,
}

fn config(name: &str, args: &[&str], seed: u64) -> TaskConfig {
    let mut c = TaskConfig::new(name);
    c.host.args = std::iter::once(name)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    c.host.seed = seed;
    c.host.clock = ClockMode::Virtual {
        start_realtime_ns: 1_767_225_600 * 1_000_000_000,
    };
    c
}

/// Runs `task` to the end, recording the digest at every point.
fn run_out(task: &mut Task, digests: &mut Vec<Digest>) -> Result<i32> {
    loop {
        let outcome = task.step()?;
        digests.push(task.digest()?);
        if let StepOutcome::Finished(s) = outcome {
            return Ok(s);
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl DemoArgs {
    /// Runs the demo.
    ///
    /// # Errors
    ///
    /// Only if baton itself is broken: the demo's checks failing is an error.
    pub fn execute(self) -> Result<()> {
        let engine = Engine::with_step_limits(false)?;
        println!(
            "baton demo: stop a running task, capture it, continue it elsewhere — same bytes out\n"
        );

        let pi = engine.load(PI).context("loading the built-in pi example")?;
        let args = ["50", "20000"];
        println!(
            "task: pi.wasm -- {} (Monte Carlo estimate of π, seed 7)",
            args.join(" ")
        );
        let reference = uninterrupted(&engine, &pi, &args)?;
        println!(
            "  1. uninterrupted run        {} points in {:.1} ms, final digest {}",
            reference.digests.len() - 1,
            reference.millis,
            short(reference.digests.last())
        );

        let stop = self
            .stop_at
            .min(reference.digests.len().saturating_sub(2) as u64);
        let capture = Capture::default();
        let mut task = Task::create(
            &engine,
            &pi,
            config("pi.wasm", &args, 7),
            Box::new(capture.clone()),
        )?;
        for _ in 0..stop {
            task.step()?;
        }
        let t = Instant::now();
        let saved = task.checkpoint()?;
        let capture_ms = ms(t);
        println!(
            "  2. stopped at point {stop}       checkpoint: {} ({} of memory) in {:.2} ms",
            human_bytes(saved.bytes.len() as u64),
            human_bytes(task.memory_size() as u64),
            capture_ms
        );
        drop(task);

        let t = Instant::now();
        let Decoded::Full(state) = checkpoint::decode(&saved.bytes, &Default::default())? else {
            bail!("a full checkpoint decoded as a delta");
        };
        let mut resumed = Task::restore(
            &engine,
            &pi,
            &state,
            ClockMode::Virtual {
                start_realtime_ns: 0,
            },
            Limits::default(),
            Box::new(capture.clone()),
        )?;
        let restore_ms = ms(t);
        let mut digests = vec![resumed.digest()?];
        let status = run_out(&mut resumed, &mut digests)?;
        println!(
            "  3. fresh instance           restored in {:.2} ms, ran points {}..{}",
            restore_ms,
            stop + 1,
            resumed.point()
        );

        let same_digests = reference.digests[stop as usize..] == digests[..];
        let output = capture.take();
        let same_output = output == reference.output;
        println!("  4. compared with the uninterrupted run:");
        println!(
            "     {} digest at every point {}..{} (final {})",
            tick(same_digests),
            stop,
            resumed.point(),
            short(digests.last())
        );
        println!(
            "     {} output, {} bytes, byte for byte",
            tick(same_output),
            output.len()
        );
        println!(
            "     {} exit status {}",
            tick(status == reference.status),
            status
        );
        println!("\n  the task's output (printed once, by both halves together):");
        for line in String::from_utf8_lossy(&output).lines() {
            println!("     │ {line}");
        }
        if !(same_digests && same_output && status == reference.status) {
            bail!("the restored run differs from the uninterrupted one: this is a bug in baton");
        }

        println!(
            "\ntask: bigstate.wasm -- 32 20 (32 MiB of state, a few hundred KiB change per step)"
        );
        deltas(&engine)?;
        println!("\nnext: `baton run examples/pi.wasm --state-dir /tmp/baton --name pi`, press Ctrl-C, then `baton resume pi --state-dir /tmp/baton`.");
        Ok(())
    }
}

fn uninterrupted(engine: &Engine, program: &Program, args: &[&str]) -> Result<Trace> {
    let capture = Capture::default();
    let t = Instant::now();
    let mut task = Task::create(
        engine,
        program,
        config("pi.wasm", args, 7),
        Box::new(capture.clone()),
    )?;
    let mut digests = vec![task.digest()?];
    let status = run_out(&mut task, &mut digests)?;
    Ok(Trace {
        digests,
        output: capture.take(),
        status,
        millis: ms(t),
    })
}

/// Shows that a delta grows with the pages that changed, not with memory.
fn deltas(engine: &Engine) -> Result<()> {
    let program = engine
        .load(BIGSTATE)
        .context("loading the built-in bigstate example")?;
    let mut task = Task::create(
        engine,
        &program,
        config("bigstate.wasm", &["32", "20"], 7),
        Box::new(Capture::default()),
    )?;
    task.step()?;
    let t = Instant::now();
    let full = task.checkpoint()?;
    println!(
        "  full checkpoint at point {}   {} of memory -> {} in {:.1} ms",
        task.point(),
        human_bytes(task.memory_size() as u64),
        human_bytes(full.bytes.len() as u64),
        ms(t)
    );
    for _ in 0..3 {
        task.step()?;
        let t = Instant::now();
        let delta = task.delta()?;
        println!(
            "  delta at point {}            {} in {:.1} ms",
            task.point(),
            human_bytes(delta.bytes.len() as u64),
            ms(t)
        );
        task.rebase()?;
    }
    Ok(())
}

fn tick(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

fn short(d: Option<&Digest>) -> String {
    d.map(|d| d.short()).unwrap_or_default()
}
