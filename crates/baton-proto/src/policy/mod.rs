//! Policies: when to migrate, who is responsible, which mode.
//!
//! Owns the three small pluggable decisions of the protocol, each a trait
//! with a documented default implementation, plus the [`Measurements`] they
//! read. Policies are pure functions of a [`PolicyContext`]: they never send,
//! persist or read a clock. The local stub asks them at points and when a
//! session opens, and turns a changed answer into a new agreement.
//!
//! | decision | trait | built-in | CLI |
//! |---|---|---|---|
//! | run remotely? | [`MigratePolicy`] | [`Migrate`] | `--migrate start\|never\|point:N\|after:DUR\|auto` |
//! | who continues on disconnection | [`ResponsibilityPolicy`] | [`Responsible`] | `--responsible local\|remote\|auto` |
//! | how state flows | [`ModePolicy`] | [`ModeChoice`] | `--mode sync\|async\|auto` |

mod migrate;
mod mode;
mod responsibility;

use core::fmt;
use core::time::Duration;

use thiserror::Error;

use crate::config::Timing;
use crate::roles::Side;
use crate::state::Point;

pub use migrate::{AutoMigrate, Horizon, Migrate, MigratePolicy};
pub use mode::{ModeChoice, ModePolicy};
pub use responsibility::{CostModel, ResponsibilityPolicy, Responsible};

/// What the local stub has measured so far, for the policies.
///
/// Every figure is an exponentially weighted mean (weight 1/4 for a new
/// sample) or a count; `None` means "not measured yet".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurements {
    /// Mean wall time of a step on the local side.
    pub local_step: Option<Duration>,
    /// Mean wall time of a step on the remote side (as it reports).
    pub remote_step: Option<Duration>,
    /// Smoothed round-trip time of the link.
    pub rtt: Option<Duration>,
    /// Mean size of a full checkpoint, in bytes.
    pub full_bytes: Option<u64>,
    /// Mean size of a delta checkpoint, in bytes.
    pub delta_bytes: Option<u64>,
    /// Bandwidth seen for checkpoints, in bytes per second.
    pub bandwidth: Option<u64>,
    /// Number of disconnections so far.
    pub outages: u32,
    /// Total length of the disconnections that ended so far.
    pub outage_time: Duration,
    /// Number of times the local side took over from an absent remote.
    pub takeovers: u32,
}

impl Measurements {
    pub(crate) fn ewma(old: Option<Duration>, sample: Duration) -> Option<Duration> {
        Some(match old {
            None => sample,
            Some(o) => (o * 3 + sample) / 4,
        })
    }

    pub(crate) fn ewma_u64(old: Option<u64>, sample: u64) -> Option<u64> {
        Some(match old {
            None => sample,
            Some(o) => o / 4 * 3 + sample / 4,
        })
    }

    /// Estimated time to move `bytes` over the link (one way), if known.
    pub fn transfer_time(&self, bytes: u64) -> Option<Duration> {
        let bw = self.bandwidth.filter(|b| *b > 0)?;
        let rtt = self.rtt.unwrap_or_default();
        Some(rtt / 2 + Duration::from_secs_f64(bytes as f64 / bw as f64))
    }
}

/// Everything a policy may look at.
#[derive(Clone, Copy, Debug)]
pub struct PolicyContext<'a> {
    /// Time since the local stub was created (or recovered).
    pub elapsed: Duration,
    /// The newest point known to the local side.
    pub point: Point,
    /// The current executor.
    pub executor: Side,
    /// The currently responsible side.
    pub responsible: Side,
    /// Time since responsibility last changed.
    pub since_change: Duration,
    /// The task's timing settings.
    pub timing: &'a Timing,
    /// What was measured.
    pub measured: &'a Measurements,
}

/// A policy string that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {what} `{input}`: expected {expected}")]
pub struct ParsePolicyError {
    what: &'static str,
    input: String,
    expected: &'static str,
}

impl ParsePolicyError {
    pub(crate) fn new(what: &'static str, input: &str, expected: &'static str) -> Self {
        ParsePolicyError {
            what,
            input: input.to_owned(),
            expected,
        }
    }
}

/// Parses a duration as written on baton's command line: a number followed
/// by `ns`, `us`, `ms`, `s`, `m` or `h` (for example `250ms`, `2s`, `1.5m`).
///
/// # Errors
///
/// [`ParsePolicyError`] if the number or the unit is missing or invalid.
pub fn parse_duration(input: &str) -> Result<Duration, ParsePolicyError> {
    let err = || ParsePolicyError::new("duration", input, "a number with ns, us, ms, s, m or h");
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| err())
}

/// Formats a duration the way [`parse_duration`] reads it.
pub(crate) struct ShowDuration(pub Duration);

impl fmt::Display for ShowDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) && ms > 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("1e999s").is_err());
        assert_eq!(ShowDuration(Duration::from_secs(2)).to_string(), "2s");
        assert_eq!(
            ShowDuration(Duration::from_millis(250)).to_string(),
            "250ms"
        );
    }
}
