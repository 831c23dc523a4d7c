//! The two ways of finding changed pages agree byte for byte: the same task
//! run twice side by side, once with the kernel's record of written pages
//! and once comparing with a copy of the memory, has the same digest at
//! every point and the same deltas, including across memory growth, a
//! restore from a checkpoint, a step that rewrites most of the memory, and
//! a command's points in the middle.

mod support;

use std::time::Duration;

use baton_task::{DirtyTracking, Limits, StepOutcome, Task, TaskConfig};
use support::{config, engine, program, Capture};

/// Steps `name` with both trackers in lockstep, comparing digests at every
/// point and deltas every `delta_every` points; restores both from a full
/// checkpoint at `restore_at`. Returns how many points were compared.
fn lockstep(name: &str, cfg: TaskConfig, delta_every: u64, restore_at: Option<u64>) -> u64 {
    let program = program(name);
    let kernel_engine = engine().with_dirty_tracking(DirtyTracking::Kernel);
    let compare_engine = engine().with_dirty_tracking(DirtyTracking::Compare);
    let (out_k, out_c) = (Capture::new(), Capture::new());
    let mut k = Task::create(&kernel_engine, &program, cfg.clone(), out_k.sink()).unwrap();
    let mut c = Task::create(&compare_engine, &program, cfg, out_c.sink()).unwrap();
    assert_eq!(c.dirty_tracking(), DirtyTracking::Compare);
    let full_k = k.checkpoint().unwrap();
    let full_c = c.checkpoint().unwrap();
    assert_eq!(full_k.bytes, full_c.bytes, "{name}: first full checkpoint");
    if DirtyTracking::best().0 == DirtyTracking::Kernel {
        assert_eq!(k.dirty_tracking(), DirtyTracking::Kernel);
    }
    for point in 1..=10_000u64 {
        let (sk, sc) = (k.step().unwrap(), c.step().unwrap());
        assert_eq!(sk, sc, "{name}: outcome at point {point}");
        assert_eq!(
            k.digest().unwrap(),
            c.digest().unwrap(),
            "{name}: digest at point {point}"
        );
        if point % delta_every == 0 {
            let (dk, dc) = (k.delta().unwrap(), c.delta().unwrap());
            assert_eq!(dk.bytes, dc.bytes, "{name}: delta at point {point}");
            k.rebase().unwrap();
            c.rebase().unwrap();
        }
        if restore_at == Some(point) {
            let saved = c.checkpoint().unwrap();
            assert_eq!(k.checkpoint().unwrap().bytes, saved.bytes);
            let state = support::decode_full(&saved.bytes);
            k = restore_on(&kernel_engine, &program, &state, &out_k);
            c = restore_on(&compare_engine, &program, &state, &out_c);
        }
        if let StepOutcome::Finished(_) = sk {
            assert_eq!(out_k.stdout(), out_c.stdout(), "{name}: stdout");
            return point;
        }
    }
    panic!("{name} did not finish in 10000 points");
}

fn restore_on(
    engine: &baton_task::Engine,
    program: &baton_task::Program,
    state: &baton_task::State,
    out: &Capture,
) -> Task {
    let limits = Limits {
        max_memory: 256 << 20,
        ..Limits::default()
    };
    Task::restore(
        engine,
        program,
        state,
        support::virtual_clock(),
        limits,
        out.sink(),
    )
    .unwrap()
}

#[test]
fn scattered_writes_agree() {
    let points = lockstep(
        "churn",
        config("churn", &["8", "60", "16", "2000"], 7),
        3,
        Some(20),
    );
    assert!(points > 50);
}

#[test]
fn growth_agrees() {
    // 1 MiB more every step until 48 MiB are refused: memory.grow between
    // every two points.
    let mut cfg = config("hostile/membomb", &["1"], 1);
    cfg.limits.max_memory = 48 << 20;
    lockstep("hostile/membomb", cfg, 2, Some(7));
}

#[test]
fn rewriting_most_of_the_memory_agrees() {
    // 4 MiB, rewriting up to 4 MiB (at random places) every step: past
    // half the pages, the kernel's protection is turned off and back on.
    lockstep(
        "bigstate",
        config("bigstate", &["4", "30", "4096"], 3),
        1,
        Some(12),
    );
    lockstep(
        "bigstate",
        config("bigstate", &["4", "30", "64"], 3),
        4,
        None,
    );
}

#[test]
fn a_commands_points_agree() {
    let mut cfg = config("tally", &["12", "400000"], 5);
    cfg.limits.point_every = Duration::from_millis(2);
    let points = lockstep("tally", cfg, 2, Some(5));
    assert!(points > 5, "only {points} points");
}
