//! The remote stub: the agent's end of one task.
//!
//! Owns [`RemoteStub`]. The remote side follows: it records the agreements
//! the local side proposes (durably, before accepting), runs the task when
//! it is the executor, streams state and output back, keeps still when the
//! local side reconfigures, and on a disconnection continues if and only if
//! it is responsible. It never mints an epoch. Like every stub it is a pure
//! state machine: no IO, no clock, no task runtime.

use std::collections::BTreeMap;

use crate::config::{RemoteConfig, Timing};
use crate::input::{ExecutorEvent, LinkEvent};
use crate::journal::{Record, RemoteRecord, StateWrite};
use crate::link::Session;
use crate::message::{
    Accept, Ack, ErrorCode, ErrorMsg, Finish, FinishedMsg, Goodbye, Heartbeat, Hello, Message,
    OutputMsg, Proposal, Reject, RejectReason, Summary, Welcome,
};
use crate::output::{point_of, Action, Event, Transmit};
use crate::policy::{Horizon, Measurements};
use crate::roles::{Agreement, Assignment, Epoch, Mode, SessionId, Side};
use crate::state::{Blob, Outcome, OutputChunk, Point, StateRef};
use crate::stub::{Exec, StubCore};
use crate::time::{nanos, Time};
use crate::timer::Timer;

/// Most output chunks sent in one message.
const CHUNKS_PER_MESSAGE: usize = 64;

/// Most output bytes gathered into one message: well inside the transport's
/// output frame (16 MiB), so that many pending chunks never add up to a
/// message that cannot be sent. A single chunk larger than this still goes
/// alone.
const OUTPUT_BYTES_PER_MESSAGE: usize = 4 << 20;

/// The chunks of the next output message: those from `from` on, at most
/// [`CHUNKS_PER_MESSAGE`] of them and at most [`OUTPUT_BYTES_PER_MESSAGE`]
/// bytes (but always at least one).
fn output_batch(outputs: &BTreeMap<Point, Blob>, from: Point) -> Vec<OutputChunk> {
    let mut bytes = 0;
    let mut batch = Vec::new();
    for (p, b) in outputs.range(from..).take(CHUNKS_PER_MESSAGE) {
        if !batch.is_empty() && bytes + b.len() > OUTPUT_BYTES_PER_MESSAGE {
            break;
        }
        bytes += b.len();
        batch.push(OutputChunk {
            point: *p,
            bytes: b.clone(),
        });
    }
    batch
}

/// The remote end of one task's protocol.
///
/// Create it with [`RemoteStub::new`] when a `Hello` names an unknown task
/// (then pass that `Hello` to [`RemoteStub::handle_message`]), or with
/// [`RemoteStub::recover`] after a restart. See the crate documentation for
/// the drive loop.
#[derive(Debug)]
pub struct RemoteStub {
    core: StubCore,
    cfg: RemoteConfig,
    /// The agreement in force.
    agreed: Agreement,
    /// The agreement in the newest queued record (ahead of `agreed` while
    /// an acceptance is being persisted).
    agreed_requested: Agreement,
    has_module: bool,
    module_requested: bool,
    module_seq: Option<u64>,
    /// Latched quiesce request: keep still while `agreed.epoch <= q`.
    quiesce: Option<Epoch>,
    /// A proposal waiting for its anchor state to arrive.
    deferred: Option<Proposal>,
    /// A proposal whose record is being persisted (Accept follows).
    accepting: Option<(u64, Proposal)>,
    /// Output the local side may not have yet, by point.
    outputs: BTreeMap<Point, Blob>,
    output_acked: Point,
    output_sent: Point,
    finished: Option<Finish>,
    finish_requested: Option<(u64, Finish)>,
    handed_back: bool,
    draining: bool,
    /// Executing on its own authority (it is responsible and was
    /// disconnected), not under an agreement of the live session. It goes
    /// on until the local side reconfigures.
    acting: bool,
    /// The session in which the agreement in force was made. In any other
    /// session the remote only executes if it is `acting`.
    agreed_in: Option<SessionId>,
    /// The newest session ever opened (sessions never reopen).
    last_session: SessionId,
    /// A received checkpoint being persisted.
    incoming: Option<(u64, StateRef)>,
    summary_dirty: bool,
    /// The local side's newest reached point, as last reported.
    peer_reached: Option<StateRef>,
    error_sent: bool,
}

impl RemoteStub {
    /// A stub for a task the agent has never seen (nothing persisted yet).
    pub fn new(cfg: RemoteConfig, now: Time) -> RemoteStub {
        let _ = now;
        let agreed = Agreement {
            epoch: Epoch(0),
            assignment: Assignment::local(Mode::Async),
            anchor: None,
        };
        let mutations = cfg.mutations();
        let window = cfg.lineage_window;
        let has_module = cfg.has_module;
        let mut core = StubCore::new(Side::Remote, Timing::default(), mutations, window);
        core.sync_every = cfg.sync_every;
        RemoteStub {
            core,
            cfg,
            agreed,
            agreed_requested: agreed,
            has_module,
            module_requested: has_module,
            module_seq: None,
            quiesce: None,
            deferred: None,
            accepting: None,
            outputs: BTreeMap::new(),
            output_acked: Point(0),
            output_sent: Point(0),
            finished: None,
            finish_requested: None,
            handed_back: false,
            draining: false,
            acting: false,
            agreed_in: None,
            last_session: SessionId(0),
            incoming: None,
            summary_dirty: false,
            peer_reached: None,
            error_sent: false,
        }
    }

    /// A stub restored from what was persisted: the last record and the
    /// output it kept. The store must hold `record.durable`. If the remote
    /// is responsible, it resumes executing at once.
    pub fn recover(
        cfg: RemoteConfig,
        now: Time,
        record: RemoteRecord,
        outputs: Vec<OutputChunk>,
    ) -> RemoteStub {
        let mut s = RemoteStub::new(cfg, now);
        s.core.timing = Timing::from_wire(record.timing);
        s.core.durable = record.durable;
        s.core.store_newest = record.durable;
        if let Some(d) = record.durable {
            s.core.note(d);
        }
        s.agreed = record.agreement;
        s.agreed_requested = record.agreement;
        s.has_module = s.has_module || record.has_module;
        s.module_requested = s.has_module;
        s.output_acked = record.output_acked;
        s.output_sent = record.output_acked;
        for c in outputs {
            if c.point > record.output_acked && crate::output::reaches(record.durable, c.point) {
                s.outputs.insert(c.point, c.bytes);
            }
        }
        s.finished = record.finished;
        s.handed_back = record.handed_back;
        s.update(now);
        s
    }

    // ----- getters -------------------------------------------------------

    /// The agreement in force.
    pub fn agreement(&self) -> Agreement {
        self.agreed
    }

    /// The newest state this side holds durably.
    pub fn durable(&self) -> Option<StateRef> {
        self.core.durable
    }

    /// True while this side's executor is running or paused at a point.
    pub fn is_executing(&self) -> bool {
        self.core.exec != Exec::Idle
    }

    /// The task finished here (durably).
    pub fn finished(&self) -> Option<&Finish> {
        self.finished.as_ref()
    }

    /// The local side has everything: the driver may forget the task.
    pub fn is_handed_back(&self) -> bool {
        self.handed_back
    }

    /// No longer executing or responsible (after [`RemoteStub::drain`]).
    pub fn is_drained(&self) -> bool {
        self.handed_back
            || self.finished.is_some()
            || (self.agreed.assignment.executor == Side::Local
                && self.agreed.assignment.responsible == Side::Local
                && !self.is_executing())
    }

    /// The live session, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.core.live_session()
    }

    /// Whether the executor currently waits for the peer at every point
    /// (`Some(Mode::Sync)`), streams without waiting (`Some(Mode::Async)`),
    /// or runs alone without a session (`None`).
    pub fn flow(&self) -> Option<Mode> {
        self.core.live().then_some(self.agreed.assignment.mode)
    }

    // ----- inputs ---------------------------------------------------------

    /// A decoded message from the local side.
    pub fn handle_message(&mut self, now: Time, msg: Message) {
        match msg {
            Message::Hello(h) => self.on_hello(now, h),
            other => {
                if !self.core.current(other.session()) {
                    return; // stale: another session
                }
                self.heard(now);
                match other {
                    Message::Heartbeat(h) => self.on_summary(now, h.seq, h.echo, &h.summary),
                    Message::Goodbye(_) => self.lose_session(now, false),
                    Message::Module(m) => {
                        if !self.module_requested && m.module == self.cfg.module {
                            self.module_requested = true;
                            let rec = self.record(self.core.store_newest);
                            let seq = self.core.persist(rec, None, Vec::new(), Some(m.bytes));
                            self.module_seq = Some(seq);
                        }
                    }
                    Message::Checkpoint(c) => {
                        // The sender holds what it sends: never ship it back
                        // (a full copy of a large state, at a migration).
                        let sent = Some(c.checkpoint.state);
                        self.core
                            .ship
                            .on_peer_durable(sent, now, &mut self.core.measured);
                        self.on_checkpoint(now, c.checkpoint)
                    }
                    Message::Ack(a) => {
                        self.core
                            .ship
                            .on_peer_durable(a.durable, now, &mut self.core.measured);
                    }
                    Message::Propose(p) => self.consider(now, p),
                    Message::Error(e) => {
                        self.core.events.push_back(Event::PeerError {
                            code: e.code,
                            text: e.text,
                        });
                    }
                    // Only the remote sends these.
                    Message::Hello(_)
                    | Message::Welcome(_)
                    | Message::Output(_)
                    | Message::Accept(_)
                    | Message::Reject(_)
                    | Message::Finished(_) => {}
                }
            }
        }
        self.update(now);
    }

    /// News from the executor.
    pub fn handle_executor(&mut self, now: Time, ev: ExecutorEvent) {
        match ev {
            ExecutorEvent::Reached { state, output } => {
                if self.core.running() {
                    self.on_point(now, state, output, None);
                    if self.quiesce.is_some() {
                        self.summary_dirty = true; // now still: tell the local side
                    }
                }
            }
            ExecutorEvent::Finished {
                state,
                output,
                outcome,
            } => {
                if self.core.running() {
                    self.on_point(now, state, output, Some(outcome));
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
                    let out = self.keep_outputs(output);
                    self.finish(
                        Finish {
                            state: at,
                            outcome: Outcome::Failed { kind, reason },
                        },
                        None,
                        out,
                    );
                    self.send_outputs(now, false);
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
        let done = self.core.on_persisted(seq);
        for s in done {
            self.core.note(s);
        }
        if self.incoming.is_some_and(|(s, _)| self.core.is_durable(s)) {
            self.incoming = None;
            self.ack(false);
        }
        if self.module_seq.is_some_and(|s| self.core.is_durable(s)) {
            self.module_seq = None;
            self.has_module = true;
            self.summary_dirty = true;
        }
        if let Some((s, f)) = self.finish_requested.clone() {
            if self.core.is_durable(s) {
                self.finish_requested = None;
                self.core.events.push_back(Event::Finished {
                    outcome: f.outcome.clone(),
                    point: f.state.point,
                    side: Side::Remote,
                });
                if let Some(session) = self.core.live_session() {
                    self.core.send(Message::Finished(FinishedMsg {
                        session,
                        finish: f.clone(),
                    }));
                }
                self.finished = Some(f);
                self.summary_dirty = true;
            }
        }
        if let Some((s, p)) = self.accepting.clone() {
            if self.core.is_durable(s) {
                self.accepting = None;
                self.adopt(now, p);
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

    /// The agent drains: ask the local side to take the task back.
    pub fn drain(&mut self, now: Time) {
        self.draining = true;
        self.summary_dirty = true;
        self.core.yield_now();
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

    /// When to call [`RemoteStub::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.core.timers.next()
    }

    // ----- internals ------------------------------------------------------

    /// The record as it will be once every queued write is done.
    fn record(&self, durable: Option<StateRef>) -> Record {
        Record::Remote(RemoteRecord {
            agreement: self.agreed_requested,
            durable,
            output_acked: self.output_acked,
            finished: self
                .finish_requested
                .as_ref()
                .map(|(_, f)| f.clone())
                .or_else(|| self.finished.clone()),
            handed_back: self.handed_back,
            has_module: self.module_requested,
            timing: self.core.timing.wire(),
        })
    }

    fn heard(&mut self, now: Time) {
        if let Some(s) = &mut self.core.session {
            s.last_heard = now;
        }
        let t = self.core.timing.disconnect_after;
        self.core.timers.set(Timer::Idle, now + t);
    }

    fn on_hello(&mut self, now: Time, h: Hello) {
        if h.task != self.cfg.task {
            let session = h.session;
            self.core.send(Message::Error(ErrorMsg {
                session,
                code: ErrorCode::UnknownTask,
                text: format!("this stub serves task {:?}", self.cfg.task.0),
            }));
            return;
        }
        let no_fencing = self.core.mutations.no_fencing();
        match &self.core.session {
            Some(s) if s.id == h.session => {
                // A duplicate Hello: answer again.
                self.heard(now);
                self.welcome(now);
                return;
            }
            Some(s) if s.id > h.session && !no_fencing => return, // stale
            Some(_) => self.lose_session(now, false),
            None => {}
        }
        // A session that ended never comes back: a late copy of its Hello
        // is stale (session ids only grow).
        if h.session <= self.last_session && !no_fencing {
            return;
        }
        self.last_session = h.session;
        self.core.timing = Timing::from_wire(h.timing);
        let mut session = Session::new(h.session, now, true);
        let (_, rtt) = session.on_summary(now, h.seq, None, &h.summary, no_fencing);
        if let Some(r) = rtt {
            self.core.measured.rtt = Measurements::ewma(self.core.measured.rtt, r);
        }
        self.core.session = Some(session);
        self.core.ship.reset();
        self.output_sent = self.output_acked;
        self.heard(now);
        self.core
            .timers
            .set(Timer::Heartbeat, now + self.core.timing.heartbeat);
        self.process_summary(now, &h.summary);
        self.welcome(now);
        if let Some(f) = self.finished.clone() {
            self.core.send(Message::Finished(FinishedMsg {
                session: h.session,
                finish: f,
            }));
        }
    }

    fn welcome(&mut self, now: Time) {
        let summary = self.summary();
        if let Some(s) = &mut self.core.session {
            let seq = s.next_seq(now);
            let echo = s.echo(now);
            let session = s.id;
            self.core.send(Message::Welcome(Welcome {
                session,
                seq,
                echo,
                summary,
            }));
        }
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
        if fresh {
            self.process_summary(now, summary);
        }
    }

    fn process_summary(&mut self, now: Time, s: &Summary) {
        self.core
            .ship
            .on_peer_durable(s.durable, now, &mut self.core.measured);
        self.core.check(s.durable);
        self.core.check(s.reached);
        self.peer_reached = s.reached;
        if s.output > self.output_acked {
            self.output_acked = s.output;
            self.outputs = self.outputs.split_off(&self.output_acked.next());
            self.output_sent = self.output_sent.max(self.output_acked);
        }
        let no_fencing = self.core.mutations.no_fencing();
        let before = self.quiesce;
        self.quiesce = s.quiesce.filter(|q| no_fencing || *q >= self.agreed.epoch);
        if self.quiesce != before {
            // The local side waits for our answer to reconfigure: say at
            // once whether we are still, rather than at the next heartbeat.
            self.summary_dirty = true;
        }
        if self.quiesce.is_some() {
            self.core.yield_now();
        }
        if s.finished.is_some() && !self.handed_back {
            // The local side has the final state and output: the task is
            // over here.
            self.handed_back = true;
            self.core.stop();
            let rec = self.record(self.core.store_newest);
            self.core.persist(rec, None, Vec::new(), None);
        }
    }

    fn summary(&self) -> Summary {
        let still = !self.core.running() && self.accepting.is_none();
        Summary {
            epoch: self.agreed.epoch,
            assignment: self.agreed.assignment,
            durable: self.core.durable,
            reached: self.core.reached,
            exec: self.core.exec_status(),
            quiesce: None,
            quiesced: (self.quiesce.is_some() && still).then_some(self.agreed.epoch),
            output: self
                .outputs
                .keys()
                .next_back()
                .copied()
                .unwrap_or(self.output_acked),
            finished: self.finished.clone(),
            has_module: self.has_module,
            draining: self.draining,
            step_nanos: self.core.my_step.map_or(0, nanos),
        }
    }

    fn send_heartbeat(&mut self, now: Time) {
        let summary = self.summary();
        if let Some(s) = &mut self.core.session {
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
            .set(Timer::Heartbeat, now + self.core.timing.heartbeat);
    }

    fn lose_session(&mut self, now: Time, goodbye: bool) {
        let Some(s) = self.core.session.take() else {
            return;
        };
        if goodbye {
            self.core.send(Message::Goodbye(Goodbye { session: s.id }));
        }
        self.quiesce = None;
        self.deferred = None;
        self.core.ship.reset();
        self.output_sent = self.output_acked;
        for t in [Timer::Heartbeat, Timer::Idle, Timer::Output, Timer::Ship] {
            self.core.timers.clear(t);
        }
        let point = point_of(crate::output::newest(self.core.reached, self.core.durable));
        let lag = if self.agreed.assignment.executor == Side::Remote {
            point.steps_since(point_of(self.core.ship.peer_durable))
        } else {
            0
        };
        let _ = now;
        self.core.events.push_back(Event::Disconnected {
            point,
            executor: self.agreed.assignment.executor,
            holder: self.agreed.assignment.responsible,
            lag,
        });
    }

    /// The executor reached a point (or the final one).
    fn on_point(
        &mut self,
        now: Time,
        state: StateRef,
        output: Vec<OutputChunk>,
        outcome: Option<Outcome>,
    ) {
        self.core.on_reached(now, state);
        self.core.note(state);
        let out = self.keep_outputs(output);
        match outcome {
            None => {
                let rec = self.record(self.core.durable_with(Some(state)));
                self.core
                    .persist(rec, Some(StateWrite::Own(state)), out, None);
                self.core.note_write(state);
            }
            Some(outcome) => {
                self.core.exec = Exec::Idle;
                self.finish(Finish { state, outcome }, Some(state), out);
            }
        }
        self.send_outputs(now, false);
    }

    /// Keeps a batch's output chunks the local side has not acknowledged,
    /// for sending; returns them, for persisting.
    fn keep_outputs(&mut self, output: Vec<OutputChunk>) -> Vec<OutputChunk> {
        let mut out = Vec::with_capacity(output.len());
        for chunk in output {
            if chunk.point > self.output_acked {
                self.outputs.insert(chunk.point, chunk.bytes.clone());
                out.push(chunk);
            }
        }
        out
    }

    fn finish(&mut self, f: Finish, state: Option<StateRef>, out: Vec<OutputChunk>) {
        if self.finish_requested.is_some() || self.finished.is_some() {
            return;
        }
        self.finish_requested = Some((0, f));
        let rec = self.record(self.core.durable_with(state));
        let seq = self
            .core
            .persist(rec, state.map(StateWrite::Own), out, None);
        if let Some(s) = state {
            self.core.note_write(s);
        }
        if let Some((s, _)) = &mut self.finish_requested {
            *s = seq;
        }
    }

    fn on_checkpoint(&mut self, now: Time, cp: crate::state::Checkpoint) {
        let _ = now;
        if self.core.running() || self.handed_back {
            return; // executing: the peer should not be sending
        }
        self.core.check(Some(cp.state));
        let held = crate::output::newest(self.core.store_newest, self.core.paused_at());
        if crate::output::reaches(held, cp.state.point) || self.incoming.is_some() {
            if self.incoming.is_none() {
                self.ack(true);
            }
            return;
        }
        if cp.base.is_some()
            && cp.base != self.core.store_newest
            && !self.core.mutations.no_base_check()
        {
            self.ack(true); // tells the sender which base we really hold
            return;
        }
        let state = cp.state;
        let rec = self.record(Some(state));
        let seq = self
            .core
            .persist(rec, Some(StateWrite::Received(cp)), Vec::new(), None);
        self.core.note_write(state);
        self.incoming = Some((seq, state));
        if self.core.mutations.ack_before_durable() {
            self.core.durable = crate::output::newest(self.core.durable, Some(state));
            self.ack(false);
        }
    }

    fn ack(&mut self, _duplicate: bool) {
        if let Some(session) = self.core.live_session() {
            self.core.send(Message::Ack(Ack {
                session,
                durable: self.core.durable,
            }));
        }
        self.summary_dirty = true;
    }

    /// Looks at a proposal: accept (after persisting), defer, or reject.
    fn consider(&mut self, now: Time, p: Proposal) {
        let _ = now;
        let no_fencing = self.core.mutations.no_fencing();
        if self.accepting.is_some() || !self.core.current(p.session) {
            return;
        }
        if p.epoch <= self.agreed.epoch && !no_fencing {
            self.deferred = None;
            if p.epoch == self.agreed.epoch {
                self.core.send(Message::Accept(Accept {
                    session: p.session,
                    epoch: p.epoch,
                }));
            } else {
                let reason = RejectReason::Stale;
                self.core.send(Message::Reject(Reject {
                    session: p.session,
                    epoch: p.epoch,
                    reason,
                }));
            }
            return;
        }
        if p.epoch == self.agreed.epoch && p.assignment == self.agreed.assignment {
            self.core.send(Message::Accept(Accept {
                session: p.session,
                epoch: p.epoch,
            }));
            return;
        }
        let a = p.anchor;
        self.core.check(Some(a));
        if self.core.running() {
            self.deferred = Some(p);
            return;
        }
        let mine = crate::output::newest(self.core.store_newest, self.core.paused_at());
        if let Some(m) = mine.filter(|m| m.point > a.point) {
            self.deferred = None;
            let reason = RejectReason::NewerState(m);
            self.core.send(Message::Reject(Reject {
                session: p.session,
                epoch: p.epoch,
                reason,
            }));
            return;
        }
        let asg = p.assignment;
        let needs_module = asg.executor == Side::Remote || asg.responsible == Side::Remote;
        let can_run = asg.executor != Side::Remote
            || self.core.paused_at() == Some(a)
            || self.core.durable == Some(a);
        let needs_durable = asg.responsible == Side::Remote
            || (asg.executor == Side::Local && asg.mode == Mode::Sync);
        let durable_ok = !needs_durable || self.core.durable == Some(a);
        if (needs_module && !self.has_module) || !can_run || !durable_ok {
            self.deferred = Some(p);
            return;
        }
        self.deferred = None;
        self.agreed_requested = Agreement {
            epoch: p.epoch,
            assignment: asg,
            anchor: Some(a),
        };
        let rec = self.record(self.core.store_newest);
        let seq = self.core.persist(rec, None, Vec::new(), None);
        self.accepting = Some((seq, p));
    }

    /// The proposal's record is durable: it is the agreement now.
    fn adopt(&mut self, now: Time, p: Proposal) {
        self.agreed = Agreement {
            epoch: p.epoch,
            assignment: p.assignment,
            anchor: Some(p.anchor),
        };
        self.acting = false;
        self.quiesce = None;
        self.deferred = None;
        self.agreed_in = self.core.live_session().filter(|s| *s == p.session);
        if self.core.current(p.session) {
            self.core.send(Message::Accept(Accept {
                session: p.session,
                epoch: p.epoch,
            }));
        }
        self.summary_dirty = true;
        self.core.events.push_back(Event::agreed(&p));
        if p.assignment.executor == Side::Remote {
            if self.core.paused_at() != Some(p.anchor) {
                self.core.stop();
                let batch = self.batch();
                self.core.run(now, p.anchor, batch);
            }
        } else {
            self.core.stop();
        }
    }

    /// May the executor, paused at `at`, run the next step?
    /// How far the executor may run before its next point: the sync
    /// interval in async mode; one step in sync mode (the local side must
    /// hold every point, I2), while the local side reconfigures and while
    /// this agent drains.
    fn batch(&self) -> Option<Horizon> {
        let one_step = self.quiesce.is_some()
            || self.deferred.is_some()
            || self.draining
            || self.agreed.assignment.mode == Mode::Sync;
        (!one_step).then(Horizon::default)
    }

    fn may_continue(&self, at: StateRef) -> bool {
        let live = self.core.live();
        let quiet = live && self.quiesce.is_some();
        let sync_wait = live
            && self.agreed.assignment.mode == Mode::Sync
            && !crate::output::reaches(self.core.ship.peer_durable, at.point);
        self.core.ship.capturing().is_none()
            && self.core.holds_durably(at)
            && self.accepting.is_none()
            && !quiet
            && !sync_wait
    }

    fn send_outputs(&mut self, now: Time, resend: bool) {
        let Some(session) = self.core.live_session() else {
            return;
        };
        if resend {
            self.output_sent = self.output_acked;
        }
        let from = self.output_sent.max(self.output_acked).next();
        let chunks = output_batch(&self.outputs, from);
        if let Some(last) = chunks.last() {
            self.output_sent = last.point;
            self.core
                .send(Message::Output(OutputMsg { session, chunks }));
        }
        if self
            .outputs
            .range(self.output_acked.next()..)
            .next()
            .is_some()
        {
            let rtt = self.core.measured.rtt.unwrap_or(self.core.timing.heartbeat);
            self.core.timers.set_if_later(
                Timer::Output,
                now + rtt * 4 + self.core.timing.heartbeat * 2,
            );
        } else {
            self.core.timers.clear(Timer::Output);
        }
    }

    /// Ships the newest state to the local side when it lacks it.
    fn ship(&mut self) {
        let Some(peer) = self.core.session.as_ref().and_then(|s| s.peer.as_ref()) else {
            return;
        };
        if matches!(peer.exec, crate::message::ExecStatus::Running { .. }) || self.core.running() {
            return;
        }
        if let Some(t) = self.core.newest_held() {
            if self.core.ship.wants(t) {
                self.core.capture(t);
            }
        }
    }

    /// Derives everything that follows from the current facts.
    fn update(&mut self, now: Time) {
        if self.stopped_by_divergence() {
            return;
        }
        // Timers: every expired deadline is taken here, handled or not.
        let fired = self.core.timers.take_expired(now);
        if fired.has(Timer::Idle) && self.core.session.is_some() {
            self.lose_session(now, true);
        }
        if fired.has(Timer::Output) {
            self.send_outputs(now, true);
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

        let live = self.core.live();
        self.steer_executor(now, live);

        if live {
            self.ship();
            self.send_outputs(now, false);
            if let Some(p) = self.deferred.take() {
                self.consider(now, p);
            }
            if self.summary_dirty || fired.has(Timer::Heartbeat) {
                self.send_heartbeat(now);
            }
        }
    }

    /// A divergence stops everything: the executor, and (once) a word to
    /// the peer. Returns whether there was one.
    fn stopped_by_divergence(&mut self) -> bool {
        let Some((point, _, _)) = self.core.divergence else {
            return false;
        };
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
        }
        true
    }

    /// Runs, continues or stops this side's executor as the agreement (or,
    /// without a session, responsibility) says.
    fn steer_executor(&mut self, now: Time, live: bool) {
        let over = self.handed_back || self.finished.is_some() || self.finish_requested.is_some();
        let asg = self.agreed.assignment;
        let in_agreement = asg.executor == Side::Remote
            && self.agreed_in.is_some()
            && self.agreed_in == self.core.live_session();
        let should_exec = !over
            && self.has_module
            && if live {
                in_agreement || self.acting
            } else {
                asg.responsible == Side::Remote
            };

        if !should_exec {
            if self.core.exec != Exec::Idle && !(over && self.finish_requested.is_some()) {
                self.core.stop();
            }
            if !live {
                self.acting = false;
            }
        } else {
            match self.core.exec {
                Exec::Idle => {
                    if let Some(from) = self.core.durable {
                        if !live {
                            self.acting = true;
                            let lost = point_of(self.peer_reached).steps_since(from.point);
                            self.core.events.push_back(Event::Resumed {
                                side: Side::Remote,
                                point: from.point,
                                lost_steps: lost,
                            });
                        }
                        let batch = self.batch();
                        self.core.run(now, from, batch);
                    }
                }
                Exec::Running { .. } => {
                    if !live {
                        self.acting = true;
                    }
                }
                Exec::Paused { at, .. } => {
                    if !live {
                        self.acting = true;
                    }
                    if self.may_continue(at) {
                        let batch = self.batch();
                        self.core.cont(now, batch);
                    } else if live && self.quiesce.is_some() {
                        self.summary_dirty = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ModuleRef, TaskId, WireTiming};
    use crate::output::Batch;
    use crate::state::Digest;

    fn cfg() -> RemoteConfig {
        RemoteConfig::new(
            TaskId("t".into()),
            ModuleRef {
                digest: Digest([7; 32]),
                size: 1,
            },
            true,
        )
    }

    fn record(agreement: Agreement, durable: Option<StateRef>) -> RemoteRecord {
        RemoteRecord {
            agreement,
            durable,
            output_acked: Point(0),
            finished: None,
            handed_back: false,
            has_module: true,
            timing: WireTiming {
                heartbeat_nanos: 1_000_000,
                disconnect_after_nanos: 4_000_000,
            },
        }
    }

    #[test]
    fn output_messages_stay_small_whatever_is_pending() {
        let mut outputs = BTreeMap::new();
        for p in 1..=40u64 {
            outputs.insert(Point(p), Blob::from(vec![b'x'; 1 << 20]));
        }
        // 40 pending chunks of 1 MiB: gathered 4 MiB at a time, in order.
        let first = output_batch(&outputs, Point(1));
        assert_eq!(first.len(), 4);
        assert_eq!(first[0].point, Point(1));
        let mut from = Point(1);
        let mut sent = 0;
        while sent < 40 {
            let b = output_batch(&outputs, from);
            assert!(!b.is_empty());
            assert!(b.iter().map(|c| c.bytes.len()).sum::<usize>() <= OUTPUT_BYTES_PER_MESSAGE);
            assert_eq!(b[0].point, from);
            sent += b.len();
            from = b.last().map(|c| c.point.next()).unwrap_or(from);
        }
        // One chunk larger than the bound goes alone; small ones by the 64.
        outputs.insert(Point(41), Blob::from(vec![b'y'; 5 << 20]));
        assert_eq!(output_batch(&outputs, Point(41)).len(), 1);
        let small: BTreeMap<Point, Blob> = (1..=100u64)
            .map(|p| (Point(p), Blob::from(vec![b'z'; 10])))
            .collect();
        assert_eq!(output_batch(&small, Point(1)).len(), CHUNKS_PER_MESSAGE);
    }

    #[test]
    fn responsible_remote_resumes_after_restart() {
        let s3 = StateRef::new(Point(3), Digest([3; 32]));
        let asg = Assignment {
            executor: Side::Remote,
            responsible: Side::Remote,
            mode: Mode::Async,
        };
        let agreement = Agreement {
            epoch: Epoch(4),
            assignment: asg,
            anchor: Some(s3),
        };
        let mut r = RemoteStub::recover(cfg(), Time::ZERO, record(agreement, Some(s3)), Vec::new());
        assert_eq!(
            r.poll_action(),
            Some(Action::Run {
                from: s3,
                batch: Batch::ONE
            })
        );
        assert!(matches!(
            r.poll_event(),
            Some(Event::Resumed {
                side: Side::Remote,
                ..
            })
        ));
    }

    #[test]
    fn not_responsible_stays_idle_after_restart() {
        let s3 = StateRef::new(Point(3), Digest([3; 32]));
        let asg = Assignment {
            executor: Side::Remote,
            responsible: Side::Local,
            mode: Mode::Sync,
        };
        let agreement = Agreement {
            epoch: Epoch(4),
            assignment: asg,
            anchor: Some(s3),
        };
        let mut r = RemoteStub::recover(cfg(), Time::ZERO, record(agreement, Some(s3)), Vec::new());
        assert_eq!(r.poll_action(), None);
        assert_eq!(r.poll_timeout(), None);
    }
}
