//! Timers as data.
//!
//! Owns [`Timers`]: a small table with one optional deadline per
//! [`Timer`] kind. A stub sets and clears deadlines; its `poll_timeout` is the
//! earliest one; the driver sleeps until then and calls `handle_timeout`. This
//! module never reads a clock.

use crate::time::Time;

/// The kinds of deadline a stub keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Next heartbeat to send.
    Heartbeat = 0,
    /// The session is lost if nothing is heard by then.
    Idle,
    /// Local: resend `Hello`.
    Hello,
    /// Local: take over from an absent responsible remote.
    Takeover,
    /// Resend the checkpoint in flight.
    Ship,
    /// Local: resend the proposal.
    Propose,
    /// Remote: resend unacknowledged output.
    Output,
    /// Local: stop waiting for a session at point 0.
    StartWait,
    /// Local: resend the module.
    Module,
}

const COUNT: usize = 9;

/// The set of deadlines that passed, from [`Timers::take_expired`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fired(u16);

impl Fired {
    pub(crate) fn has(self, timer: Timer) -> bool {
        self.0 & (1 << timer as usize) != 0
    }
}

/// One optional deadline per [`Timer`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    at: [Option<Time>; COUNT],
}

impl Timers {
    pub(crate) fn set(&mut self, timer: Timer, at: Time) {
        self.at[timer as usize] = Some(at);
    }

    /// Sets the deadline unless an earlier one is already set.
    pub(crate) fn set_if_later(&mut self, timer: Timer, at: Time) {
        if self.at[timer as usize].is_none_or(|t| t > at) {
            self.at[timer as usize] = Some(at);
        }
    }

    pub(crate) fn clear(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// True (and cleared) if the deadline has passed.
    #[cfg(test)]
    pub(crate) fn expired(&mut self, timer: Timer, now: Time) -> bool {
        match self.at[timer as usize] {
            Some(t) if t <= now => {
                self.at[timer as usize] = None;
                true
            }
            _ => false,
        }
    }

    /// Clears every deadline that has passed and returns which ones did,
    /// so that no expired deadline can linger (and spin the driver).
    pub(crate) fn take_expired(&mut self, now: Time) -> Fired {
        let mut fired = Fired(0);
        for (i, at) in self.at.iter_mut().enumerate() {
            if at.is_some_and(|t| t <= now) {
                *at = None;
                fired.0 |= 1 << i;
            }
        }
        fired
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Time> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_and_expiry() {
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Idle, Time::from_nanos(50));
        t.set(Timer::Heartbeat, Time::from_nanos(20));
        t.set_if_later(Timer::Heartbeat, Time::from_nanos(30));
        assert_eq!(t.next(), Some(Time::from_nanos(20)));
        assert!(!t.expired(Timer::Idle, Time::from_nanos(49)));
        assert!(t.expired(Timer::Heartbeat, Time::from_nanos(20)));
        t.set(Timer::Ship, Time::from_nanos(5));
        let fired = t.take_expired(Time::from_nanos(10));
        assert!(fired.has(Timer::Ship) && !fired.has(Timer::Idle));
        assert_eq!(t.next(), Some(Time::from_nanos(50)));
        t.clear(Timer::Idle);
        assert_eq!(t.next(), None);
    }
}
