//! Ordinary WASI commands made suspendable: run with points as often as
//! possible, each point captured, encoded, decoded and continued in a fresh
//! instance, they give the same output and exit status as one uninterrupted
//! call of `_start`, reach many points on the way, and reach the same
//! points (same digests) as a run that never leaves its instance: points
//! fall where a work budget runs out, not where a clock says.

mod support;

use std::time::Duration;

use baton_task::checkpoint::{self, Decoded};
use baton_task::module::Points;
use baton_task::{StepOutcome, Task, TaskConfig};
use support::{config, engine, program, virtual_clock, Capture};

/// Output, exit status and the digest at every point of a run that
/// restores into a fresh instance at every point (`hop`), or just steps.
fn run(
    name: &str,
    config: &TaskConfig,
    every: Duration,
    hop: bool,
) -> (String, String, i32, Vec<baton_task::Digest>) {
    let out = Capture::new();
    let mut cfg = config.clone();
    cfg.limits.point_every = every;
    let program = program(name);
    let mut task = Task::create(engine(), &program, cfg.clone(), out.sink()).unwrap();
    let mut digests = Vec::new();
    loop {
        let outcome = task
            .step()
            .unwrap_or_else(|e| panic!("{name} at point {}: {e}", digests.len()));
        digests.push(task.digest().unwrap());
        match outcome {
            StepOutcome::Finished(status) => {
                return (out.stdout_string(), out.stderr_string(), status, digests)
            }
            StepOutcome::Continue => {
                if hop {
                    let saved = task.checkpoint().unwrap();
                    let Decoded::Full(state) =
                        checkpoint::decode(&saved.bytes, &Default::default()).unwrap()
                    else {
                        panic!("a full checkpoint decodes to a state")
                    };
                    assert!(state.host.unwound().is_some(), "a point inside _start");
                    task = Task::restore(
                        engine(),
                        &program,
                        &state,
                        virtual_clock(),
                        cfg.limits,
                        out.sink(),
                    )
                    .unwrap();
                    assert_eq!(task.digest().unwrap(), saved.digest);
                }
            }
        }
    }
}

fn same_with_points(name: &'static str, args: &'static [&'static str]) {
    // Tasks need threads with room for `MAX_WASM_STACK` and the host.
    std::thread::Builder::new()
        .stack_size(baton_task::TASK_THREAD_STACK)
        .spawn(move || same_with_points_here(name, args))
        .unwrap()
        .join()
        .unwrap();
}

fn same_with_points_here(name: &str, args: &[&str]) {
    let cfg = config(name, args, 1);
    assert!(
        matches!(program(name).points(), Points::Anywhere { .. }),
        "{name}: {:?}",
        program(name).points()
    );
    let (out, err, status, digests) = run(name, &cfg, Duration::from_secs(3600), false);
    assert_eq!(
        digests.len(),
        1,
        "no point but the end within an hour's budget"
    );
    let every = Duration::from_micros(500);
    let hopped = run(name, &cfg, every, true);
    assert_eq!(hopped.0, out, "{name}: stdout");
    assert_eq!(hopped.1, err, "{name}: stderr");
    assert_eq!(hopped.2, status, "{name}: status");
    assert!(
        hopped.3.len() >= 6,
        "{name}: only {} points",
        hopped.3.len()
    );
    let stayed = run(name, &cfg, every, false);
    assert_eq!(
        stayed.3, hopped.3,
        "{name}: the same points, wherever they ran"
    );
}

#[test]
fn deep_recursion_moves_between_instances() {
    same_with_points("recurse", &["3000", "3000", "300"]);
}

#[test]
fn large_frames_move_between_instances() {
    same_with_points("frames", &[]);
}

#[test]
fn a_command_using_args_env_and_output_moves_between_instances() {
    same_with_points("tally", &["12", "2000000"]);
}

#[test]
fn a_rewind_that_ends_at_a_mark_moves_between_instances() {
    same_with_points("marks", &["30", "20000", "1"]);
}

#[test]
fn marks_take_the_points_once_half_the_budget_is_spent() {
    // With marks, every point falls between two rounds, the same number of
    // rounds apart each time (the first mark after half the budget); the
    // output is the same as without marks, which take fewer points.
    let every = Duration::from_micros(500);
    let lines_at_points = |mark: &str| {
        let out = Capture::new();
        let mut cfg = config("marks", &["30", "20000", mark], 1);
        cfg.limits.point_every = every;
        let mut task = Task::create(engine(), &program("marks"), cfg, out.sink()).unwrap();
        let mut at = Vec::new();
        while task.step().unwrap() == StepOutcome::Continue {
            at.push(out.stdout_string());
        }
        (out.stdout_string(), at)
    };
    let (with_marks, at) = lines_at_points("1");
    let (without, at_plain) = lines_at_points("0");
    assert_eq!(with_marks, without, "marks never change the output");
    assert!(
        at.len() > at_plain.len(),
        "{} against {}",
        at.len(),
        at_plain.len()
    );
    let rounds: Vec<usize> = at.iter().map(|o| o.lines().count()).collect();
    assert!(
        at.iter().all(|o| o.ends_with('\n')),
        "a point between rounds"
    );
    let stride = rounds[0];
    assert!(stride >= 1);
    for (k, r) in rounds.iter().enumerate() {
        assert_eq!(
            *r,
            stride * (k + 1),
            "points every {stride} rounds: {rounds:?}"
        );
    }
}

#[test]
fn hello_still_runs() {
    let cfg = config("hello", &[], 1);
    let (out, _, status, _) = run("hello", &cfg, Duration::from_millis(1), true);
    assert_eq!(status, 0);
    assert!(!out.is_empty());
}
