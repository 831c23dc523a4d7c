//! Who continues executing if the connection is lost.
//!
//! Owns [`ResponsibilityPolicy`], the built-in [`Responsible`] and the `auto`
//! [`CostModel`]. The answer only matters while the remote executes: when the
//! local side executes, it is the natural holder of the freshest state and
//! the cost model always answers "local".

use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use super::{ParsePolicyError, PolicyContext};
use crate::roles::Side;

/// Decides which side is responsible for a given executor.
pub trait ResponsibilityPolicy: fmt::Debug + Send + Sync {
    /// The side that should be responsible if `executor` executes.
    fn choose(&self, ctx: &PolicyContext<'_>, executor: Side) -> Side;
}

/// The built-in responsibility policies (`--responsible`). Default: `auto`.
#[derive(Clone, Debug, PartialEq)]
pub enum Responsible {
    /// The local side is always responsible (the remote stops when the link
    /// drops; the local continues from the newest state it holds).
    Local,
    /// The remote side is always responsible (it keeps executing when the
    /// link drops; the local takes over only after `takeover-after`).
    Remote,
    /// Decide with the [`CostModel`].
    Auto(CostModel),
}

impl Default for Responsible {
    fn default() -> Responsible {
        Responsible::Auto(CostModel::default())
    }
}

/// The `auto` responsibility cost model.
///
/// When the local side executes, it is responsible. When the remote
/// executes, the model compares the expected fraction of time lost under
/// each choice, from what was measured (`T` = time run so far + `prior`):
///
/// ```text
/// local responsible (sync: every step waits for the local's durable ack)
///   sync      = (rtt + delta_bytes / bandwidth) / remote_step
///   failover  = outages / T × disconnect_after
///   slowdown  = outage_time / T × max(0, local_step / remote_step − 1)
///   cost_local = sync + failover + slowdown
///
/// remote responsible (async: nothing waits; the local takes over only if
/// the remote stays away past takeover-after)
///   cost_remote = takeovers / T × (takeover_after + rtt
///                 + delta_bytes / bandwidth + remote_step)
/// ```
///
/// and picks the cheaper side. Unknown figures use neutral guesses (rtt 50
/// ms, 10 MB/s, 100 ms steps, deltas a tenth of a full checkpoint). To avoid
/// flapping, a change away from the current holder needs the other side to
/// be cheaper by the factor `hysteresis`, and never happens within
/// `min_dwell` of the previous change. The remote is trusted until it fails:
/// with no takeover yet, the remote is responsible (push a task to a big
/// box, walk away, come back); each time the local side had to take over,
/// local responsibility becomes more attractive, the more so the cheaper
/// syncing is.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    /// Virtual run time added to `T` so that the first outage does not
    /// dominate. Default 60 s.
    pub prior: Duration,
    /// Factor by which the other choice must be cheaper to switch. Default 1.25.
    pub hysteresis: f64,
    /// Minimum time between two changes. Default 10 s.
    pub min_dwell: Duration,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            prior: Duration::from_secs(60),
            hysteresis: 1.25,
            min_dwell: Duration::from_secs(10),
        }
    }
}

impl CostModel {
    /// The two costs `(local, remote)` as fractions of run time, for a
    /// remote executor.
    pub fn costs(&self, ctx: &PolicyContext<'_>) -> (f64, f64) {
        let m = ctx.measured;
        let t = (ctx.elapsed + self.prior).as_secs_f64().max(1e-3);
        let remote_step = m
            .remote_step
            .or(m.local_step)
            .unwrap_or(Duration::from_millis(100));
        let rs = remote_step.as_secs_f64().max(1e-6);
        let ls = m.local_step.map_or(rs, |d| d.as_secs_f64());
        let rtt = m.rtt.unwrap_or(Duration::from_millis(50)).as_secs_f64();
        let bw = m.bandwidth.filter(|b| *b > 0).unwrap_or(10_000_000) as f64;
        let delta = m.delta_bytes.or(m.full_bytes.map(|b| b / 10)).unwrap_or(0) as f64;
        let ship = rtt + delta / bw;

        let sync = ship / rs;
        let failover = f64::from(m.outages) / t * ctx.timing.disconnect_after.as_secs_f64();
        let slowdown = m.outage_time.as_secs_f64() / t * (ls / rs - 1.0).max(0.0);
        let cost_local = sync + failover + slowdown;

        let fail_rate = f64::from(m.takeovers) / t;
        let cost_remote = fail_rate * (ctx.timing.takeover_after.as_secs_f64() + ship + rs);
        (cost_local, cost_remote)
    }
}

impl ResponsibilityPolicy for CostModel {
    fn choose(&self, ctx: &PolicyContext<'_>, executor: Side) -> Side {
        if executor == Side::Local {
            return Side::Local;
        }
        let (local, remote) = self.costs(ctx);
        if ctx.executor != executor {
            // A new executor: no history to be sticky about; ties go remote.
            return if local < remote {
                Side::Local
            } else {
                Side::Remote
            };
        }
        let current = ctx.responsible;
        if ctx.since_change < self.min_dwell {
            return current;
        }
        let (mine, other) = match current {
            Side::Local => (local, remote),
            Side::Remote => (remote, local),
        };
        if other * self.hysteresis < mine {
            current.other()
        } else {
            current
        }
    }
}

impl ResponsibilityPolicy for Responsible {
    fn choose(&self, ctx: &PolicyContext<'_>, executor: Side) -> Side {
        match self {
            Responsible::Local => Side::Local,
            Responsible::Remote => Side::Remote,
            Responsible::Auto(m) => m.choose(ctx, executor),
        }
    }
}

impl FromStr for Responsible {
    type Err = ParsePolicyError;

    /// Parses `local`, `remote` or `auto`.
    fn from_str(s: &str) -> Result<Responsible, ParsePolicyError> {
        match s {
            "local" => Ok(Responsible::Local),
            "remote" => Ok(Responsible::Remote),
            "auto" => Ok(Responsible::default()),
            _ => Err(ParsePolicyError::new(
                "--responsible",
                s,
                "local, remote or auto",
            )),
        }
    }
}

impl fmt::Display for Responsible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Responsible::Local => "local",
            Responsible::Remote => "remote",
            Responsible::Auto(_) => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timing;
    use crate::policy::Measurements;
    use crate::state::Point;

    fn ctx<'a>(t: &'a Timing, m: &'a Measurements, resp: Side, dwell: u64) -> PolicyContext<'a> {
        PolicyContext {
            elapsed: Duration::from_secs(100),
            point: Point(10),
            executor: Side::Remote,
            responsible: resp,
            since_change: Duration::from_secs(dwell),
            timing: t,
            measured: m,
        }
    }

    #[test]
    fn parses() {
        assert_eq!("local".parse(), Ok(Responsible::Local));
        assert_eq!("remote".parse(), Ok(Responsible::Remote));
        assert_eq!("auto".parse(), Ok(Responsible::default()));
        assert!("both".parse::<Responsible>().is_err());
    }

    #[test]
    fn auto_defaults_to_remote_and_learns_from_takeovers() {
        let t = Timing::default();
        let mut m = Measurements::default();
        let model = CostModel::default();
        assert_eq!(
            model.choose(&ctx(&t, &m, Side::Remote, 100), Side::Local),
            Side::Local
        );
        // Fast link, slow steps: syncing is cheap; but with no failures the
        // remote is still the better holder.
        m.rtt = Some(Duration::from_millis(1));
        m.remote_step = Some(Duration::from_secs(2));
        assert_eq!(
            model.choose(&ctx(&t, &m, Side::Remote, 100), Side::Remote),
            Side::Remote
        );
        // The remote keeps disappearing: the local becomes responsible…
        m.takeovers = 20;
        assert_eq!(
            model.choose(&ctx(&t, &m, Side::Remote, 100), Side::Remote),
            Side::Local
        );
        // …but not within the dwell time of the previous change.
        assert_eq!(
            model.choose(&ctx(&t, &m, Side::Remote, 1), Side::Remote),
            Side::Remote
        );
    }
}
