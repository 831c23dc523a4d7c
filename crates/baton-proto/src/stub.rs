//! What the two stubs have in common: one side of one task.
//!
//! Owns [`StubCore`]: the output queues (actions, transmits, events), the
//! timers, the side's executor status, its durable state and the persistence
//! queue, the lineage memory, the current session and the outgoing state
//! stream. It offers mechanisms ("run from here", "persist this", "send
//! that"); the policy of when to use them lives in `local.rs` and
//! `remote.rs`. No IO and no clock here either.

use core::time::Duration;
use std::collections::VecDeque;

use crate::config::{Mutations, SyncEvery, Timing};
use crate::journal::{PersistRequest, Record, StateWrite};
use crate::lineage::Lineage;
use crate::link::Session;
use crate::message::{ExecStatus, Message};
use crate::output::{newest, Action, Batch, Event, Transmit};
use crate::policy::{Horizon, Measurements};
use crate::roles::{SessionId, Side};
use crate::shipping::Shipper;
use crate::state::{Blob, Digest, OutputChunk, Point, StateRef};
use crate::time::Time;
use crate::timer::Timers;

/// What the side's executor is doing, as far as the stub knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exec {
    /// Not executing.
    Idle,
    /// Running the step after `from` since `since`.
    Running { from: StateRef, since: Time },
    /// Paused at `at` since `since`.
    Paused { at: StateRef, since: Time },
}

/// The shared machinery of a stub.
#[derive(Debug)]
pub(crate) struct StubCore {
    pub(crate) side: Side,
    pub(crate) mutations: Mutations,
    pub(crate) timing: Timing,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) timers: Timers,
    pub(crate) exec: Exec,
    /// Newest point this side's executor reached since it last started.
    pub(crate) reached: Option<StateRef>,
    /// Newest state the store durably holds.
    pub(crate) durable: Option<StateRef>,
    /// Newest state the store will hold once the queued writes complete.
    pub(crate) store_newest: Option<StateRef>,
    next_seq: u64,
    done_seq: u64,
    writes: VecDeque<(u64, StateRef)>,
    pub(crate) lineage: Lineage,
    pub(crate) session: Option<Session>,
    pub(crate) link_up: bool,
    pub(crate) ship: Shipper,
    pub(crate) measured: Measurements,
    /// Mean step time of this side's executor.
    pub(crate) my_step: Option<Duration>,
    /// How often this side syncs while it executes.
    pub(crate) sync_every: SyncEvery,
    /// Mean cost of a sync: the pause between reaching a point and running
    /// on (persisting, capturing, waiting for the peer).
    pub(crate) sync_cost: Option<Duration>,
    /// A yield was asked of the batch in flight.
    yielded: bool,
    /// A divergence was seen: (point, local digest, remote digest).
    pub(crate) divergence: Option<(Point, Digest, Digest)>,
}

impl StubCore {
    pub(crate) fn new(side: Side, timing: Timing, mutations: Mutations, window: usize) -> StubCore {
        StubCore {
            side,
            mutations,
            timing,
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: Timers::default(),
            exec: Exec::Idle,
            reached: None,
            durable: None,
            store_newest: None,
            next_seq: 0,
            done_seq: 0,
            writes: VecDeque::new(),
            lineage: Lineage::new(window),
            session: None,
            link_up: false,
            ship: Shipper::default(),
            measured: Measurements::default(),
            my_step: None,
            sync_every: SyncEvery::default(),
            sync_cost: None,
            yielded: false,
            divergence: None,
        }
    }

    // ----- persistence -------------------------------------------------

    /// Queues a write; returns its sequence number.
    pub(crate) fn persist(
        &mut self,
        record: Record,
        state: Option<StateWrite>,
        output: Vec<OutputChunk>,
        module: Option<Blob>,
    ) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(w) = &state {
            self.writes.push_back((seq, w.state()));
        }
        self.actions
            .push_back(Action::Persist(Box::new(PersistRequest {
                seq,
                record,
                state,
                output,
                module,
            })));
        seq
    }

    /// The newest state once `extra` is written too (for a record written
    /// together with `extra`).
    pub(crate) fn durable_with(&self, extra: Option<StateRef>) -> Option<StateRef> {
        newest(self.store_newest, extra)
    }

    /// Notes that `extra` is about to be written (call after `persist`).
    pub(crate) fn note_write(&mut self, extra: StateRef) {
        self.store_newest = newest(self.store_newest, Some(extra));
    }

    /// The driver reports writes through `seq` durable. Returns the states
    /// that became durable.
    pub(crate) fn on_persisted(&mut self, seq: u64) -> Vec<StateRef> {
        if seq > self.next_seq {
            return Vec::new(); // not ours (a driver bug); ignore
        }
        self.done_seq = self.done_seq.max(seq);
        let mut done = Vec::new();
        while let Some(&(s, state)) = self.writes.front() {
            if s > self.done_seq {
                break;
            }
            self.writes.pop_front();
            self.durable = newest(self.durable, Some(state));
            done.push(state);
        }
        done
    }

    /// Is write `seq` durable?
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        seq <= self.done_seq
    }

    /// Is `state` (or something newer) durable here?
    pub(crate) fn holds_durably(&self, state: StateRef) -> bool {
        self.durable == Some(state) || self.durable.is_some_and(|d| d.point > state.point)
    }

    // ----- executor ----------------------------------------------------

    /// Runs from `from`: a batch bounded by `horizon` (one step if `None`).
    pub(crate) fn run(&mut self, now: Time, from: StateRef, horizon: Option<Horizon>) {
        self.ship.cancel_capture();
        let batch = self.batch(horizon);
        self.actions.push_back(Action::Run { from, batch });
        self.exec = Exec::Running { from, since: now };
        self.yielded = false;
        self.reached = newest(self.reached, Some(from));
    }

    /// Runs on from the point the executor is paused at: a batch bounded
    /// by `horizon` (one step if `None`), as long as the sync interval
    /// allows with the pause just ended counted in.
    pub(crate) fn cont(&mut self, now: Time, horizon: Option<Horizon>) {
        if let Exec::Paused { at, since } = self.exec {
            self.sync_cost = Measurements::ewma(self.sync_cost, now.saturating_since(since));
            let batch = self.batch(horizon);
            self.actions.push_back(Action::Continue { batch });
            self.exec = Exec::Running {
                from: at,
                since: now,
            };
            self.yielded = false;
        }
    }

    /// A batch of steps as long as the sync interval allows (a single
    /// step until a sync was measured, or with an interval of zero), ending
    /// at `horizon`'s point and within its time; one step without a
    /// horizon.
    fn batch(&self, horizon: Option<Horizon>) -> Batch {
        let Some(h) = horizon else {
            return Batch::ONE;
        };
        let interval = self.sync_every.interval(self.sync_cost);
        Batch {
            budget: h.within.map_or(interval, |w| w.min(interval)),
            stop_at: h.point,
        }
    }

    /// Ends the batch in flight at its next point (once per batch).
    pub(crate) fn yield_now(&mut self) {
        if self.running() && !self.yielded {
            self.yielded = true;
            self.actions.push_back(Action::Yield);
        }
    }

    pub(crate) fn stop(&mut self) {
        if self.exec != Exec::Idle {
            self.actions.push_back(Action::Stop);
            self.exec = Exec::Idle;
        }
        self.ship.cancel_capture();
    }

    /// The executor reached `state`; returns the mean duration of the
    /// batch's steps if known.
    pub(crate) fn on_reached(&mut self, now: Time, state: StateRef) -> Option<Duration> {
        let step = match self.exec {
            Exec::Running { since, from } => {
                let steps = state.point.steps_since(from.point).max(1);
                Some(now.saturating_since(since) / u32::try_from(steps).unwrap_or(u32::MAX))
            }
            _ => None,
        };
        if let Some(d) = step {
            self.my_step = Measurements::ewma(self.my_step, d);
        }
        self.exec = Exec::Paused {
            at: state,
            since: now,
        };
        self.reached = newest(self.reached, Some(state));
        step
    }

    pub(crate) fn paused_at(&self) -> Option<StateRef> {
        match self.exec {
            Exec::Paused { at, .. } => Some(at),
            _ => None,
        }
    }

    pub(crate) fn running(&self) -> bool {
        matches!(self.exec, Exec::Running { .. })
    }

    pub(crate) fn exec_status(&self) -> ExecStatus {
        match self.exec {
            Exec::Idle => ExecStatus::Idle,
            Exec::Running { from, .. } => ExecStatus::Running { from: from.point },
            Exec::Paused { at, .. } => ExecStatus::Paused { at },
        }
    }

    /// The newest state this side can run from or ship right now.
    pub(crate) fn newest_held(&self) -> Option<StateRef> {
        newest(self.durable, self.paused_at())
    }

    /// Asks the executor for a checkpoint of `state` for the peer.
    pub(crate) fn capture(&mut self, state: StateRef) {
        let base = self.ship.start_capture(state);
        self.actions.push_back(Action::Capture { state, base });
    }

    // ----- session -----------------------------------------------------

    /// The established session's id.
    pub(crate) fn live_session(&self) -> Option<SessionId> {
        self.session
            .as_ref()
            .filter(|s| s.established)
            .map(|s| s.id)
    }

    pub(crate) fn live(&self) -> bool {
        self.live_session().is_some()
    }

    /// Does a message of session `id` belong to the live session?
    pub(crate) fn current(&self, id: SessionId) -> bool {
        self.live_session() == Some(id) || (self.mutations.no_fencing() && self.live())
    }

    pub(crate) fn send(&mut self, msg: Message) {
        self.transmits.push_back(Transmit::new(msg));
    }

    // ----- lineage -----------------------------------------------------

    /// Remembers a state; a conflicting digest is a divergence.
    pub(crate) fn note(&mut self, state: StateRef) {
        if let Some(mine) = self.lineage.record(state) {
            self.diverge(state.point, mine, state.digest);
        }
    }

    /// Checks a state the peer reports without remembering it.
    pub(crate) fn check(&mut self, state: Option<StateRef>) {
        if let Some(s) = state {
            if let Some(mine) = self.lineage.conflict(s) {
                self.diverge(s.point, mine, s.digest);
            }
        }
    }

    fn diverge(&mut self, point: Point, mine: Digest, theirs: Digest) {
        if self.divergence.is_some() {
            return;
        }
        let (local, remote) = match self.side {
            Side::Local => (mine, theirs),
            Side::Remote => (theirs, mine),
        };
        self.divergence = Some((point, local, remote));
        self.events.push_back(Event::Divergence {
            point,
            local,
            remote,
        });
    }
}
