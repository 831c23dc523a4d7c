//! The local stub: `baton run`'s end of one task, and the coordinator.
//!
//! Owns [`LocalStub`]. The local side creates the task, delivers its output
//! to the user exactly once and in order, and is the only side that mints
//! epochs: every change of executor or responsibility is a reconfiguration
//! it runs (quiesce both executors at a point, pick the newest state as the
//! anchor, make sure the sides that need it hold it, propose, and adopt on
//! the remote's durable acceptance). While disconnected it continues if it is
//! responsible, and takes over after `takeover-after` if the remote is.
//! Like every stub it is a pure state machine: no IO, no clock.

use core::time::Duration;
use std::collections::BTreeMap;

use crate::config::LocalConfig;
use crate::input::{ExecutorEvent, LinkEvent};
use crate::journal::{LocalRecord, Record, StateWrite};
use crate::link::Session;
use crate::message::{
    ErrorCode, ErrorMsg, ExecStatus, Finish, Goodbye, Heartbeat, Hello, Message, ModuleData,
    Proposal, Summary,
};
use crate::output::{newest, point_of, reaches, Action, Event, Transmit};
use crate::policy::{Horizon, Measurements, PolicyContext};
use crate::roles::{Agreement, Assignment, Epoch, Mode, SessionId, Side};
use crate::state::{Blob, Checkpoint, Outcome, OutputChunk, Point, StateRef};
use crate::stub::{Exec, StubCore};
use crate::time::{nanos, Time};
use crate::timer::{Fired, Timer};

/// Most out-of-order output chunks kept while waiting for a gap to fill.
mod reconfig;

use reconfig::{Phase, Reconfig};

const MAX_BUFFERED_OUTPUT: usize = 4096;

/// The local end of one task's protocol.
///
/// Create it with [`LocalStub::new`] when the task is created (its state at
/// point 0 is always restorable: the driver can re-create it), or with
/// [`LocalStub::recover`] for `baton resume`. See the crate documentation
/// for the drive loop.
#[derive(Debug)]
pub struct LocalStub {
    core: StubCore,
    cfg: LocalConfig,
    agreed: Agreement,
    takeover: bool,
    /// The agreement in the newest queued record (a takeover being written).
    agreed_requested: Agreement,
    minted: u64,
    /// A proposal persisted (or being persisted) and not known accepted.
    pending: Option<Proposal>,
    reconfig: Option<Reconfig>,
    /// A session id minted and being persisted before its `Hello`.
    hello_pending: Option<(u64, SessionId)>,
    /// The current session had an agreement (a new session always needs one).
    session_agreed: bool,
    /// Highest epoch the remote is known to have agreed to.
    peer_floor: Epoch,
    peer_reached: Option<StateRef>,
    delivered: Point,
    out_buffer: BTreeMap<Point, Blob>,
    /// A checkpoint from the remote waiting for its output to arrive first.
    held_cp: Option<Checkpoint>,
    incoming: Option<(u64, StateRef)>,
    started: Time,
    disconnected_at: Option<Time>,
    outage_start: Option<Time>,
    takeover_seq: Option<u64>,
    finished: Option<Finish>,
    finish_requested: Option<(u64, Finish)>,
    remote_finish: Option<Finish>,
    pinned_local: bool,
    force_remote: bool,
    last_change: Time,
    summary_dirty: bool,
    module_sent: bool,
    start_wait_over: bool,
    ever_ran: bool,
    point_event: Point,
    error_sent: bool,
    /// Deadlines that passed in this update.
    fired: Fired,
    /// The remote last said it is draining (kept after its session ends).
    peer_draining: bool,
}

impl LocalStub {
    /// A stub for a task just created at `initial` (point 0).
    pub fn new(cfg: LocalConfig, now: Time, initial: StateRef) -> LocalStub {
        let mode = cfg.mode.choose(Side::Local, Side::Local);
        let agreed = Agreement {
            epoch: Epoch(0),
            assignment: Assignment::local(mode),
            anchor: Some(initial),
        };
        let mut s = LocalStub::blank(cfg, now, agreed);
        s.core.durable = Some(initial);
        s.core.store_newest = Some(initial);
        s.core.note(initial);
        let ctx_wants_remote = {
            let ctx = s.ctx(now);
            s.cfg.migrate.wants_remote(&ctx)
        };
        if ctx_wants_remote && !s.cfg.timing.start_wait.is_zero() {
            s.core
                .timers
                .set(Timer::StartWait, now + s.cfg.timing.start_wait);
        } else {
            s.start_wait_over = true;
        }
        s.update(now);
        s
    }

    /// A stub restored from its journal (`baton resume`): the last record,
    /// and the newest point whose output was delivered to the user. The
    /// store must hold `record.durable`.
    pub fn recover(
        cfg: LocalConfig,
        now: Time,
        record: LocalRecord,
        delivered: Point,
    ) -> LocalStub {
        let mut s = LocalStub::blank(cfg, now, record.agreement);
        s.takeover = record.takeover;
        s.minted = record.minted;
        s.pending = record.pending;
        s.core.durable = record.durable;
        s.core.store_newest = record.durable;
        if let Some(d) = record.durable {
            s.core.note(d);
        }
        s.pinned_local = record.pinned_local;
        s.delivered = delivered;
        s.start_wait_over = true;
        s.ever_ran = true;
        if let Some(f) = record.finished {
            s.core.actions.push_back(Action::Finish {
                state: Some(f.state),
                outcome: f.outcome.clone(),
            });
            s.finished = Some(f);
        }
        s.update(now);
        s
    }

    fn blank(cfg: LocalConfig, now: Time, agreed: Agreement) -> LocalStub {
        let mut core = StubCore::new(Side::Local, cfg.timing, cfg.mutations(), cfg.lineage_window);
        core.sync_every = cfg.sync_every;
        LocalStub {
            core,
            cfg,
            agreed,
            takeover: false,
            agreed_requested: agreed,
            minted: 0,
            pending: None,
            reconfig: None,
            hello_pending: None,
            session_agreed: false,
            peer_floor: Epoch(0),
            peer_reached: None,
            delivered: Point(0),
            out_buffer: BTreeMap::new(),
            held_cp: None,
            incoming: None,
            started: now,
            disconnected_at: None,
            outage_start: None,
            takeover_seq: None,
            finished: None,
            finish_requested: None,
            remote_finish: None,
            pinned_local: false,
            force_remote: false,
            last_change: now,
            summary_dirty: false,
            module_sent: false,
            start_wait_over: false,
            ever_ran: false,
            point_event: Point(0),
            error_sent: false,
            fired: Fired::default(),
            peer_draining: false,
        }
    }

    // ----- getters -------------------------------------------------------

    /// The agreement in force (or the takeover this side made alone).
    pub fn agreement(&self) -> Agreement {
        self.agreed
    }

    /// Whether the remote, as last heard (in this session or the one just
    /// lost), said it is draining: shutting down and handing its tasks back.
    pub fn peer_draining(&self) -> bool {
        self.peer_draining
    }

    /// True if the agreement in force is a takeover made alone.
    pub fn is_takeover(&self) -> bool {
        self.takeover
    }

    /// The newest state this side holds durably.
    pub fn durable(&self) -> Option<StateRef> {
        self.core.durable
    }

    /// Output delivered to the user through this point.
    pub fn delivered(&self) -> Point {
        self.delivered
    }

    /// True while this side's executor is running or paused at a point.
    pub fn is_executing(&self) -> bool {
        self.core.exec != Exec::Idle
    }

    /// The task finished (everything delivered).
    pub fn finished(&self) -> Option<&Finish> {
        self.finished.as_ref()
    }

    /// The live session, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.core.live_session()
    }

    /// What was measured so far.
    pub fn measurements(&self) -> &Measurements {
        &self.core.measured
    }

    /// Whether the executor currently waits for the peer at every point
    /// (`Some(Mode::Sync)`), streams without waiting (`Some(Mode::Async)`),
    /// or runs alone without a session (`None`).
    pub fn flow(&self) -> Option<Mode> {
        self.core.live().then_some(self.agreed.assignment.mode)
    }

    // ----- user commands --------------------------------------------------

    /// The user asks the task to run on `to` (`Remote`: migrate now, even
    /// if the policy would wait; `Local`: migrate back and stay local until
    /// asked again). Takes effect at the next point with a session.
    pub fn migrate(&mut self, now: Time, to: Side) {
        self.pinned_local = to == Side::Local;
        self.force_remote = to == Side::Remote;
        let rec = self.record(self.core.store_newest);
        self.core.persist(rec, None, Vec::new(), None);
        self.update(now);
    }

    // ----- inputs ---------------------------------------------------------

    /// A decoded message from the remote side.
    pub fn handle_message(&mut self, now: Time, msg: Message) {
        if let Message::Welcome(w) = &msg {
            self.peer_draining = w.summary.draining;
            self.on_welcome(now, w.session, w.seq, w.echo, &w.summary);
            self.update(now);
            return;
        }
        if !self.core.current(msg.session()) {
            return; // another session: stale
        }
        self.heard(now);
        match msg {
            Message::Heartbeat(h) => {
                self.peer_draining = h.summary.draining;
                self.on_summary(now, h.seq, h.echo, &h.summary)
            }
            Message::Goodbye(_) => self.lose_session(now, false),
            Message::Checkpoint(c) => {
                // The sender holds what it sends: never ship it back.
                let sent = Some(c.checkpoint.state);
                self.core
                    .ship
                    .on_peer_durable(sent, now, &mut self.core.measured);
                self.on_checkpoint(c.checkpoint)
            }
            Message::Ack(a) => {
                self.core
                    .ship
                    .on_peer_durable(a.durable, now, &mut self.core.measured)
            }
            Message::Output(o) => {
                for c in o.chunks {
                    self.deliver(c.point, c.bytes);
                }
                if let Some(cp) = self.held_cp.take() {
                    self.on_checkpoint(cp);
                }
            }
            Message::Accept(a) => {
                let no_fencing = self.core.mutations.no_fencing();
                self.peer_floor = self.peer_floor.max(a.epoch);
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.epoch == a.epoch || no_fencing)
                {
                    self.adopt_pending(now);
                }
            }
            Message::Reject(r) => {
                if self.pending.as_ref().is_some_and(|p| p.epoch == r.epoch) {
                    self.pending = None;
                    let rec = self.record(self.core.store_newest);
                    self.core.persist(rec, None, Vec::new(), None);
                    self.core.timers.clear(Timer::Propose);
                    if let Some(rc) = &mut self.reconfig {
                        rc.phase = Phase::Prepare;
                    }
                }
            }
            Message::Finished(f) => {
                self.core.check(Some(f.finish.state));
                self.remote_finish = Some(f.finish);
            }
            Message::Error(e) => self.core.events.push_back(Event::PeerError {
                code: e.code,
                text: e.text,
            }),
            // Only the local side sends these.
            Message::Hello(_) | Message::Welcome(_) | Message::Module(_) | Message::Propose(_) => {}
        }
        self.update(now);
    }

    /// News from the executor.
    pub fn handle_executor(&mut self, now: Time, ev: ExecutorEvent) {
        match ev {
            ExecutorEvent::Reached { state, output } => {
                if self.core.running() {
                    self.on_point(now, state, output);
                }
            }
            ExecutorEvent::Finished {
                state,
                output,
                outcome,
            } => {
                if self.core.running() {
                    self.on_point(now, state, output);
                    self.core.exec = Exec::Idle;
                    self.request_finish(Finish { state, outcome });
                }
            }
            ExecutorEvent::Failed {
                at,
                kind,
                reason,
                output,
            } => {
                if self.core.running() {
                    self.core.exec = Exec::Idle;
                    for chunk in output {
                        self.deliver(chunk.point, chunk.bytes);
                    }
                    self.request_finish(Finish {
                        state: at,
                        outcome: Outcome::Failed { kind, reason },
                    });
                }
            }
            ExecutorEvent::CaptureFailed { state } => {
                if self.core.ship.capturing() == Some(state) {
                    self.core.ship.cancel_capture();
                }
            }
            ExecutorEvent::Captured(cp) => {
                let session = self.core.live_session();
                if let Some(t) =
                    self.core
                        .ship
                        .on_captured(cp, now, session, &mut self.core.measured)
                {
                    self.core.transmits.push_back(t);
                }
            }
        }
        self.update(now);
    }

    /// The driver made writes through `seq` durable.
    pub fn handle_persisted(&mut self, now: Time, seq: u64) {
        for s in self.core.on_persisted(seq) {
            self.core.note(s);
        }
        if self.incoming.is_some_and(|(s, _)| self.core.is_durable(s)) {
            self.incoming = None;
            self.ack();
        }
        if let Some(s) = self.takeover_seq {
            if self.core.is_durable(s) {
                self.takeover_seq = None;
                self.agreed = self.agreed_requested;
                self.takeover = true;
                self.core.measured.takeovers += 1;
                self.last_change = now;
                let a = self.agreed;
                self.core.events.push_back(Event::Responsibility {
                    point: point_of(a.anchor),
                    holder: a.assignment.responsible,
                    executor: a.assignment.executor,
                    mode: a.assignment.mode,
                    epoch: a.epoch,
                    takeover: true,
                });
            }
        }
        if let Some((s, f)) = self.finish_requested.clone() {
            if self.core.is_durable(s) {
                self.finish_requested = None;
                self.core.stop();
                let side = if self.remote_finish.is_some() {
                    Side::Remote
                } else {
                    Side::Local
                };
                self.core.actions.push_back(Action::Finish {
                    state: Some(f.state),
                    outcome: f.outcome.clone(),
                });
                self.core.events.push_back(Event::Finished {
                    outcome: f.outcome.clone(),
                    point: f.state.point,
                    side,
                });
                self.finished = Some(f);
                self.summary_dirty = true;
            }
        }
        if let Some(rc) = &mut self.reconfig {
            if let Phase::Persisting { seq: s, proposal } = &rc.phase {
                if self.core.is_durable(*s) {
                    let p = proposal.clone();
                    rc.phase = Phase::Proposed {
                        proposal: p.clone(),
                    };
                    self.core.send(Message::Propose(p));
                    let t = now + self.retry_interval();
                    self.core.timers.set(Timer::Propose, t);
                }
            }
        }
        self.update(now);
    }

    /// News from the transport.
    pub fn handle_link(&mut self, now: Time, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => self.core.link_up = true,
            LinkEvent::Lost => {
                self.core.link_up = false;
                self.hello_pending = None;
                if self.core.session.is_some() {
                    self.lose_session(now, false);
                }
            }
        }
        self.update(now);
    }

    /// The time passed `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.update(now);
    }

    // ----- outputs --------------------------------------------------------

    /// The next thing the driver must do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.core.actions.pop_front()
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.transmits.pop_front()
    }

    /// The next event for the log.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// When to call [`LocalStub::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.core.timers.next()
    }
}

// ----- internals ----------------------------------------------------------

impl LocalStub {
    fn record(&self, durable: Option<StateRef>) -> Record {
        let finished = self
            .finish_requested
            .as_ref()
            .map(|(_, f)| f.clone())
            .or_else(|| self.finished.clone());
        Record::Local(LocalRecord {
            agreement: self.agreed_requested,
            takeover: self.takeover || self.takeover_seq.is_some(),
            minted: self.minted,
            pending: self.pending.clone(),
            durable,
            finished,
            pinned_local: self.pinned_local,
        })
    }

    fn persist_record(&mut self) -> u64 {
        let rec = self.record(self.core.store_newest);
        self.core.persist(rec, None, Vec::new(), None)
    }

    fn retry_interval(&self) -> Duration {
        let rtt = self.core.measured.rtt.unwrap_or(self.cfg.timing.heartbeat);
        (rtt * 3).max(self.cfg.timing.heartbeat)
    }

    fn ctx(&self, now: Time) -> PolicyContext<'_> {
        let known = newest(
            newest(self.core.reached, self.core.durable),
            self.peer_reached,
        );
        PolicyContext {
            elapsed: now.saturating_since(self.started),
            point: point_of(known),
            executor: self.agreed.assignment.executor,
            responsible: self.agreed.assignment.responsible,
            since_change: now.saturating_since(self.last_change),
            timing: &self.cfg.timing,
            measured: &self.core.measured,
        }
    }

    fn heard(&mut self, now: Time) {
        if let Some(s) = &mut self.core.session {
            if s.established {
                s.last_heard = now;
                let t = self.cfg.timing.disconnect_after;
                self.core.timers.set(Timer::Idle, now + t);
            }
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            epoch: self.agreed.epoch,
            assignment: self.agreed.assignment,
            durable: self.core.durable,
            reached: self.core.reached,
            exec: self.core.exec_status(),
            quiesce: self
                .reconfig
                .as_ref()
                .map(|_| self.agreed.epoch.max(self.peer_floor)),
            quiesced: None,
            output: self.delivered,
            finished: self.finished.clone(),
            has_module: true,
            draining: false,
            step_nanos: self.core.my_step.map_or(0, nanos),
        }
    }

    fn send_heartbeat(&mut self, now: Time) {
        let summary = self.summary();
        if let Some(s) = self.core.session.as_mut().filter(|s| s.established) {
            let seq = s.next_seq(now);
            let echo = s.echo(now);
            let session = s.id;
            self.core.send(Message::Heartbeat(Heartbeat {
                session,
                seq,
                echo,
                summary,
            }));
        }
        self.summary_dirty = false;
        self.core
            .timers
            .set(Timer::Heartbeat, now + self.cfg.timing.heartbeat);
    }

    fn send_hello(&mut self, now: Time) {
        let summary = self.summary();
        let Some(s) = self.core.session.as_mut() else {
            return;
        };
        let seq = s.next_seq(now);
        let hello = Hello {
            task: self.cfg.task.clone(),
            module: self.cfg.module,
            session: s.id,
            seq,
            timing: self.cfg.timing.wire(),
            summary,
            meta: self.cfg.hello_meta.clone(),
        };
        self.core.send(Message::Hello(hello));
        let t = now + self.cfg.timing.heartbeat;
        self.core.timers.set(Timer::Hello, t);
    }

    fn on_welcome(
        &mut self,
        now: Time,
        id: SessionId,
        seq: u64,
        echo: Option<crate::message::Echo>,
        summary: &Summary,
    ) {
        let Some(s) = &self.core.session else { return };
        if s.id != id {
            return;
        }
        if s.established {
            self.heard(now);
            self.on_summary(now, seq, echo, summary);
            return;
        }
        if let Some(s) = &mut self.core.session {
            s.established = true;
        }
        self.core.timers.clear(Timer::Hello);
        self.heard(now);
        self.session_agreed = false;
        self.module_sent = false;
        self.core.ship.reset();
        if summary.epoch == Epoch(0) && summary.durable.is_none() && summary.reached.is_none() {
            // The remote holds nothing at all (its store was lost or set
            // aside): it cannot have agreed to anything, so there is no
            // older epoch of its own to wait for; it starts afresh.
            self.peer_floor = Epoch(0);
        }
        self.on_summary(now, seq, echo, summary);
        // A proposal of an earlier session is settled now: the remote either
        // recorded it (its epoch says so) or never will (proposals are only
        // valid in their session).
        if let Some(p) = &self.pending {
            if summary.epoch >= p.epoch {
                self.adopt_pending(now);
            } else {
                self.pending = None;
                self.persist_record();
            }
        }
        if let Some(start) = self.outage_start.take() {
            self.core.measured.outage_time += now.saturating_since(start);
        }
        self.disconnected_at = None;
        self.core.timers.clear(Timer::Takeover);
        let local = newest(self.core.reached, self.core.durable);
        let remote = newest(summary.reached, summary.durable);
        let winner = if point_of(remote) > point_of(local) {
            Side::Remote
        } else {
            Side::Local
        };
        self.core.events.push_back(Event::Reconnected {
            point_local: local.map(|s| s.point),
            point_remote: remote.map(|s| s.point),
            winner,
        });
        self.send_heartbeat(now);
    }

    fn on_summary(
        &mut self,
        now: Time,
        seq: u64,
        echo: Option<crate::message::Echo>,
        summary: &Summary,
    ) {
        let no_fencing = self.core.mutations.no_fencing();
        let Some(s) = &mut self.core.session else {
            return;
        };
        let (fresh, rtt) = s.on_summary(now, seq, echo, summary, no_fencing);
        if let Some(r) = rtt {
            self.core.measured.rtt = Measurements::ewma(self.core.measured.rtt, r);
        }
        if !fresh {
            return;
        }
        self.core
            .ship
            .on_peer_durable(summary.durable, now, &mut self.core.measured);
        self.core.check(summary.durable);
        self.core.check(summary.reached);
        self.peer_reached = newest(self.peer_reached, summary.reached);
        self.peer_floor = self.peer_floor.max(summary.epoch);
        if summary.step_nanos > 0 {
            let d = Duration::from_nanos(summary.step_nanos);
            self.core.measured.remote_step = Some(d);
        }
        if let Some(r) = summary.reached {
            if r.point > self.point_event && summary.assignment.executor == Side::Remote {
                self.point_event = r.point;
                self.core.events.push_back(Event::Point {
                    state: r,
                    side: Side::Remote,
                });
            }
        }
        if let Some(f) = &summary.finished {
            self.core.check(Some(f.state));
            self.remote_finish = Some(f.clone());
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| summary.epoch == p.epoch)
        {
            // The Accept was lost; the summary says the same.
            self.adopt_pending(now);
        }
    }

    fn lose_session(&mut self, now: Time, goodbye: bool) {
        let Some(s) = self.core.session.take() else {
            return;
        };
        if goodbye && s.established {
            self.core.send(Message::Goodbye(Goodbye { session: s.id }));
        }
        self.reconfig = None;
        self.core.ship.reset();
        for t in [
            Timer::Heartbeat,
            Timer::Idle,
            Timer::Hello,
            Timer::Propose,
            Timer::Ship,
            Timer::Module,
        ] {
            self.core.timers.clear(t);
        }
        if s.established {
            // No more waiting for a session to start remotely: one was
            // there and is gone, so a responsible local side runs now.
            self.start_wait_over = true;
            self.disconnected_at = Some(now);
            self.outage_start = Some(now);
            self.core.measured.outages += 1;
            let point = point_of(newest(
                newest(self.core.reached, self.core.durable),
                self.peer_reached,
            ));
            let holder_durable = match self.agreed.assignment.executor {
                Side::Remote => self.core.durable,
                Side::Local => s.peer.as_ref().and_then(|p| p.durable),
            };
            self.core.events.push_back(Event::Disconnected {
                point,
                executor: self.agreed.assignment.executor,
                holder: self.agreed.assignment.responsible,
                lag: point.steps_since(point_of(holder_durable)),
            });
        }
    }

    fn on_point(&mut self, now: Time, state: StateRef, output: Vec<OutputChunk>) {
        let step = self.core.on_reached(now, state);
        if let Some(d) = step {
            self.core.measured.local_step = Measurements::ewma(self.core.measured.local_step, d);
        }
        self.core.note(state);
        for chunk in output {
            self.deliver(chunk.point, chunk.bytes);
        }
        let rec = self.record(self.core.durable_with(Some(state)));
        self.core
            .persist(rec, Some(StateWrite::Own(state)), Vec::new(), None);
        self.core.note_write(state);
        if state.point > self.point_event {
            self.point_event = state.point;
            self.core.events.push_back(Event::Point {
                state,
                side: Side::Local,
            });
        }
    }

    /// Delivers output in point order, each point once.
    fn deliver(&mut self, point: Point, bytes: Blob) {
        if point <= self.delivered {
            return;
        }
        if point != self.delivered.next() {
            if self.out_buffer.len() < MAX_BUFFERED_OUTPUT {
                self.out_buffer.insert(point, bytes);
            }
            return;
        }
        self.core
            .actions
            .push_back(Action::Deliver(OutputChunk { point, bytes }));
        self.delivered = point;
        while let Some(b) = self.out_buffer.remove(&self.delivered.next()) {
            let p = self.delivered.next();
            self.core
                .actions
                .push_back(Action::Deliver(OutputChunk { point: p, bytes: b }));
            self.delivered = p;
        }
        self.out_buffer = self.out_buffer.split_off(&self.delivered.next());
    }

    fn on_checkpoint(&mut self, cp: Checkpoint) {
        if self.core.running() || self.finished.is_some() {
            return;
        }
        self.core.check(Some(cp.state));
        let held = newest(self.core.store_newest, self.core.paused_at());
        if reaches(held, cp.state.point) || self.incoming.is_some() {
            if self.incoming.is_none() {
                self.ack();
            }
            return;
        }
        if cp.base.is_some()
            && cp.base != self.core.store_newest
            && !self.core.mutations.no_base_check()
        {
            self.ack();
            return;
        }
        if self.delivered < cp.state.point {
            // A state is only useful with its output: wait for it.
            self.held_cp = Some(cp);
            return;
        }
        let state = cp.state;
        let rec = self.record(Some(state));
        let seq = self
            .core
            .persist(rec, Some(StateWrite::Received(cp)), Vec::new(), None);
        self.core.note_write(state);
        self.incoming = Some((seq, state));
        if state.point > self.point_event {
            self.point_event = state.point;
            self.core.events.push_back(Event::Point {
                state,
                side: Side::Remote,
            });
        }
        if self.core.mutations.ack_before_durable() {
            self.core.durable = newest(self.core.durable, Some(state));
            self.ack();
        }
    }

    fn ack(&mut self) {
        if let Some(session) = self.core.live_session() {
            self.core.send(Message::Ack(crate::message::Ack {
                session,
                durable: self.core.durable,
            }));
        }
        self.summary_dirty = true;
    }

    fn request_finish(&mut self, f: Finish) {
        if self.finish_requested.is_some() || self.finished.is_some() {
            return;
        }
        self.finish_requested = Some((0, f));
        let seq = self.persist_record();
        if let Some((s, _)) = &mut self.finish_requested {
            *s = seq;
        }
    }

    /// Makes this side execute (it is responsible and alone, or the agreed
    /// executor).
    fn ensure_running(&mut self, now: Time, alone: bool) {
        match self.core.exec {
            Exec::Idle => {
                let Some(from) = self.core.durable else {
                    return;
                };
                // After a disconnection this is a failover, whether or not
                // this side ever ran the task before (it may have moved
                // out at point 0).
                if alone && (self.ever_ran || self.disconnected_at.is_some()) {
                    let lost = point_of(self.peer_reached).steps_since(from.point);
                    self.core.events.push_back(Event::Resumed {
                        side: Side::Local,
                        point: from.point,
                        lost_steps: lost,
                    });
                }
                let batch = self.batch(now);
                self.core.run(now, from, batch);
                self.ever_ran = true;
            }
            Exec::Running { .. } => {}
            Exec::Paused { at, .. } => {
                if self.core.ship.capturing().is_none() && self.core.holds_durably(at) {
                    let batch = self.batch(now);
                    self.core.cont(now, batch);
                }
            }
        }
    }

    /// How far the executor may run before its next point: the sync
    /// interval, bounded by where the migration policy may change its
    /// mind; one step (`None`) while a reconfiguration or the end is under
    /// way, and in sync mode with a peer (which must hold every point, I2).
    pub(super) fn batch(&self, now: Time) -> Option<Horizon> {
        if self.reconfig.is_some() || self.pending.is_some() || self.finish_requested.is_some() {
            return None;
        }
        if self.core.live() && self.agreed.assignment.mode == Mode::Sync {
            return None;
        }
        Some(self.cfg.migrate.horizon(&self.ctx(now)))
    }

    /// Disconnected: continue if responsible, else wait for the takeover.
    fn alone(&mut self, now: Time) {
        let here = |a: &Assignment| a.responsible == Side::Local;
        let responsible = here(&self.agreed.assignment)
            && self.pending.as_ref().is_none_or(|p| here(&p.assignment));
        if responsible {
            self.core.timers.clear(Timer::Takeover);
            let waiting = !self.start_wait_over && !self.ever_ran;
            if !waiting {
                self.ensure_running(now, true);
            }
            return;
        }
        self.core.stop();
        if self.takeover_seq.is_some() {
            return;
        }
        let since = self.disconnected_at.unwrap_or(self.started);
        let deadline = since + self.cfg.timing.takeover_after;
        if now >= deadline {
            self.core.timers.clear(Timer::Takeover);
            self.begin_takeover(now);
        } else {
            self.core.timers.set(Timer::Takeover, deadline);
        }
    }

    /// Connected, no reconfiguration: run the agreed assignment.
    fn steady(&mut self, now: Time) {
        if self.agreed.assignment.executor != Side::Local {
            self.core.stop();
            return;
        }
        match self.core.exec {
            Exec::Idle => self.ensure_running(now, false),
            Exec::Running { .. } => {}
            Exec::Paused { at, .. } => {
                let peer_running = self.peer_running();
                let asg = self.agreed.assignment;
                let want_ship = !peer_running
                    && (asg.mode == Mode::Sync
                        || asg.responsible == Side::Remote
                        || self.cfg.precopy);
                if want_ship && self.core.ship.wants(at) {
                    self.core.capture(at);
                }
                let sync_wait =
                    asg.mode == Mode::Sync && !reaches(self.core.ship.peer_durable, at.point);
                if self.core.ship.capturing().is_none() && self.core.holds_durably(at) && !sync_wait
                {
                    let batch = self.batch(now);
                    self.core.cont(now, batch);
                }
            }
        }
    }

    fn peer(&self) -> Option<&Summary> {
        self.core.session.as_ref().and_then(|s| s.peer.as_ref())
    }

    fn peer_running(&self) -> bool {
        self.peer()
            .is_some_and(|p| matches!(p.exec, ExecStatus::Running { .. }))
    }

    /// Connected: keep the agreement, or change it.
    fn connected(&mut self, now: Time) {
        // Modules are content-addressed: send ours if the remote lacks it.
        if let Some(session) = self.core.live_session() {
            let lacks = self.peer().is_some_and(|p| !p.has_module);
            if lacks && (!self.module_sent || self.fired.has(Timer::Module)) {
                self.module_sent = true;
                let msg = ModuleData {
                    session,
                    module: self.cfg.module,
                    bytes: self.cfg.module_bytes.clone(),
                };
                self.core.send(Message::Module(msg));
                let size = self.cfg.module_bytes.len() as u64;
                let t = self
                    .core
                    .measured
                    .transfer_time(size)
                    .unwrap_or(Duration::from_secs(1));
                let at = now + t * 4 + self.retry_interval();
                self.core.timers.set(Timer::Module, at);
            }
            if !lacks {
                self.core.timers.clear(Timer::Module);
            }
        }
        if self.remote_finish.is_some() {
            self.core.stop();
            return;
        }
        if self.reconfig.is_none() {
            let target = self.target(now);
            if !self.session_agreed || target != self.agreed.assignment {
                let from = self.agreed.assignment.executor;
                self.reconfig = Some(Reconfig {
                    target,
                    phase: Phase::Prepare,
                    quiet_since: None,
                    from,
                });
                self.summary_dirty = true;
            }
        }
        if self.reconfig.is_some() {
            self.drive_reconfig(now);
        } else {
            self.steady(now);
        }
    }

    /// The remote finished: finish once its final state and output are here.
    fn try_finish_remote(&mut self) {
        let Some(f) = self.remote_finish.clone() else {
            return;
        };
        if self.finish_requested.is_some() || self.finished.is_some() {
            return;
        }
        if self.delivered >= f.state.point && self.core.holds_durably(f.state) {
            self.request_finish(f);
        }
    }

    /// Derives everything that follows from the current facts.
    fn update(&mut self, now: Time) {
        if let Some((point, _, _)) = self.core.divergence {
            self.core.stop();
            if !self.error_sent {
                self.error_sent = true;
                if let Some(session) = self.core.live_session() {
                    let text = format!("divergence at point {point}");
                    self.core.send(Message::Error(ErrorMsg {
                        session,
                        code: ErrorCode::Divergence,
                        text,
                    }));
                }
                self.core.actions.push_back(Action::Finish {
                    state: None,
                    outcome: Outcome::Diverged { point },
                });
            }
            return;
        }
        // Timers: every expired deadline is taken here, handled or not.
        let fired = self.core.timers.take_expired(now);
        self.fired = fired;
        if fired.has(Timer::Idle) {
            self.lose_session(now, true);
        }
        if fired.has(Timer::StartWait) {
            self.start_wait_over = true;
        }
        if fired.has(Timer::Propose) {
            if let Some(Reconfig {
                phase: Phase::Proposed { proposal },
                ..
            }) = &self.reconfig
            {
                let p = proposal.clone();
                self.core.send(Message::Propose(p));
                let t = now + self.retry_interval();
                self.core.timers.set(Timer::Propose, t);
            }
        }
        if self.core.ship.deadline().is_some_and(|d| d <= now) {
            let session = self.core.live_session();
            if let Some(t) = self.core.ship.on_timer(now, session, &self.core.measured) {
                self.core.transmits.push_back(t);
            }
        }
        match self.core.ship.deadline() {
            Some(d) if d > now => self.core.timers.set(Timer::Ship, d),
            _ => self.core.timers.clear(Timer::Ship),
        }

        // Sessions: mint and persist an id, then say Hello until welcomed.
        if self.core.link_up && self.core.session.is_none() && self.hello_pending.is_none() {
            self.minted += 1;
            let id = SessionId(self.minted);
            let seq = self.persist_record();
            self.hello_pending = Some((seq, id));
        }
        if let Some((seq, id)) = self.hello_pending {
            if self.core.is_durable(seq) {
                self.hello_pending = None;
                if self.core.link_up {
                    self.core.session = Some(Session::new(id, now, false));
                    self.send_hello(now);
                }
            }
        }
        if self.core.session.as_ref().is_some_and(|s| !s.established) && fired.has(Timer::Hello) {
            self.send_hello(now);
        }

        let live = self.core.live();
        self.try_finish_remote();
        let over = self.finished.is_some() || self.finish_requested.is_some();
        if over {
            self.core.stop();
        } else if live {
            self.connected(now);
        } else {
            self.alone(now);
        }
        if live && (self.summary_dirty || fired.has(Timer::Heartbeat)) {
            self.send_heartbeat(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ModuleRef, TaskId};
    use crate::output::Batch;
    use crate::state::Digest;

    fn s(p: u64) -> StateRef {
        StateRef::new(Point(p), Digest([p as u8 + 1; 32]))
    }

    fn cfg() -> LocalConfig {
        let mut c = LocalConfig::new(
            TaskId("t".into()),
            ModuleRef {
                digest: Digest([9; 32]),
                size: 3,
            },
            Blob::from(vec![1, 2, 3]),
        );
        c.migrate = std::sync::Arc::new(crate::policy::Migrate::Never);
        c
    }

    fn drain(l: &mut LocalStub) -> Vec<Action> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    #[test]
    fn runs_alone_and_delivers_in_order() {
        let t0 = Time::ZERO;
        let mut l = LocalStub::new(cfg(), t0, s(0));
        assert_eq!(
            drain(&mut l),
            vec![Action::Run {
                from: s(0),
                batch: Batch::ONE
            }]
        );
        l.handle_executor(
            t0,
            ExecutorEvent::Reached {
                state: s(1),
                output: vec![OutputChunk {
                    point: Point(1),
                    bytes: Blob::from(&b"a"[..]),
                }],
            },
        );
        let acts = drain(&mut l);
        assert!(matches!(&acts[0], Action::Deliver(c) if c.point == Point(1)));
        assert!(matches!(&acts[1], Action::Persist(p) if p.state == Some(StateWrite::Own(s(1)))));
        assert_eq!(acts.len(), 2, "waits for the point to be durable: {acts:?}");
        l.handle_persisted(t0, 1);
        assert_eq!(drain(&mut l), vec![Action::Continue { batch: Batch::ONE }]);
        l.handle_executor(
            t0,
            ExecutorEvent::Finished {
                state: s(2),
                output: vec![OutputChunk {
                    point: Point(2),
                    bytes: Blob::default(),
                }],
                outcome: Outcome::Exit(0),
            },
        );
        let acts = drain(&mut l);
        assert_eq!(acts.len(), 3, "{acts:?}"); // deliver, persist point, persist finish
        l.handle_persisted(t0, 3);
        assert_eq!(
            drain(&mut l),
            vec![Action::Finish {
                state: Some(s(2)),
                outcome: Outcome::Exit(0)
            }]
        );
        assert!(l.finished().is_some());
    }

    fn reached(l: &mut LocalStub, now: Time, p: u64, from: u64) {
        let output = (from + 1..=p)
            .map(|q| OutputChunk {
                point: Point(q),
                bytes: Blob::from(format!("{q}\n").into_bytes()),
            })
            .collect();
        l.handle_executor(
            now,
            ExecutorEvent::Reached {
                state: s(p),
                output,
            },
        );
    }

    #[test]
    fn batches_last_nineteen_times_the_measured_pause_and_deliver_every_point() {
        let t0 = Time::ZERO;
        let mut l = LocalStub::new(cfg(), t0, s(0));
        drain(&mut l);
        // A batch of three steps: each point's output is delivered, in order.
        reached(&mut l, t0, 3, 0);
        let delivered: Vec<u64> = drain(&mut l)
            .iter()
            .filter_map(|a| match a {
                Action::Deliver(c) => Some(c.point.0),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, [1, 2, 3]);
        // Persisting took 2 ms: the next batch may run 19 times that.
        let t1 = t0 + Duration::from_millis(2);
        l.handle_persisted(t1, 1);
        assert_eq!(
            drain(&mut l),
            vec![Action::Continue {
                batch: Batch {
                    budget: Duration::from_millis(38),
                    stop_at: None
                }
            }]
        );
        // A long pause is capped.
        reached(&mut l, t1, 4, 3);
        drain(&mut l);
        l.handle_persisted(t1 + Duration::from_secs(1), 2);
        let acts = drain(&mut l);
        let Some(Action::Continue { batch }) = acts.first() else {
            panic!("{acts:?}")
        };
        assert!(batch.budget <= crate::SyncEvery::AUTO_MAX, "{batch:?}");
    }

    #[test]
    fn a_batch_stops_at_the_migration_point_and_every_point_syncs_with_zero() {
        let t0 = Time::ZERO;
        let mut c = cfg();
        c.migrate = std::sync::Arc::new(crate::policy::Migrate::AtPoint(Point(7)));
        c.sync_every = crate::SyncEvery::Interval(Duration::from_millis(100));
        let mut l = LocalStub::new(c, t0, s(0));
        let acts = drain(&mut l);
        assert!(
            matches!(acts.as_slice(), [Action::Run { batch, .. }]
                if batch.stop_at == Some(Point(7)) && batch.budget == Duration::from_millis(100)),
            "{acts:?}"
        );
        let mut c = cfg();
        c.sync_every = crate::SyncEvery::Interval(Duration::ZERO);
        let mut l = LocalStub::new(c, t0, s(0));
        assert_eq!(
            drain(&mut l),
            vec![Action::Run {
                from: s(0),
                batch: Batch::ONE
            }]
        );
    }

    #[test]
    fn a_failure_in_a_batch_shows_the_steps_before_it_then_ends_at_its_start() {
        let t0 = Time::ZERO;
        let mut l = LocalStub::new(cfg(), t0, s(0));
        drain(&mut l);
        l.handle_executor(
            t0,
            ExecutorEvent::Failed {
                at: s(0),
                kind: crate::FailKind::Trap,
                reason: "boom".into(),
                output: vec![
                    OutputChunk {
                        point: Point(1),
                        bytes: Blob::from(&b"a"[..]),
                    },
                    OutputChunk {
                        point: Point(2),
                        bytes: Blob::from(&b"b"[..]),
                    },
                ],
            },
        );
        let acts = drain(&mut l);
        let shown: Vec<u64> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Deliver(c) => Some(c.point.0),
                _ => None,
            })
            .collect();
        assert_eq!(shown, [1, 2], "{acts:?}");
        l.handle_persisted(t0, 1);
        let acts = drain(&mut l);
        assert!(
            acts.iter().any(|a| matches!(a, Action::Finish { state: Some(st), outcome: Outcome::Failed { .. } } if *st == s(0))),
            "{acts:?}"
        );
    }

    #[test]
    fn record_round_trips() {
        let l = LocalStub::new(cfg(), Time::ZERO, s(0));
        let Record::Local(r) = l.record(Some(s(0))) else {
            panic!("local record")
        };
        assert_eq!(LocalRecord::decode(&r.encode()).ok(), Some(r));
    }
}
