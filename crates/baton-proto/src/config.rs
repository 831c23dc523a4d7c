//! How a stub is set up: timing, policies, identity.
//!
//! Owns [`Timing`], [`LocalConfig`] and [`RemoteConfig`], with their
//! documented defaults, and the simulator's [`Mutations`]. Plain data; no
//! behaviour beyond defaults.

use core::time::Duration;
use std::sync::Arc;

use crate::message::{ModuleRef, TaskId, WireTiming};
use crate::policy::{
    Migrate, MigratePolicy, ModeChoice, ModePolicy, ResponsibilityPolicy, Responsible,
};
use crate::state::Blob;
use crate::time::nanos;

/// Timing of a task's protocol (`--disconnect-after`, `--takeover-after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// No message from the peer for this long ⇒ disconnected. Default 2 s.
    pub disconnect_after: Duration,
    /// When the remote is responsible and stays away this long after the
    /// disconnection was detected, the local side takes over. Default 30 s.
    pub takeover_after: Duration,
    /// Interval between heartbeats. Default: a quarter of
    /// `disconnect_after`, so that three lost heartbeats in a row are
    /// tolerated.
    pub heartbeat: Duration,
    /// When the migration policy wants the remote at point 0, how long the
    /// local side waits for a session before it starts running locally.
    /// Default 2 s.
    pub start_wait: Duration,
}

impl Timing {
    /// Timing with the given disconnection and takeover delays and the
    /// default heartbeat (a quarter of `disconnect_after`) and start wait.
    pub fn new(disconnect_after: Duration, takeover_after: Duration) -> Timing {
        Timing {
            disconnect_after,
            takeover_after,
            heartbeat: (disconnect_after / 4).max(Duration::from_millis(1)),
            start_wait: Duration::from_secs(2),
        }
    }

    pub(crate) fn wire(&self) -> WireTiming {
        WireTiming {
            heartbeat_nanos: nanos(self.heartbeat).max(1),
            disconnect_after_nanos: nanos(self.disconnect_after).max(1),
        }
    }

    pub(crate) fn from_wire(w: WireTiming) -> Timing {
        // A hostile or silly peer must not make us spin or never time out:
        // keep the values in a sane range.
        let clamp = |n: u64| {
            Duration::from_nanos(n).clamp(Duration::from_millis(1), Duration::from_secs(3600))
        };
        Timing {
            disconnect_after: clamp(w.disconnect_after_nanos),
            heartbeat: clamp(w.heartbeat_nanos),
            ..Timing::default()
        }
    }
}

impl Default for Timing {
    fn default() -> Timing {
        Timing::new(Duration::from_secs(2), Duration::from_secs(30))
    }
}

/// How often a side that executes syncs: persists (and, with a peer,
/// ships) a point (`--sync-every`). The points in between are run through
/// in one batch ([`crate::Batch`]) and never captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncEvery {
    /// At most this often; zero syncs at every point.
    Interval(Duration),
    /// Often enough that syncing costs about 5 % of the run: the interval is
    /// 19 times what a sync was measured to cost (the pause between a point
    /// and the next step: persisting, capturing, waiting for the peer), up
    /// to `max`.
    Auto {
        /// The longest interval.
        max: Duration,
    },
}

impl SyncEvery {
    /// The longest interval `auto` chooses: the most a sync-mode failover
    /// or a Ctrl-C waits for, beyond one step.
    pub const AUTO_MAX: Duration = Duration::from_millis(250);

    /// How long to run before syncing, given the measured cost of a sync.
    pub fn interval(self, cost: Option<Duration>) -> Duration {
        match self {
            SyncEvery::Interval(d) => d,
            SyncEvery::Auto { max } => cost.map_or(Duration::ZERO, |c| (c * 19).min(max)),
        }
    }
}

impl Default for SyncEvery {
    fn default() -> SyncEvery {
        SyncEvery::Auto {
            max: SyncEvery::AUTO_MAX,
        }
    }
}

impl core::fmt::Display for SyncEvery {
    /// As `--sync-every` takes it: `auto` (its maximum is fixed) or a
    /// duration.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SyncEvery::Auto { .. } => f.write_str("auto"),
            SyncEvery::Interval(d) if d.is_zero() => f.write_str("0"),
            SyncEvery::Interval(d) => write!(f, "{}", crate::policy::ShowDuration(*d)),
        }
    }
}

impl core::str::FromStr for SyncEvery {
    type Err = crate::policy::ParsePolicyError;

    /// Parses `auto` or a duration (`0`, `50ms`, `1s`).
    fn from_str(s: &str) -> Result<SyncEvery, Self::Err> {
        if s == "auto" {
            return Ok(SyncEvery::default());
        }
        if s == "0" {
            return Ok(SyncEvery::Interval(Duration::ZERO));
        }
        crate::policy::parse_duration(s)
            .map(SyncEvery::Interval)
            .map_err(|_| {
                crate::policy::ParsePolicyError::new(
                    "--sync-every",
                    s,
                    "auto or a duration such as 100ms (0: every point)",
                )
            })
    }
}

/// Configuration of a [`crate::LocalStub`].
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The task's id.
    pub task: TaskId,
    /// The task's module (digest and size).
    pub module: ModuleRef,
    /// The module's bytes, sent to a remote that lacks them.
    pub module_bytes: Blob,
    /// Timing.
    pub timing: Timing,
    /// When to run remotely. Default [`Migrate::Start`].
    pub migrate: Arc<dyn MigratePolicy>,
    /// Who is responsible. Default [`Responsible::Auto`].
    pub responsible: Arc<dyn ResponsibilityPolicy>,
    /// Which mode. Default [`ModeChoice::Auto`].
    pub mode: Arc<dyn ModePolicy>,
    /// Stream state to the remote while the local side executes, so that a
    /// migration only sends a small delta (pre-copy). Default true.
    pub precopy: bool,
    /// Opaque bytes sent in `Hello` for the remote driver (limits, …).
    pub hello_meta: Blob,
    /// How often this side syncs while it executes. Default `auto`.
    pub sync_every: SyncEvery,
    /// How many recent (point, digest) pairs to remember for divergence
    /// checks. Default 4096.
    pub lineage_window: usize,
    /// Deliberate bugs, for the simulator only.
    #[cfg(feature = "sim")]
    pub mutations: Mutations,
}

impl LocalConfig {
    /// A configuration with every default.
    pub fn new(task: TaskId, module: ModuleRef, module_bytes: Blob) -> LocalConfig {
        LocalConfig {
            task,
            module,
            module_bytes,
            timing: Timing::default(),
            migrate: Arc::new(Migrate::Start),
            responsible: Arc::new(Responsible::default()),
            mode: Arc::new(ModeChoice::Auto),
            precopy: true,
            hello_meta: Blob::default(),
            sync_every: SyncEvery::default(),
            lineage_window: 4096,
            #[cfg(feature = "sim")]
            mutations: Mutations::default(),
        }
    }

    pub(crate) fn mutations(&self) -> Mutations {
        #[cfg(feature = "sim")]
        return self.mutations;
        #[cfg(not(feature = "sim"))]
        Mutations::default()
    }
}

/// Configuration of a [`crate::RemoteStub`].
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The task's id (from the `Hello` that created it).
    pub task: TaskId,
    /// The task's module (from the `Hello`).
    pub module: ModuleRef,
    /// The agent already holds the module (it is content-addressed).
    pub has_module: bool,
    /// How many recent (point, digest) pairs to remember. Default 4096.
    pub lineage_window: usize,
    /// How often this side syncs while it executes (the client's
    /// `--sync-every`, passed in the `Hello`'s metadata). Default `auto`.
    pub sync_every: SyncEvery,
    /// Deliberate bugs, for the simulator only.
    #[cfg(feature = "sim")]
    pub mutations: Mutations,
}

impl RemoteConfig {
    /// A configuration with every default.
    pub fn new(task: TaskId, module: ModuleRef, has_module: bool) -> RemoteConfig {
        RemoteConfig {
            task,
            module,
            has_module,
            lineage_window: 4096,
            sync_every: SyncEvery::default(),
            #[cfg(feature = "sim")]
            mutations: Mutations::default(),
        }
    }

    pub(crate) fn mutations(&self) -> Mutations {
        #[cfg(feature = "sim")]
        return self.mutations;
        #[cfg(not(feature = "sim"))]
        Mutations::default()
    }
}

/// Deliberate protocol bugs that the simulator switches on to prove it can
/// see them (`sim --mutate …`). Without the `sim` feature this type is empty
/// and every switch is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Ignore sessions and epochs: accept stale messages as current.
    #[cfg(feature = "sim")]
    pub no_fencing: bool,
    /// Acknowledge a received state before it is durable.
    #[cfg(feature = "sim")]
    pub ack_before_durable: bool,
    /// Accept a delta whatever its base.
    #[cfg(feature = "sim")]
    pub no_base_check: bool,
}

#[cfg(feature = "sim")]
impl Mutations {
    pub(crate) fn no_fencing(self) -> bool {
        self.no_fencing
    }
    pub(crate) fn ack_before_durable(self) -> bool {
        self.ack_before_durable
    }
    pub(crate) fn no_base_check(self) -> bool {
        self.no_base_check
    }
}

#[cfg(not(feature = "sim"))]
impl Mutations {
    pub(crate) fn no_fencing(self) -> bool {
        false
    }
    pub(crate) fn ack_before_durable(self) -> bool {
        false
    }
    pub(crate) fn no_base_check(self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_every_parses_and_prints_as_the_command_line_writes_it() {
        for (text, every) in [
            ("auto", SyncEvery::default()),
            ("0", SyncEvery::Interval(Duration::ZERO)),
            ("50ms", SyncEvery::Interval(Duration::from_millis(50))),
            ("2s", SyncEvery::Interval(Duration::from_secs(2))),
        ] {
            assert_eq!(text.parse::<SyncEvery>(), Ok(every), "{text}");
            assert_eq!(every.to_string(), text);
        }
        assert!("often".parse::<SyncEvery>().is_err());
        assert!("-1s".parse::<SyncEvery>().is_err());
    }

    #[test]
    fn auto_runs_nineteen_times_a_sync_up_to_its_maximum() {
        let auto = SyncEvery::default();
        assert_eq!(auto.interval(None), Duration::ZERO);
        assert_eq!(
            auto.interval(Some(Duration::from_millis(2))),
            Duration::from_millis(38)
        );
        assert_eq!(
            auto.interval(Some(Duration::from_secs(1))),
            SyncEvery::AUTO_MAX
        );
        let fixed = SyncEvery::Interval(Duration::from_millis(7));
        assert_eq!(
            fixed.interval(Some(Duration::from_secs(1))),
            Duration::from_millis(7)
        );
    }
}
