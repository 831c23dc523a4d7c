//! The deterministic simulation of the protocol, as tests: many seeds with
//! no violation, and every deliberate bug caught.
//!
//! Run in release: `cargo test --release -p baton-proto` (10,000 seeds in
//! the main test, about 10 s on two cores). A debug build runs 3,000 seeds
//! to stay quick; `BATON_SIM_SEEDS=N` sets the number either way.

use baton_proto::sim::{run_seed, run_seeds, Figures, Mutation};

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn explain(f: &Figures) -> String {
    let mut s = String::new();
    for r in f.failed.iter().take(3) {
        for v in &r.violations {
            s.push_str(&format!("seed {}: {} {}\n", r.seed, v.invariant, v.what));
        }
    }
    if let Some(r) = f.failed.first() {
        s.push_str(&r.trace);
    }
    s
}

#[test]
fn ten_thousand_seeds_without_a_violation() {
    let seeds = std::env::var("BATON_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            3_000
        } else {
            10_000
        });
    let f = run_seeds(0, seeds, Mutation::None, threads());
    assert_eq!(f.violations(), 0, "{}", explain(&f));
    assert_eq!(f.seeds, seeds);
    assert!(
        f.finished > seeds * 9 / 10,
        "most tasks finish: {}",
        f.table()
    );
    assert!(
        f.failovers > 0 && f.migrations > 0,
        "the faults bite: {}",
        f.table()
    );
}

fn caught(mutation: Mutation, seeds: u64) {
    let f = run_seeds(50_000, seeds, mutation, threads());
    assert!(
        f.violations() > 0,
        "{} was not caught in {seeds} seeds",
        mutation.name()
    );
}

#[test]
fn mutation_no_fencing_is_caught() {
    caught(Mutation::NoFencing, 6_000);
}

#[test]
fn mutation_ack_before_durable_is_caught() {
    caught(Mutation::AckBeforeDurable, 1_000);
}

#[test]
fn mutation_no_base_check_is_caught() {
    caught(Mutation::NoBaseCheck, 2_000);
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77, 1234] {
        let (a, b) = (
            run_seed(seed, Mutation::None, true),
            run_seed(seed, Mutation::None, true),
        );
        assert_eq!(a.events, b.events);
        assert_eq!(a.sim_ns, b.sim_ns);
        assert_eq!(a.steps_executed, b.steps_executed);
        assert_eq!(a.trace, b.trace);
        assert!(a.violations.is_empty());
    }
}
