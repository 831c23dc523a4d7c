//! Time as a plain value.
//!
//! Owns [`Time`], the protocol's notion of "now". The crate never reads a
//! clock: every input carries the current time as a parameter, and every
//! deadline a stub wants is returned as data (`poll_timeout`). This module must
//! not touch `std::time::Instant` or any other clock.

use core::fmt;
use core::ops::Add;
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on the driver's monotonic clock, in nanoseconds from an origin the
/// driver chooses (for example the moment it started).
///
/// Only differences between two `Time`s taken from the same driver mean
/// anything; the two stubs of a task never compare their clocks.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(u64);

impl Time {
    /// The origin of the driver's clock.
    pub const ZERO: Time = Time(0);

    /// A time `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    /// Adds a duration, saturating at the end of time rather than overflowing.
    fn add(self, rhs: Duration) -> Time {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(nanos))
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.0 / 1_000_000_000,
            (self.0 % 1_000_000_000) / 1000
        )
    }
}

/// Converts a duration to whole nanoseconds, saturating (for the wire).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_nanos(u64::MAX - 5);
        assert_eq!((t + Duration::from_secs(1)).as_nanos(), u64::MAX);
        assert_eq!(Time::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(
            Time::from_nanos(1_500).saturating_since(Time::from_nanos(500)),
            Duration::from_nanos(1_000)
        );
    }

    #[test]
    fn debug_is_seconds() {
        assert_eq!(
            format!("{:?}", Time::from_nanos(1_234_567_890)),
            "1.234567s"
        );
    }
}
