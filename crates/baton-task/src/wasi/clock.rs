//! The task's clocks: virtual by default, the real clock on request.
//!
//! This file owns the clock rule and nothing else (no memory access, no
//! descriptors). The rule, which makes every reading deterministic:
//!
//! * the virtual clock is `(start_realtime_ns, elapsed_ns)`, part of the
//!   task state; `elapsed_ns` starts at 0 when the task is created;
//! * `monotonic`, `process_cputime_id` and `thread_cputime_id` read
//!   `elapsed_ns`; `realtime` reads `start_realtime_ns + elapsed_ns`;
//! * every `clock_time_get` returns the current reading and then advances
//!   `elapsed_ns` by [`TICK_NS`] (1 µs), so that timing loops make progress and
//!   two consecutive readings always differ; the first reading of `realtime`
//!   is exactly `start_realtime_ns`;
//! * `poll_oneoff` with clock subscriptions (sleep) advances `elapsed_ns` to
//!   the earliest deadline instead of waiting;
//! * the resolution of every clock is [`TICK_NS`];
//! * file timestamps are the current `realtime` reading, without advancing.
//!
//! With [`ClockMode::Wall`](super::ClockMode::Wall) readings come from the
//! machine's clocks and `poll_oneoff` really sleeps; output may then differ
//! between runs and after failover.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::abi::{clockid, Errno, WasiResult};

/// How far `elapsed_ns` advances at every `clock_time_get` (1 µs).
pub const TICK_NS: u64 = 1_000;

/// The virtual clock, part of the task state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VirtualClock {
    /// `realtime` at creation, nanoseconds since the Unix epoch.
    pub(crate) start_realtime_ns: u64,
    /// Virtual nanoseconds elapsed since creation.
    pub(crate) elapsed_ns: u64,
}

impl VirtualClock {
    /// A clock at `start_realtime_ns` with no time elapsed.
    pub(crate) fn new(start_realtime_ns: u64) -> Self {
        VirtualClock {
            start_realtime_ns,
            elapsed_ns: 0,
        }
    }

    /// Current `realtime` reading, without advancing.
    pub(crate) fn realtime(&self) -> u64 {
        self.start_realtime_ns.saturating_add(self.elapsed_ns)
    }
}

/// The real clocks, used only in wall-clock mode. Not part of the state.
#[derive(Debug)]
pub(crate) struct WallClock {
    anchor: Instant,
    /// Monotonic reading at `anchor`, so that monotonic time continues from
    /// the virtual clock's value instead of jumping backwards.
    base_ns: u64,
}

impl WallClock {
    /// Starts counting monotonic time from `base_ns`.
    pub(crate) fn new(base_ns: u64) -> Self {
        WallClock {
            anchor: Instant::now(),
            base_ns,
        }
    }

    /// Nanoseconds since the Unix epoch (0 if the system clock is before it).
    pub(crate) fn realtime() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Monotonic nanoseconds.
    pub(crate) fn monotonic(&self) -> u64 {
        let e = u64::try_from(self.anchor.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.base_ns.saturating_add(e)
    }
}

/// The clocks as one host call sees them: the state's virtual clock and,
/// in wall-clock mode, the real one.
pub(crate) struct Clocks<'a> {
    pub(crate) virt: &'a mut VirtualClock,
    pub(crate) wall: Option<&'a WallClock>,
}

/// Checks a clock id (`EINVAL` for an unknown one).
fn check_id(id: u32) -> WasiResult<()> {
    match id {
        clockid::REALTIME
        | clockid::MONOTONIC
        | clockid::PROCESS_CPUTIME
        | clockid::THREAD_CPUTIME => Ok(()),
        _ => Err(Errno::Inval),
    }
}

impl Clocks<'_> {
    /// `clock_res_get`.
    pub(crate) fn resolution(&self, id: u32) -> WasiResult<u64> {
        check_id(id)?;
        Ok(if self.wall.is_some() { 1 } else { TICK_NS })
    }

    /// `clock_time_get`: the reading, then (virtual mode) one tick forward.
    pub(crate) fn time_get(&mut self, id: u32) -> WasiResult<u64> {
        check_id(id)?;
        if let Some(w) = self.wall {
            return Ok(if id == clockid::REALTIME {
                WallClock::realtime()
            } else {
                w.monotonic()
            });
        }
        let now = if id == clockid::REALTIME {
            self.virt.realtime()
        } else {
            self.virt.elapsed_ns
        };
        self.virt.elapsed_ns = self.virt.elapsed_ns.saturating_add(TICK_NS);
        Ok(now)
    }

    /// Current time for file timestamps (never advances the clock).
    pub(crate) fn fs_now(&self) -> u64 {
        match self.wall {
            Some(_) => WallClock::realtime(),
            None => self.virt.realtime(),
        }
    }

    /// Current monotonic time, the time base of `poll_oneoff` deadlines.
    pub(crate) fn monotonic_now(&self) -> u64 {
        match self.wall {
            Some(w) => w.monotonic(),
            None => self.virt.elapsed_ns,
        }
    }

    /// The monotonic deadline of a clock subscription.
    pub(crate) fn deadline(&self, id: u32, timeout: u64, absolute: bool) -> WasiResult<u64> {
        check_id(id)?;
        let now = self.monotonic_now();
        if !absolute {
            return Ok(now.saturating_add(timeout));
        }
        if id != clockid::REALTIME {
            return Ok(timeout);
        }
        let real_now = self.fs_now();
        Ok(now.saturating_add(timeout.saturating_sub(real_now)))
    }

    /// Lets time pass until the monotonic clock reads at least `deadline`:
    /// instantly on the virtual clock, by sleeping on the real one.
    pub(crate) fn wait_until(&mut self, deadline: u64) {
        match self.wall {
            Some(w) => {
                let now = w.monotonic();
                if deadline > now {
                    std::thread::sleep(Duration::from_nanos(deadline - now));
                }
            }
            None => self.virt.elapsed_ns = self.virt.elapsed_ns.max(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_readings_follow_the_rule() {
        let mut v = VirtualClock::new(1_000_000_000);
        let mut c = Clocks {
            virt: &mut v,
            wall: None,
        };
        assert_eq!(c.time_get(clockid::REALTIME), Ok(1_000_000_000));
        assert_eq!(c.time_get(clockid::MONOTONIC), Ok(TICK_NS));
        assert_eq!(c.time_get(clockid::PROCESS_CPUTIME), Ok(2 * TICK_NS));
        assert_eq!(
            c.time_get(clockid::REALTIME),
            Ok(1_000_000_000 + 3 * TICK_NS)
        );
        assert_eq!(c.fs_now(), 1_000_000_000 + 4 * TICK_NS);
        assert_eq!(c.fs_now(), 1_000_000_000 + 4 * TICK_NS);
        assert_eq!(c.time_get(4), Err(Errno::Inval));
        assert_eq!(c.resolution(clockid::MONOTONIC), Ok(TICK_NS));
        assert_eq!(c.resolution(9), Err(Errno::Inval));
    }

    #[test]
    fn deadlines_and_waiting() {
        let mut v = VirtualClock::new(5_000);
        v.elapsed_ns = 100;
        let mut c = Clocks {
            virt: &mut v,
            wall: None,
        };
        assert_eq!(c.deadline(clockid::MONOTONIC, 50, false), Ok(150));
        assert_eq!(c.deadline(clockid::MONOTONIC, 50, true), Ok(50));
        // realtime now = 5_100; absolute 6_000 is 900 ns away.
        assert_eq!(c.deadline(clockid::REALTIME, 6_000, true), Ok(1_000));
        c.wait_until(1_000);
        assert_eq!(c.monotonic_now(), 1_000);
        c.wait_until(10);
        assert_eq!(c.monotonic_now(), 1_000);
    }
}
