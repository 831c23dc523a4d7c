//! The outgoing state stream: which checkpoint is in flight, and when to
//! send it again.
//!
//! Owns [`Shipper`]: at most one checkpoint in flight to the peer at a time
//! (newer points that arrive meanwhile are coalesced: the next one sent is
//! the newest at that moment), what the peer durably holds (the base for the
//! next delta), and retransmission with exponential backoff. It never decides
//! *whether* state should flow; the stubs do, by mode.

use core::time::Duration;

use crate::message::{CheckpointMsg, Message};
use crate::output::{point_of, reaches, Transmit};
use crate::policy::Measurements;
use crate::roles::SessionId;
use crate::state::{Checkpoint, StateRef};
use crate::time::Time;

#[derive(Clone, Debug)]
struct InFlight {
    cp: Checkpoint,
    first_sent: Time,
    attempts: u32,
    deadline: Time,
}

/// The outgoing checkpoint stream of one side.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shipper {
    /// The newest state the peer durably holds, as it told us in this session.
    pub(crate) peer_durable: Option<StateRef>,
    in_flight: Option<InFlight>,
    capturing: Option<StateRef>,
}

impl Shipper {
    /// Forgets everything about the peer (a new session or a lost one). A
    /// checkpoint in flight is dropped: the next one is captured against
    /// what the peer says it holds.
    pub(crate) fn reset(&mut self) {
        self.peer_durable = None;
        self.in_flight = None;
    }

    /// A capture was asked of the executor and not answered yet.
    pub(crate) fn capturing(&self) -> Option<StateRef> {
        self.capturing
    }

    /// Nothing in flight and nothing being captured.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight.is_none() && self.capturing.is_none()
    }

    /// Should `state` be sent now? Only if nothing is in flight and the peer
    /// does not already hold it or something newer.
    pub(crate) fn wants(&self, state: StateRef) -> bool {
        self.idle() && self.peer_durable.is_none_or(|d| d.point < state.point)
    }

    /// Starts a capture of `state`; returns the base to ask for.
    pub(crate) fn start_capture(&mut self, state: StateRef) -> Option<StateRef> {
        self.capturing = Some(state);
        self.peer_durable
    }

    /// Drops a capture that is no longer wanted (the executor was stopped).
    pub(crate) fn cancel_capture(&mut self) {
        self.capturing = None;
    }

    /// The executor answered a capture: send it, if still useful.
    pub(crate) fn on_captured(
        &mut self,
        cp: Checkpoint,
        now: Time,
        session: Option<SessionId>,
        m: &mut Measurements,
    ) -> Option<Transmit> {
        if self.capturing != Some(cp.state) {
            return None;
        }
        self.capturing = None;
        let session = session?;
        // A delta is only useful against what the peer holds now.
        if cp.base.is_some() && cp.base != self.peer_durable {
            return None;
        }
        if self.peer_durable.is_some_and(|d| d.point >= cp.state.point) {
            return None;
        }
        let bytes = cp.bytes.len() as u64;
        if cp.base.is_some() {
            m.delta_bytes = Measurements::ewma_u64(m.delta_bytes, bytes);
        } else {
            m.full_bytes = Measurements::ewma_u64(m.full_bytes, bytes);
        }
        let deadline = now + rto(bytes, m, 0);
        let msg = Message::Checkpoint(CheckpointMsg {
            session,
            checkpoint: cp.clone(),
        });
        self.in_flight = Some(InFlight {
            cp,
            first_sent: now,
            attempts: 0,
            deadline,
        });
        Some(Transmit::new(msg))
    }

    /// The peer told us (ack or summary) what it durably holds.
    pub(crate) fn on_peer_durable(
        &mut self,
        durable: Option<StateRef>,
        now: Time,
        m: &mut Measurements,
    ) {
        if durable.is_some() && point_of(durable) >= point_of(self.peer_durable) {
            self.peer_durable = durable;
        }
        let Some(f) = &self.in_flight else { return };
        if reaches(self.peer_durable, f.cp.state.point) {
            // Delivered. One bandwidth sample per checkpoint that was not
            // resent (resends make the timing ambiguous).
            if f.attempts == 0 {
                let took = now.saturating_since(f.first_sent);
                let rtt = m.rtt.unwrap_or_default();
                let transfer = took.saturating_sub(rtt).max(Duration::from_micros(100));
                let bw = (f.cp.bytes.len() as f64 / transfer.as_secs_f64()) as u64;
                if f.cp.bytes.len() >= 4 << 10 {
                    m.bandwidth = Measurements::ewma_u64(m.bandwidth, bw);
                }
            }
            self.in_flight = None;
        } else if f.cp.base.is_some() && f.cp.base != self.peer_durable {
            // The peer holds something else than our delta's base: the
            // delta is useless; the next capture uses the right base.
            self.in_flight = None;
        }
    }

    /// The retransmission deadline.
    pub(crate) fn deadline(&self) -> Option<Time> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// Resends the checkpoint in flight if its deadline passed.
    pub(crate) fn on_timer(
        &mut self,
        now: Time,
        session: Option<SessionId>,
        m: &Measurements,
    ) -> Option<Transmit> {
        let session = session?;
        let f = self.in_flight.as_mut()?;
        if f.deadline > now {
            return None;
        }
        f.attempts += 1;
        f.deadline = now + rto(f.cp.bytes.len() as u64, m, f.attempts);
        Some(Transmit::new(Message::Checkpoint(CheckpointMsg {
            session,
            checkpoint: f.cp.clone(),
        })))
    }
}

/// Retransmission timeout for a checkpoint of `bytes`: generous, because
/// over a reliable transport a resend is pure waste (it queues behind the
/// first copy); it exists for links that lose messages. Until the bandwidth
/// is measured it assumes a slow link (100 kB/s). Doubles with every
/// attempt, at most 30 s.
fn rto(bytes: u64, m: &Measurements, attempts: u32) -> Duration {
    let rtt = m.rtt.unwrap_or(Duration::from_millis(100));
    let bw = m.bandwidth.filter(|b| *b > 0).unwrap_or(100_000) as f64;
    let transfer = Duration::from_secs_f64(bytes as f64 / bw);
    let base = rtt * 4 + transfer * 2 + Duration::from_millis(200);
    (base * 2u32.saturating_pow(attempts.min(8))).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Blob, Digest, Point};

    fn s(p: u64) -> StateRef {
        StateRef::new(Point(p), Digest([p as u8; 32]))
    }

    #[test]
    fn one_in_flight_and_acks() {
        let mut sh = Shipper::default();
        let mut m = Measurements::default();
        let now = Time::from_nanos(0);
        assert!(sh.wants(s(1)));
        assert_eq!(sh.start_capture(s(1)), None);
        assert!(!sh.wants(s(2)), "capturing");
        let cp = Checkpoint {
            state: s(1),
            base: None,
            bytes: Blob::from(vec![0; 10]),
        };
        assert!(sh
            .on_captured(cp, now, Some(SessionId(1)), &mut m)
            .is_some());
        assert!(
            sh.on_timer(now, Some(SessionId(1)), &m).is_none(),
            "not yet"
        );
        let later = Time::from_nanos(60_000_000_000);
        assert!(
            sh.on_timer(later, Some(SessionId(1)), &m).is_some(),
            "resent"
        );
        sh.on_peer_durable(Some(s(1)), later, &mut m);
        assert!(sh.idle());
        assert!(!sh.wants(s(1)));
        assert!(sh.wants(s(2)));
    }

    #[test]
    fn stale_base_is_dropped() {
        let mut sh = Shipper::default();
        let mut m = Measurements::default();
        let now = Time::from_nanos(0);
        sh.on_peer_durable(Some(s(1)), now, &mut m);
        assert_eq!(sh.start_capture(s(3)), Some(s(1)));
        let cp = Checkpoint {
            state: s(3),
            base: Some(s(1)),
            bytes: Blob::from(vec![1]),
        };
        assert!(sh
            .on_captured(cp, now, Some(SessionId(1)), &mut m)
            .is_some());
        sh.on_peer_durable(Some(s(2)), now, &mut m);
        assert!(sh.idle(), "peer holds #2, not our base #1");
    }
}
