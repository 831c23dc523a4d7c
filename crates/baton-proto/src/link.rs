//! One session with the peer: sequence numbers, liveness, round trips.
//!
//! Owns [`Session`]: the session id, when the peer was last heard, the newest
//! summary it sent (older ones are ignored), and the echo bookkeeping that
//! measures the round-trip time without comparing clocks. It decides nothing
//! about tasks; the stubs do.

use core::time::Duration;

use crate::message::{Echo, Summary};
use crate::roles::SessionId;
use crate::time::Time;

const SENT_RING: usize = 16;

/// The state of one session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The session id (minted by the local side).
    pub(crate) id: SessionId,
    /// Local: the `Welcome` arrived. Remote: always true.
    pub(crate) established: bool,
    /// When the peer was last heard in this session.
    pub(crate) last_heard: Time,
    /// The newest summary the peer sent, if any.
    pub(crate) peer: Option<Summary>,
    /// When `peer` was received.
    pub(crate) peer_at: Time,
    peer_seq: u64,
    my_seq: u64,
    sent: [(u64, Time); SENT_RING],
    last_received: Option<(u64, Time)>,
}

impl Session {
    pub(crate) fn new(id: SessionId, now: Time, established: bool) -> Session {
        Session {
            id,
            established,
            last_heard: now,
            peer: None,
            peer_at: now,
            peer_seq: 0,
            my_seq: 0,
            sent: [(0, Time::ZERO); SENT_RING],
            last_received: None,
        }
    }

    /// The sequence number for the next summary we send.
    pub(crate) fn next_seq(&mut self, now: Time) -> u64 {
        self.my_seq += 1;
        self.sent[(self.my_seq as usize) % SENT_RING] = (self.my_seq, now);
        self.my_seq
    }

    /// An echo of the newest peer summary, for the peer's RTT.
    pub(crate) fn echo(&self, now: Time) -> Option<Echo> {
        self.last_received.map(|(seq, at)| Echo {
            seq,
            held_nanos: crate::time::nanos(now.saturating_since(at)),
        })
    }

    /// Records a summary from the peer. Returns whether it is newer than the
    /// last one (older ones are stale and ignored, unless fencing is
    /// disabled), and an RTT sample if the echo allows one.
    pub(crate) fn on_summary(
        &mut self,
        now: Time,
        seq: u64,
        echo: Option<Echo>,
        summary: &Summary,
        no_fencing: bool,
    ) -> (bool, Option<Duration>) {
        self.last_heard = now;
        let mut rtt = None;
        if let Some(e) = echo {
            let (s, at) = self.sent[(e.seq as usize) % SENT_RING];
            if s == e.seq && e.seq != 0 {
                let total = now.saturating_since(at);
                rtt = Some(total.saturating_sub(Duration::from_nanos(e.held_nanos)));
            }
        }
        if seq <= self.peer_seq && !no_fencing {
            return (false, rtt);
        }
        self.peer_seq = self.peer_seq.max(seq);
        self.last_received = Some((seq, now));
        self.peer = Some(summary.clone());
        self.peer_at = now;
        (true, rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ExecStatus;
    use crate::roles::{Assignment, Epoch, Mode};
    use crate::state::Point;

    fn summary() -> Summary {
        Summary {
            epoch: Epoch(0),
            assignment: Assignment::local(Mode::Async),
            durable: None,
            reached: None,
            exec: ExecStatus::Idle,
            quiesce: None,
            quiesced: None,
            output: Point(0),
            finished: None,
            has_module: false,
            draining: false,
            step_nanos: 0,
        }
    }

    #[test]
    fn orders_summaries_and_measures_rtt() {
        let t = |ms: u64| Time::from_nanos(ms * 1_000_000);
        let mut s = Session::new(SessionId(1), t(0), true);
        let seq = s.next_seq(t(10));
        let echo = Echo {
            seq,
            held_nanos: 5_000_000,
        };
        let (fresh, rtt) = s.on_summary(t(40), 3, Some(echo), &summary(), false);
        assert!(fresh);
        assert_eq!(rtt, Some(Duration::from_millis(25)));
        let (fresh, _) = s.on_summary(t(41), 2, None, &summary(), false);
        assert!(!fresh, "older summary ignored");
        assert_eq!(s.echo(t(50)).map(|e| e.seq), Some(3));
    }
}
