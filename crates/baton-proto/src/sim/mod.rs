//! The deterministic simulator (feature `sim`): two stubs in a seeded world
//! with a virtual clock, a faulty network, fake executors and crashes.
//!
//! Owns the world ([`run_seed`]), the seeded scenarios, the invariant checks
//! and the figures ([`Figures`]). Everything is a pure function of the seed
//! and the [`Mutation`]: a failing seed replays exactly. This module only
//! drives the stubs through their public API, like a real driver; it must
//! never reach into their state (apart from the mutation switches, which
//! exist to prove the checks can see bugs).
//!
//! Invariants checked as things happen (DESIGN §6):
//! - **I1** every state an executor reaches or a store holds is on the one
//!   true lineage, and no divergence is ever reported;
//! - **I2** a point is passed only once it is durable on the executor's side
//!   and, in sync mode, on the peer; a failover after a sync commit loses no
//!   committed step;
//! - **I3** the user's output is every point's output exactly once, in order,
//!   byte-identical, and the task finishes with the right status;
//! - **I4** at the end, if the local side is alive the task finished (if it
//!   died for good, a responsible remote finished);
//! - **I5** each side only ever adopts newer epochs, an epoch means one
//!   assignment, and the local side never adopts an epoch the remote did not
//!   record.

mod rng;
mod scenario;
mod task;
mod world;

use core::fmt::Write as _;
use core::str::FromStr;

use crate::config::Mutations;

/// A deliberate bug to switch on (`--mutate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    /// No bug.
    #[default]
    None,
    /// Ignore sessions and epochs (stale messages count as current).
    NoFencing,
    /// Acknowledge received states before they are durable.
    AckBeforeDurable,
    /// Accept a delta whatever its base.
    NoBaseCheck,
}

impl Mutation {
    /// Every real mutation.
    pub const ALL: [Mutation; 3] = [
        Mutation::NoFencing,
        Mutation::AckBeforeDurable,
        Mutation::NoBaseCheck,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::None => "none",
            Mutation::NoFencing => "no-fencing",
            Mutation::AckBeforeDurable => "ack-before-durable",
            Mutation::NoBaseCheck => "no-base-check",
        }
    }

    pub(crate) fn switches(self) -> Mutations {
        Mutations {
            no_fencing: self == Mutation::NoFencing,
            ack_before_durable: self == Mutation::AckBeforeDurable,
            no_base_check: self == Mutation::NoBaseCheck,
        }
    }
}

impl FromStr for Mutation {
    type Err = String;

    fn from_str(s: &str) -> Result<Mutation, String> {
        [Mutation::None]
            .iter()
            .chain(Mutation::ALL.iter())
            .find(|m| m.name() == s)
            .copied()
            .ok_or_else(|| {
                format!(
                    "unknown mutation `{s}` (known: no-fencing, ack-before-durable, no-base-check)"
                )
            })
    }
}

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (`I1`…`I5`, or `contract` for a stub asking a driver
    /// for something impossible, or `codec`).
    pub invariant: &'static str,
    /// What happened.
    pub what: String,
    /// When, in simulated nanoseconds.
    pub at_ns: u64,
}

/// What one seed did.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Broken invariants (empty if none).
    pub violations: Vec<Violation>,
    /// The trace (filled for failing seeds, or when asked).
    pub trace: String,
    /// The local side finished the task.
    pub finished: bool,
    /// Steps the task needs.
    pub steps_needed: u64,
    /// Steps executed by either side (re-executions included).
    pub steps_executed: u64,
    /// Failovers and takeovers (a side resuming on its own).
    pub failovers: u32,
    /// Takeovers by the local side (counted in `failovers` too).
    pub takeovers: u32,
    /// Resumptions by the side that was executing (after its own crash).
    pub restarts: u32,
    /// Committed steps lost per failover after a sync commit.
    pub lost_sync: Vec<u64>,
    /// Committed steps lost per failover after an async commit.
    pub lost_async: Vec<u64>,
    /// Steps redone per failover when the peer had passed its last point
    /// while disconnected (it ran alone as the responsible side; its work
    /// is not lost if it comes back, only duplicated).
    pub lost_alone: Vec<u64>,
    /// Time from the fault (a cut or a crash) to the responsible side
    /// resuming, for failovers that are not takeovers.
    pub failover_ns: Vec<u64>,
    /// Time from the fault to the local side taking over.
    pub takeover_ns: Vec<u64>,
    /// Migrations.
    pub migrations: u32,
    /// Downtime of each migration, as the local side estimated it.
    pub downtime_ns: Vec<u64>,
    /// Simulated time at the end.
    pub sim_ns: u64,
    /// Events processed.
    pub events: u64,
}

/// Runs one seed.
pub fn run_seed(seed: u64, mutation: Mutation, verbose: bool) -> SeedReport {
    world::World::new(seed, mutation, verbose).run()
}

/// The figures over many seeds.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with at least one violation.
    pub failed: Vec<SeedReport>,
    /// Seeds whose task finished on the local side.
    pub finished: u64,
    /// Total failovers (takeovers included).
    pub failovers: u64,
    /// Total takeovers.
    pub takeovers: u64,
    /// Total resumptions by the side that was executing.
    pub restarts: u64,
    lost_sync: Vec<u64>,
    lost_async: Vec<u64>,
    lost_alone: Vec<u64>,
    failover_ns: Vec<u64>,
    takeover_ns: Vec<u64>,
    /// Total migrations.
    pub migrations: u64,
    downtime_ns: Vec<u64>,
    steps_needed: u64,
    steps_executed: u64,
    events: u64,
}

impl Figures {
    /// Adds one seed.
    pub fn add(&mut self, r: SeedReport) {
        self.seeds += 1;
        self.finished += u64::from(r.finished);
        self.failovers += u64::from(r.failovers);
        self.takeovers += u64::from(r.takeovers);
        self.restarts += u64::from(r.restarts);
        self.takeover_ns.extend(&r.takeover_ns);
        self.lost_sync.extend(&r.lost_sync);
        self.lost_async.extend(&r.lost_async);
        self.lost_alone.extend(&r.lost_alone);
        self.failover_ns.extend(&r.failover_ns);
        self.migrations += u64::from(r.migrations);
        self.downtime_ns.extend(&r.downtime_ns);
        self.steps_needed += r.steps_needed;
        self.steps_executed += r.steps_executed;
        self.events += r.events;
        if !r.violations.is_empty() {
            self.failed.push(r);
        }
    }

    /// Number of violations (seeds that broke an invariant).
    pub fn violations(&self) -> u64 {
        self.failed.len() as u64
    }

    /// The figures table (without the final `N seeds, V violations` line).
    pub fn table(&self) -> String {
        fn stats(v: &[u64]) -> (f64, u64) {
            let n = v.len().max(1) as f64;
            (
                v.iter().sum::<u64>() as f64 / n,
                v.iter().copied().max().unwrap_or(0),
            )
        }
        let ms = |ns: f64| ns / 1e6;
        let mut out = String::new();
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<40} {v}");
        };
        let _ = writeln!(out, "figures");
        row(
            &mut out,
            "seeds (task finished locally)",
            format!("{} ({})", self.seeds, self.finished),
        );
        row(
            &mut out,
            "failovers seen (of which takeovers)",
            format!(
                "{} ({}); {} restarts in place",
                self.failovers, self.takeovers, self.restarts
            ),
        );
        let (m, w) = stats(&self.lost_sync);
        row(
            &mut out,
            "lost steps per failover, sync",
            format!(
                "mean {m:.2}, worst {w}  ({} failovers)",
                self.lost_sync.len()
            ),
        );
        let (m, w) = stats(&self.lost_async);
        row(
            &mut out,
            "lost steps per failover, async",
            format!(
                "mean {m:.2}, worst {w}  ({} failovers)",
                self.lost_async.len()
            ),
        );
        let (m, w) = stats(&self.lost_alone);
        row(
            &mut out,
            "lost steps per failover, peer ran alone",
            format!(
                "mean {m:.2}, worst {w}  ({} failovers)",
                self.lost_alone.len()
            ),
        );
        let (m, w) = stats(&self.failover_ns);
        row(
            &mut out,
            "failover time (cut or crash to resumption)",
            format!("mean {:.0} ms, worst {:.0} ms", ms(m), ms(w as f64)),
        );
        let (m, w) = stats(&self.takeover_ns);
        row(
            &mut out,
            "takeover time (fault to local takeover)",
            format!("mean {:.0} ms, worst {:.0} ms", ms(m), ms(w as f64)),
        );
        let (m, w) = stats(&self.downtime_ns);
        row(
            &mut out,
            "migrations, downtime",
            format!(
                "{}, mean {:.1} ms, worst {:.1} ms",
                self.migrations,
                ms(m),
                ms(w as f64)
            ),
        );
        let dup = self.steps_executed.saturating_sub(self.steps_needed);
        row(
            &mut out,
            "duplicated work (steps re-executed)",
            format!(
                "{dup} of {} needed ({:.1}%), {:.2} per seed",
                self.steps_needed,
                100.0 * dup as f64 / self.steps_needed.max(1) as f64,
                dup as f64 / self.seeds.max(1) as f64
            ),
        );
        row(&mut out, "simulated events", format!("{}", self.events));
        out
    }
}

/// Runs seeds `start .. start + count` on `threads` threads and gathers the
/// figures (in seed order, so the result does not depend on `threads`).
pub fn run_seeds(start: u64, count: u64, mutation: Mutation, threads: usize) -> Figures {
    let threads = threads.max(1) as u64;
    let mut parts: Vec<Vec<SeedReport>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..count)
                        .filter(|i| i % threads == t)
                        .map(|i| run_seed(start + i, mutation, false))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panic in a seed is a bug: let it through.
            parts.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
    });
    let mut all: Vec<SeedReport> = parts.into_iter().flatten().collect();
    all.sort_by_key(|r| r.seed);
    let mut f = Figures::default();
    for r in all {
        f.add(r);
    }
    f
}
