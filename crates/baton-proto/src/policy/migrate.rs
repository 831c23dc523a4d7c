//! When the task should run on the remote side.
//!
//! Owns [`MigratePolicy`] and the built-in [`Migrate`]. A migration only
//! happens at a point and only while a session is open; this module only
//! answers "should it run remotely now?".

use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use super::{parse_duration, ParsePolicyError, PolicyContext, ShowDuration};
use crate::roles::Side;
use crate::state::Point;

/// Decides whether the task should run on the remote side.
///
/// Asked by the local stub at every point it learns of and when a session
/// opens. Answering `true` while the local side executes migrates the task at
/// the next point; answering `false` while the remote executes migrates it
/// back. A user's "migrate back" overrides the policy until "migrate".
pub trait MigratePolicy: fmt::Debug + Send + Sync {
    /// Should the task run on the remote side now?
    fn wants_remote(&self, ctx: &PolicyContext<'_>) -> bool;

    /// When the answer may next change, so that a batch of steps does not
    /// run past it: at the latest at this point, or after this much more
    /// time. Default: no bound (the batch's own interval bounds it).
    fn horizon(&self, _ctx: &PolicyContext<'_>) -> Horizon {
        Horizon::default()
    }
}

/// Where a migration policy may next change its answer (see
/// [`MigratePolicy::horizon`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Horizon {
    /// At this point.
    pub point: Option<Point>,
    /// After this much more time.
    pub within: Option<Duration>,
}

/// The built-in migration policies (`--migrate`). Default: `start`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Migrate {
    /// Run remotely from the start (as soon as a session is open).
    #[default]
    Start,
    /// Never migrate.
    Never,
    /// Migrate at point N (or the first point after it with a session).
    AtPoint(Point),
    /// Migrate at the first point after the task has run this long.
    After(Duration),
    /// Decide from measurements; see [`AutoMigrate`].
    Auto(AutoMigrate),
}

/// The `auto` migration rule.
///
/// Migrate at a point once **all** hold:
/// 1. the task has run at least `min_local` (short tasks finish locally,
///    where moving would cost more than it saves);
/// 2. the remote is not known to be slower: if both step times are measured
///    (after an earlier migration), the remote's step time times
///    `min_speedup` must not exceed the local one;
/// 3. moving is cheap relative to the work already done: the estimated time
///    to send a full checkpoint is at most a quarter of the time run so far
///    (unknown sizes count as cheap).
#[derive(Clone, Debug, PartialEq)]
pub struct AutoMigrate {
    /// Minimum local run time before migrating. Default 1 s.
    pub min_local: Duration,
    /// How much faster the remote must be once measured. Default 1.2.
    pub min_speedup: f64,
}

impl Default for AutoMigrate {
    fn default() -> AutoMigrate {
        AutoMigrate {
            min_local: Duration::from_secs(1),
            min_speedup: 1.2,
        }
    }
}

impl MigratePolicy for AutoMigrate {
    fn wants_remote(&self, ctx: &PolicyContext<'_>) -> bool {
        if ctx.elapsed < self.min_local {
            // Once remote, stay unless measurements say otherwise.
            return ctx.executor == Side::Remote;
        }
        let m = ctx.measured;
        if let (Some(local), Some(remote)) = (m.local_step, m.remote_step) {
            if remote.as_secs_f64() * self.min_speedup > local.as_secs_f64() {
                return false;
            }
        }
        if ctx.executor == Side::Local {
            if let Some(t) = m.full_bytes.and_then(|b| m.transfer_time(b)) {
                if t > ctx.elapsed / 4 {
                    return false;
                }
            }
        }
        true
    }
}

impl MigratePolicy for Migrate {
    fn wants_remote(&self, ctx: &PolicyContext<'_>) -> bool {
        match self {
            Migrate::Start => true,
            Migrate::Never => false,
            Migrate::AtPoint(n) => ctx.point >= *n,
            Migrate::After(d) => ctx.elapsed >= *d,
            Migrate::Auto(a) => a.wants_remote(ctx),
        }
    }

    fn horizon(&self, ctx: &PolicyContext<'_>) -> Horizon {
        match self {
            Migrate::AtPoint(n) if ctx.point < *n => Horizon {
                point: Some(*n),
                within: None,
            },
            Migrate::After(d) if ctx.elapsed < *d => Horizon {
                point: None,
                within: Some(*d - ctx.elapsed),
            },
            Migrate::Auto(a) if ctx.elapsed < a.min_local => Horizon {
                point: None,
                within: Some(a.min_local - ctx.elapsed),
            },
            _ => Horizon::default(),
        }
    }
}

impl FromStr for Migrate {
    type Err = ParsePolicyError;

    /// Parses `start`, `never`, `auto`, `point:N` or `after:DURATION`.
    fn from_str(s: &str) -> Result<Migrate, ParsePolicyError> {
        let err = || {
            ParsePolicyError::new(
                "--migrate",
                s,
                "start, never, auto, point:N or after:DURATION",
            )
        };
        match s {
            "start" => Ok(Migrate::Start),
            "never" => Ok(Migrate::Never),
            "auto" => Ok(Migrate::Auto(AutoMigrate::default())),
            _ => {
                if let Some(n) = s.strip_prefix("point:") {
                    n.parse()
                        .map(|n| Migrate::AtPoint(Point(n)))
                        .map_err(|_| err())
                } else if let Some(d) = s.strip_prefix("after:") {
                    parse_duration(d).map(Migrate::After).map_err(|_| err())
                } else {
                    Err(err())
                }
            }
        }
    }
}

impl fmt::Display for Migrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Migrate::Start => f.write_str("start"),
            Migrate::Never => f.write_str("never"),
            Migrate::AtPoint(n) => write!(f, "point:{n}"),
            Migrate::After(d) => write!(f, "after:{}", ShowDuration(*d)),
            Migrate::Auto(_) => f.write_str("auto"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timing;
    use crate::policy::Measurements;

    fn ctx<'a>(t: &'a Timing, m: &'a Measurements, elapsed: u64, point: u64) -> PolicyContext<'a> {
        PolicyContext {
            elapsed: Duration::from_millis(elapsed),
            point: Point(point),
            executor: Side::Local,
            responsible: Side::Local,
            since_change: Duration::ZERO,
            timing: t,
            measured: m,
        }
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "start",
            "never",
            "auto",
            "point:7",
            "after:250ms",
            "after:2s",
        ] {
            let m: Migrate = s.parse().unwrap_or(Migrate::Never);
            assert_eq!(m.to_string(), s);
        }
        assert!("point:x".parse::<Migrate>().is_err());
        assert!("later".parse::<Migrate>().is_err());
    }

    #[test]
    fn simple_rules() {
        let t = Timing::default();
        let m = Measurements::default();
        assert!(Migrate::Start.wants_remote(&ctx(&t, &m, 0, 0)));
        assert!(!Migrate::Never.wants_remote(&ctx(&t, &m, 9999, 99)));
        assert!(!Migrate::AtPoint(Point(5)).wants_remote(&ctx(&t, &m, 0, 4)));
        assert!(Migrate::AtPoint(Point(5)).wants_remote(&ctx(&t, &m, 0, 5)));
        assert!(Migrate::After(Duration::from_secs(1)).wants_remote(&ctx(&t, &m, 1000, 0)));
    }

    #[test]
    fn auto_rule() {
        let t = Timing::default();
        let mut m = Measurements::default();
        let auto = AutoMigrate::default();
        assert!(!auto.wants_remote(&ctx(&t, &m, 500, 3)), "too early");
        assert!(
            auto.wants_remote(&ctx(&t, &m, 1500, 9)),
            "long task, nothing known"
        );
        m.local_step = Some(Duration::from_millis(100));
        m.remote_step = Some(Duration::from_millis(90));
        assert!(
            !auto.wants_remote(&ctx(&t, &m, 1500, 9)),
            "remote not 1.2x faster"
        );
        m.remote_step = Some(Duration::from_millis(50));
        assert!(auto.wants_remote(&ctx(&t, &m, 1500, 9)));
        m.full_bytes = Some(1 << 30);
        m.bandwidth = Some(1 << 20);
        assert!(
            !auto.wants_remote(&ctx(&t, &m, 1500, 9)),
            "1 GiB at 1 MiB/s is too dear"
        );
    }
}
