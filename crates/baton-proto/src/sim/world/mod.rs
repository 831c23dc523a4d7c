//! The simulated world of one seed: two hosts (each a stub, an executor, a
//! store and a link end), a network, a virtual clock and a fault schedule;
//! and the invariant checks, run as things happen.
//!
//! Hosts are drivers in the sense of the crate docs: after every input they
//! run the crate's one [`drain`] on the stub, the same code the real drivers
//! run. Everything a
//! stub asks for (a step, a capture, a write, a message) comes back later as
//! a scheduled event, so nothing is re-entrant and everything is replayable.
//! A crash drops a host's stub, executor, unfinished writes and link; a
//! restart rebuilds the stub from what the store holds (DESIGN §8).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::codec::Limits;
use crate::config::{LocalConfig, Mutations, RemoteConfig, Timing};
use crate::drive::{drain, Sink};
use crate::input::{ExecutorEvent, LinkEvent};
use crate::journal::{LocalRecord, PersistRequest, Record, StateWrite};
use crate::message::{Channel, Message, ModuleRef, TaskId};
use crate::output::{Action, Event, Transmit};
use crate::roles::{Agreement, Assignment, Epoch, Mode, Side};
use crate::sim::rng::Rng;
use crate::sim::scenario::{Fault, Scenario};
use crate::sim::task::{self, FakeTask};
use crate::sim::{Mutation, SeedReport, Violation};
use crate::state::{Blob, Checkpoint, Digest, Outcome, OutputChunk, Point, StateRef};
use crate::time::Time;
use crate::{LocalStub, RemoteStub};

const TRACE_LEN: usize = 40;
const MODULE_BYTES: u64 = 1 << 20;
/// Real bytes per simulated byte: checkpoints and modules are scaled down by
/// this much, and the network charges every byte this much.
const SCALE: u64 = 1024;

fn ix(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Remote => 1,
    }
}

fn side_of(i: usize) -> Side {
    if i == 0 {
        Side::Local
    } else {
        Side::Remote
    }
}

/// How the executor passed a point (for I2 and the lost-steps figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Sync,
    Async,
    Alone,
}

#[derive(Debug)]
enum Stub {
    None,
    Local(Box<LocalStub>),
    Remote(Box<RemoteStub>),
}

macro_rules! each {
    ($stub:expr, $s:ident => $e:expr, $none:expr) => {
        match $stub {
            Stub::Local($s) => $e,
            Stub::Remote($s) => $e,
            Stub::None => $none,
        }
    };
}

/// One output of a stub, as [`drain`] handed it to the world's sink.
// Unboxed on purpose: the buffer is reused, so its slot size costs nothing,
// while a box would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Output {
    Action(Action),
    Transmit(Transmit),
    Event(Event),
}

/// The world's [`Sink`]: records outputs for `World::pump` to carry out.
/// Kept in the world between drains so that its buffer is reused.
#[derive(Debug, Default)]
struct Outputs(Vec<Output>);

impl Sink for Outputs {
    fn action(&mut self, a: Action) {
        self.0.push(Output::Action(a));
    }
    fn transmit(&mut self, t: Transmit) {
        self.0.push(Output::Transmit(t));
    }
    fn event(&mut self, e: Event) {
        self.0.push(Output::Event(e));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExecS {
    Idle,
    Running { point: Point, value: u64 },
    Paused { point: Point, value: u64 },
}

#[derive(Debug, Default)]
struct Store {
    states: BTreeMap<Point, u64>,
    record: Option<Record>,
    outputs: Vec<OutputChunk>,
}

impl Store {
    fn newest(&self) -> Option<(Point, u64)> {
        self.states.iter().next_back().map(|(p, v)| (*p, *v))
    }

    fn newest_point(&self) -> Option<Point> {
        self.newest().map(|(p, _)| p)
    }

    fn holds(&self, s: StateRef) -> Option<u64> {
        self.states
            .get(&s.point)
            .copied()
            .filter(|v| task::digest(s.point, *v) == s.digest)
    }
}

/// A line of a host's trace, formatted only when a seed fails.
#[derive(Clone, Debug)]
enum Tr {
    Recv(Message),
    Send(Message),
    Act(Action),
    Ev(Event),
    Note(String),
}

#[derive(Debug)]
struct Host {
    side: Side,
    alive: bool,
    dead_forever: bool,
    incarnation: u32,
    offset: u64,
    frozen_until: u64,
    stub: Stub,
    exec: ExecS,
    exec_gen: u64,
    known: BTreeMap<Point, u64>,
    store: Store,
    writes: VecDeque<(u64, PersistRequest, Option<u64>)>,
    disk_free: u64,
    link_up: bool,
    timer_gen: u64,
    committed: Option<Point>,
    commit_flow: Flow,
    adopted: Option<(Epoch, Assignment)>,
    trace: VecDeque<(u64, Tr)>,
    last_heartbeat: [Option<crate::message::Summary>; 2],
}

impl Host {
    fn new(side: Side) -> Host {
        Host {
            side,
            alive: true,
            dead_forever: false,
            incarnation: 0,
            offset: 0,
            frozen_until: 0,
            stub: Stub::None,
            exec: ExecS::Idle,
            exec_gen: 0,
            known: BTreeMap::new(),
            store: Store::default(),
            writes: VecDeque::new(),
            disk_free: 0,
            link_up: false,
            timer_gen: 0,
            committed: None,
            commit_flow: Flow::Alone,
            adopted: None,
            trace: VecDeque::new(),
            last_heartbeat: [None, None],
        }
    }

    fn local_now(&self, now: u64) -> Time {
        Time::from_nanos(now.saturating_add(self.offset))
    }

    fn flow(&self) -> Flow {
        let f = each!(&self.stub, s => s.flow(), None);
        match f {
            Some(Mode::Sync) => Flow::Sync,
            Some(Mode::Async) => Flow::Async,
            None => Flow::Alone,
        }
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Deliver {
        to: usize,
        dir: usize,
        bytes: Vec<u8>,
    },
    Timer {
        side: usize,
        gen: u64,
    },
    Step {
        side: usize,
        gen: u64,
    },
    Captured {
        side: usize,
        inc: u32,
        cp: Checkpoint,
    },
    Persisted {
        side: usize,
        inc: u32,
        seq: u64,
    },
    Link {
        side: usize,
        inc: u32,
        up: bool,
    },
    LinkCheck,
    Dial,
    Fault(Fault),
    Heal {
        dir: Option<usize>,
    },
    Restart {
        side: usize,
    },
}

impl Ev {
    /// The host this event happens on (deferred while it is frozen).
    fn host(&self) -> Option<usize> {
        match self {
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Timer { side, .. }
            | Ev::Step { side, .. }
            | Ev::Captured { side, .. }
            | Ev::Persisted { side, .. }
            | Ev::Link { side, .. } => Some(*side),
            _ => None,
        }
    }
}

struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Item) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Item) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Item) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One seed's world.
pub(crate) struct World {
    seed: u64,
    sc: Scenario,
    task: FakeTask,
    rng: Rng,
    mutations: Mutations,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Item>>,
    hosts: [Host; 2],
    cut: [u32; 2],
    blackhole_until: u64,
    bulk_free: [u64; 2],
    sink: Vec<Blob>,
    done: bool,
    violations: Vec<Violation>,
    report: SeedReport,
    world_trace: VecDeque<(u64, String)>,
    last_fault: u64,
    /// The kind of the last fault (cut, crash, …).
    last_fault_kind: &'static str,
    /// The side that last passed a point.
    last_executor: Option<usize>,
    /// `last_executor` as it was before the latest `Run`.
    before_run: Option<usize>,
    /// A takeover was just recorded by the local side.
    took_over: bool,
    epochs: HashMap<u64, Assignment>,
    remote_adopted: HashSet<u64>,
    dialing: bool,
    idle_timeout: u64,
    horizon: u64,
    initial: StateRef,
    remote_has_module: bool,
    verbose: bool,
    migrate_ok: bool,
    /// The sink `pump` drains into (empty between drains).
    drained: Outputs,
}

impl World {
    pub(crate) fn new(seed: u64, mutation: Mutation, verbose: bool) -> World {
        let mut rng = Rng::new(seed);
        let sc = Scenario::draw(&mut rng.fork());
        let task = FakeTask::new(seed, sc.steps);
        let mutations = mutation.switches();
        let d = sc.disconnect_after.as_nanos() as u64;
        let t = sc.takeover_after.as_nanos() as u64;
        // Generous: every step slowed by a round trip and a full transfer,
        // three times over, plus takeovers.
        let transfer = sc.full_bytes.saturating_mul(1_000_000_000) / sc.bandwidth.max(1);
        let per_step = 2 * sc.step_ns + 4 * sc.latency_ns + 2 * transfer + 2 * sc.persist_ns;
        let settle = 30_000_000_000 + sc.steps * per_step * 3 + t * 6 + d * 20;
        let horizon = sc.faults_end + settle;
        let initial = task.state(Point(0));
        let remote_has_module = rng.chance(0.3);
        let mut w = World {
            seed,
            sc,
            task,
            rng,
            mutations,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: [Host::new(Side::Local), Host::new(Side::Remote)],
            cut: [0, 0],
            blackhole_until: 0,
            bulk_free: [0, 0],
            sink: Vec::new(),
            done: false,
            violations: Vec::new(),
            report: SeedReport {
                seed,
                steps_needed: 0,
                ..SeedReport::default()
            },
            world_trace: VecDeque::new(),
            last_fault: 0,
            last_fault_kind: "",
            last_executor: None,
            before_run: None,
            took_over: false,
            epochs: HashMap::new(),
            remote_adopted: HashSet::new(),
            dialing: false,
            idle_timeout: d + d / 2,
            horizon,
            initial,
            remote_has_module,
            verbose,
            migrate_ok: true,
            drained: Outputs::default(),
        };
        w.report.steps_needed = w.task.last().0;
        w.hosts[1].store.states.clear();
        for (at, f) in w.sc.faults.clone() {
            w.schedule(at, Ev::Fault(f));
        }
        // The local side creates the task at point 0.
        w.hosts[0]
            .store
            .states
            .insert(Point(0), w.task.value(Point(0)).unwrap_or(0));
        let cfg = w.local_config();
        let stub = LocalStub::new(cfg, w.hosts[0].local_now(0), initial);
        w.hosts[0].stub = Stub::Local(Box::new(stub));
        w.hosts[0].exec = ExecS::Paused {
            point: Point(0),
            value: w.task.value(Point(0)).unwrap_or(0),
        };
        w.pump(0);
        w.schedule(0, Ev::Dial);
        w.dialing = true;
        w
    }

    fn local_config(&self) -> LocalConfig {
        let module = ModuleRef {
            digest: Digest([0xab; 32]),
            size: MODULE_BYTES,
        };
        let bytes = vec![0u8; (MODULE_BYTES / SCALE) as usize];
        let mut cfg = LocalConfig::new(TaskId("sim".into()), module, Blob::from(bytes));
        let mut timing = Timing::new(self.sc.disconnect_after, self.sc.takeover_after);
        timing.start_wait = self.sc.disconnect_after * 2;
        cfg.timing = timing;
        cfg.migrate = Arc::new(self.sc.migrate.clone());
        cfg.responsible = Arc::new(self.sc.responsible.clone());
        cfg.mode = Arc::new(self.sc.mode);
        cfg.precopy = self.sc.precopy;
        cfg.mutations = self.mutations;
        cfg
    }

    fn remote_config(&self) -> RemoteConfig {
        let module = ModuleRef {
            digest: Digest([0xab; 32]),
            size: MODULE_BYTES,
        };
        let mut cfg = RemoteConfig::new(TaskId("sim".into()), module, self.remote_has_module);
        cfg.mutations = self.mutations;
        cfg
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Item {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn violation(&mut self, invariant: &'static str, what: String) {
        if self.violations.len() < 4 {
            self.violations.push(Violation {
                invariant,
                what,
                at_ns: self.now,
            });
        }
    }

    fn trace(&mut self, side: usize, t: Tr) {
        let cap = if self.verbose {
            20 * TRACE_LEN
        } else {
            TRACE_LEN
        };
        // A heartbeat that repeats the previous summary in its direction
        // says nothing new: leave it out.
        let (slot, summary) = match &t {
            Tr::Recv(Message::Heartbeat(h)) => (0, Some(&h.summary)),
            Tr::Send(Message::Heartbeat(h)) => (1, Some(&h.summary)),
            _ => (0, None),
        };
        if let Some(s) = summary {
            let last = &mut self.hosts[side].last_heartbeat[slot];
            if last.as_ref() == Some(s) {
                return;
            }
            *last = Some(s.clone());
        }
        let tr = &mut self.hosts[side].trace;
        if tr.len() >= cap {
            tr.pop_front();
        }
        tr.push_back((self.now, t));
    }

    fn note(&mut self, what: String) {
        if self.world_trace.len() == TRACE_LEN {
            self.world_trace.pop_front();
        }
        self.world_trace.push_back((self.now, what));
    }

    /// Runs the world to its end and returns the report.
    pub(crate) fn run(mut self) -> SeedReport {
        let (mut last_at, mut same_instant) = (u64::MAX, 0u32);
        while let Some(Reverse(item)) = self.queue.pop() {
            if item.at > self.horizon || self.done || !self.violations.is_empty() {
                break;
            }
            self.now = item.at;
            if let Some(h) = item.ev.host() {
                if self.hosts[h].frozen_until > self.now {
                    let at = self.hosts[h].frozen_until;
                    self.schedule(at, item.ev);
                    continue;
                }
            }
            self.report.events += 1;
            if item.at == last_at {
                same_instant += 1;
            } else {
                (last_at, same_instant) = (item.at, 0);
            }
            if same_instant > 100_000 || self.report.events > 20_000_000 {
                self.violation(
                    "livelock",
                    "the stubs keep each other busy without time passing".into(),
                );
                break;
            }
            self.step(item.ev);
        }
        self.finish_checks();
        self.report.sim_ns = self.now;
        self.report.violations = std::mem::take(&mut self.violations);
        if !self.report.violations.is_empty() || self.verbose {
            self.report.trace = self.format_trace();
        }
        self.report
    }

    fn finish_checks(&mut self) {
        if !self.violations.is_empty() {
            return;
        }
        let local = &self.hosts[0];
        if !local.dead_forever {
            if !self.done {
                let what = format!(
                    "the task did not finish (local alive, {} of {} points delivered)",
                    self.sink.len(),
                    self.task.last().0
                );
                self.violation("I4", what);
            }
            return;
        }
        // The user is gone for good; a responsible remote must still finish.
        let remote = &self.hosts[1];
        if let Stub::Remote(r) = &remote.stub {
            if remote.alive
                && r.agreement().assignment.responsible == Side::Remote
                && r.finished().is_none()
            {
                self.violation(
                    "I4",
                    "responsible remote did not finish after the local side died".into(),
                );
            }
        }
        self.report.finished = false;
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, dir, bytes } => self.on_deliver(to, dir, bytes),
            Ev::Timer { side, gen } => {
                if self.hosts[side].timer_gen == gen && self.hosts[side].alive {
                    let now = self.hosts[side].local_now(self.now);
                    each!(&mut self.hosts[side].stub, s => s.handle_timeout(now), ());
                    self.pump(side);
                }
            }
            Ev::Step { side, gen } => self.on_step(side, gen),
            Ev::Captured { side, inc, cp } => {
                if self.hosts[side].incarnation == inc && self.hosts[side].alive {
                    let now = self.hosts[side].local_now(self.now);
                    let ev = ExecutorEvent::Captured(cp);
                    each!(&mut self.hosts[side].stub, s => s.handle_executor(now, ev), ());
                    self.pump(side);
                }
            }
            Ev::Persisted { side, inc, seq } => self.on_persisted(side, inc, seq),
            Ev::Link { side, inc, up } => {
                let h = &mut self.hosts[side];
                if h.incarnation != inc || !h.alive || h.link_up == up {
                    return;
                }
                h.link_up = up;
                let now = h.local_now(self.now);
                let ev = if up {
                    LinkEvent::Connected
                } else {
                    LinkEvent::Lost
                };
                self.trace(
                    side,
                    Tr::Note(format!("link {}", if up { "up" } else { "lost" })),
                );
                each!(&mut self.hosts[side].stub, s => s.handle_link(now, ev), ());
                self.pump(side);
                if !up && side == 0 {
                    self.redial(200_000_000);
                }
            }
            Ev::LinkCheck => {
                if self.cut[0] > 0 || self.cut[1] > 0 {
                    for side in 0..2 {
                        if self.hosts[side].link_up {
                            let inc = self.hosts[side].incarnation;
                            self.schedule(
                                self.now,
                                Ev::Link {
                                    side,
                                    inc,
                                    up: false,
                                },
                            );
                        }
                    }
                }
            }
            Ev::Dial => self.on_dial(),
            Ev::Fault(f) => self.on_fault(f),
            Ev::Heal { dir } => {
                for d in dirs(dir) {
                    self.cut[d] = self.cut[d].saturating_sub(1);
                }
                self.note(format!("heal {dir:?}"));
            }
            Ev::Restart { side } => self.on_restart(side),
        }
    }

    // ----- executors and stores -----------------------------------------------

    fn step_time(&mut self, side: usize) -> u64 {
        let base = self.sc.step_ns as f64 * if side == 1 { self.sc.remote_speed } else { 1.0 };
        (base * (0.8 + 0.4 * self.rng.f64())) as u64
    }

    fn start_step(&mut self, side: usize, point: Point, value: u64) {
        let h = &mut self.hosts[side];
        h.exec = ExecS::Running { point, value };
        h.exec_gen += 1;
        let gen = h.exec_gen;
        if point >= self.task.last() {
            // A final state: the runtime knows the task is over and says
            // so at once, without running anything.
            self.schedule(self.now, Ev::Step { side, gen });
            return;
        }
        self.pass(side, point);
        let at = self.now + self.step_time(side);
        self.schedule(at, Ev::Step { side, gen });
    }

    /// The executor passes `point` (starts the step after it).
    fn pass(&mut self, side: usize, point: Point) {
        let flow = self.hosts[side].flow();
        let own = self.hosts[side].store.newest_point();
        if own.is_none_or(|p| p < point) {
            self.violation(
                "I2",
                format!(
                    "{} passed point {point} before it was durable there",
                    side_of(side)
                ),
            );
        }
        if flow == Flow::Sync {
            let peer = self.hosts[1 - side].store.newest_point();
            if peer.is_none_or(|p| p < point) {
                self.violation(
                    "I2",
                    format!(
                        "{} passed point {point} in sync mode before the peer durably held it",
                        side_of(side)
                    ),
                );
            }
        }
        self.last_executor = Some(side);
        let h = &mut self.hosts[side];
        if h.committed.is_none_or(|c| c <= point) {
            h.committed = Some(point);
            h.commit_flow = flow;
        }
    }

    fn on_step(&mut self, side: usize, gen: u64) {
        let h = &mut self.hosts[side];
        if h.exec_gen != gen || !h.alive {
            return;
        }
        let ExecS::Running { point, value } = h.exec else {
            return;
        };
        let (p, v) = if point >= self.task.last() {
            (point, value)
        } else {
            self.report.steps_executed += 1;
            (point.next(), task::step(value, point))
        };
        h.exec = ExecS::Paused { point: p, value: v };
        h.known.insert(p, v);
        if h.known.len() > 64 {
            h.known.pop_first();
        }
        self.check_state(p, v, "reached by an executor");
        let state = StateRef::new(p, task::digest(p, v));
        // The simulated executor runs one step per batch (a batch is at
        // most its budget), so a batch's output is one chunk.
        let output = vec![OutputChunk {
            point: p,
            bytes: task::output(p, v),
        }];
        let ev = if p >= self.task.last() {
            ExecutorEvent::Finished {
                state,
                output,
                outcome: Outcome::Exit((v % 7) as i32),
            }
        } else {
            ExecutorEvent::Reached { state, output }
        };
        let now = self.hosts[side].local_now(self.now);
        each!(&mut self.hosts[side].stub, s => s.handle_executor(now, ev), ());
        self.pump(side);
    }

    fn check_state(&mut self, p: Point, v: u64, what: &str) {
        if self.task.value(p) != Some(v) {
            self.violation(
                "I1",
                format!("a state at point {p} {what} is not on the lineage (a fork)"),
            );
        }
    }

    fn on_persisted(&mut self, side: usize, inc: u32, seq: u64) {
        if self.hosts[side].incarnation != inc || !self.hosts[side].alive {
            return;
        }
        while self.hosts[side]
            .writes
            .front()
            .is_some_and(|(s, _, _)| *s <= seq)
        {
            let Some((_, req, snap)) = self.hosts[side].writes.pop_front() else {
                break;
            };
            self.apply_write(side, req, snap);
        }
        let now = self.hosts[side].local_now(self.now);
        each!(&mut self.hosts[side].stub, s => s.handle_persisted(now, seq), ());
        self.pump(side);
    }

    fn apply_write(&mut self, side: usize, req: PersistRequest, snap: Option<u64>) {
        let state = match &req.state {
            Some(StateWrite::Own(s)) => snap.map(|v| (s.point, v, *s)),
            Some(StateWrite::Received(cp)) => {
                // A naive store: it trusts the stub that a delta's base is
                // its newest state.
                let base = cp.base.and(self.hosts[side].store.newest().map(|(_, v)| v));
                match task::decode(cp.bytes.as_bytes(), base) {
                    Some((p, v)) => Some((p, v, cp.state)),
                    None => {
                        self.violation(
                            "I1",
                            format!("{} stored a delta without any base", side_of(side)),
                        );
                        None
                    }
                }
            }
            None => None,
        };
        if let Some((p, v, claimed)) = state {
            self.check_state(p, v, &format!("stored by {}", side_of(side)));
            if task::digest(p, v) != claimed.digest || claimed.point != p {
                self.violation(
                    "I1",
                    format!(
                        "{} stored {claimed:?} but the bytes decode to another state",
                        side_of(side)
                    ),
                );
            }
            let store = &mut self.hosts[side].store;
            store.states.insert(p, v);
            while store.states.len() > 6 {
                store.states.pop_first();
            }
        }
        let store = &mut self.hosts[side].store;
        store.outputs.extend(req.output);
        if let Record::Remote(r) = &req.record {
            let acked = r.output_acked;
            store.outputs.retain(|c| c.point > acked);
        }
        store.record = Some(req.record);
    }

    // ----- the drive loop ------------------------------------------------------

    /// Runs the shared [`drain`] on a host's stub, then carries out what it
    /// produced.
    ///
    /// The world owns the stub, so a sink that did the work on the spot
    /// would need the world while [`drain`] holds the stub; and `apply`
    /// reads the stub (its flow, when a step passes a point). So the sink
    /// only records the outputs, in the order [`drain`] hands them over, and
    /// they are carried out in that order right after. Nothing can tell the
    /// difference: a sink may not feed the stub anyway, and polling only
    /// empties the stub's queues.
    fn pump(&mut self, side: usize) {
        let mut outputs = std::mem::take(&mut self.drained);
        let next = each!(&mut self.hosts[side].stub, s => drain(&mut **s, &mut outputs), None);
        for out in outputs.0.drain(..) {
            match out {
                Output::Action(a) => {
                    self.trace(side, Tr::Act(a.clone()));
                    self.apply(side, a);
                }
                Output::Transmit(t) => self.send(side, t),
                Output::Event(e) => {
                    self.trace(side, Tr::Ev(e.clone()));
                    self.on_event(side, e);
                }
            }
        }
        self.drained = outputs;
        let h = &mut self.hosts[side];
        h.timer_gen += 1;
        if let Some(t) = next {
            let gen = h.timer_gen;
            let at = t.as_nanos().saturating_sub(h.offset);
            self.schedule(at, Ev::Timer { side, gen });
        }
    }

    fn apply(&mut self, side: usize, a: Action) {
        match a {
            Action::Run { from, batch: _ } => {
                self.before_run = self.last_executor;
                let h = &self.hosts[side];
                let live = match h.exec {
                    ExecS::Paused { point, value }
                        if point == from.point && task::digest(point, value) == from.digest =>
                    {
                        Some(value)
                    }
                    _ => None,
                };
                match live.or_else(|| h.store.holds(from)) {
                    Some(v) => self.start_step(side, from.point, v),
                    None => self.violation(
                        "contract",
                        format!(
                            "{} asked to run from {from:?}, which it does not hold",
                            side_of(side)
                        ),
                    ),
                }
            }
            Action::Yield => {}
            Action::Continue { batch: _ } => match self.hosts[side].exec {
                ExecS::Paused { point, value } => self.start_step(side, point, value),
                _ => self.violation(
                    "contract",
                    format!("{} said Continue while not paused", side_of(side)),
                ),
            },
            Action::Stop => {
                let h = &mut self.hosts[side];
                h.exec = ExecS::Idle;
                h.exec_gen += 1;
            }
            Action::Capture { state, base } => {
                let h = &self.hosts[side];
                let live = match h.exec {
                    ExecS::Paused { point, value } if point == state.point => Some(value),
                    _ => None,
                };
                let Some(value) = live.or_else(|| h.store.holds(state)) else {
                    self.violation(
                        "contract",
                        format!(
                            "{} asked to capture {state:?}, which it does not hold",
                            side_of(side)
                        ),
                    );
                    return;
                };
                let base_value = base.and_then(|b| {
                    h.store.holds(b).or_else(|| {
                        h.known
                            .get(&b.point)
                            .copied()
                            .filter(|v| task::digest(b.point, *v) == b.digest)
                    })
                });
                let size = if base_value.is_some() {
                    self.sc.delta_bytes
                } else {
                    self.sc.full_bytes
                };
                let cp = task::encode(
                    state.point,
                    value,
                    base.zip(base_value),
                    (size / SCALE) as usize,
                );
                let inc = h.incarnation;
                self.schedule(self.now + 100_000, Ev::Captured { side, inc, cp });
            }
            Action::Persist(req) => {
                let snap = match &req.state {
                    Some(StateWrite::Own(s)) => match self.hosts[side].exec {
                        ExecS::Paused { point, value } if point == s.point => Some(value),
                        _ => {
                            self.violation(
                                "contract",
                                format!(
                                    "{} asked to persist its own {s:?} while not there",
                                    side_of(side)
                                ),
                            );
                            None
                        }
                    },
                    _ => None,
                };
                let mut lat = (self.sc.persist_ns as f64 * (0.5 + self.rng.f64())) as u64;
                if self.rng.chance(0.01) {
                    lat *= 20;
                }
                let h = &mut self.hosts[side];
                let done = h.disk_free.max(self.now) + lat;
                h.disk_free = done;
                let (seq, inc) = (req.seq, h.incarnation);
                h.writes.push_back((seq, *req, snap));
                self.schedule(done, Ev::Persisted { side, inc, seq });
            }
            Action::Deliver(chunk) => {
                let expected = Point(self.sink.len() as u64 + 1);
                if side != 0 {
                    self.violation("contract", "the remote delivered output".into());
                } else if chunk.point != expected {
                    self.violation(
                        "I3",
                        format!(
                            "output of point {} delivered when {expected} was due",
                            chunk.point
                        ),
                    );
                } else if chunk.bytes != self.task.output(chunk.point) {
                    self.violation(
                        "I3",
                        format!("output of point {} is not byte-identical", chunk.point),
                    );
                } else {
                    self.sink.push(chunk.bytes);
                }
            }
            Action::Finish { state, outcome } => {
                let last = self.task.last();
                if let Outcome::Diverged { point } = outcome {
                    self.violation("I1", format!("divergence reported at point {point}"));
                } else if outcome != self.task.outcome() || state != Some(self.task.state(last)) {
                    self.violation("I3", format!("finished with {outcome:?} at {state:?}"));
                } else if self.sink.len() as u64 != last.0 {
                    self.violation(
                        "I3",
                        format!(
                            "finished with {} of {} outputs delivered",
                            self.sink.len(),
                            last.0
                        ),
                    );
                } else {
                    self.done = true;
                    self.report.finished = true;
                }
            }
        }
    }

    fn on_event(&mut self, side: usize, e: Event) {
        match e {
            Event::Responsibility {
                epoch,
                executor,
                holder,
                mode,
                takeover,
                ..
            } => {
                let asg = Assignment {
                    executor,
                    responsible: holder,
                    mode,
                };
                if takeover {
                    self.took_over = true;
                }
                if let Some(prev) = self.epochs.get(&epoch.0) {
                    if *prev != asg {
                        self.violation(
                            "I5",
                            format!("epoch {} means {prev:?} and {asg:?}", epoch.0),
                        );
                    }
                }
                self.epochs.insert(epoch.0, asg);
                if let Some((e, a)) = self.hosts[side].adopted {
                    if epoch < e || (epoch == e && a != asg) {
                        self.violation(
                            "I5",
                            format!(
                                "{} adopted stale epoch {} after {}",
                                side_of(side),
                                epoch.0,
                                e.0
                            ),
                        );
                    }
                }
                if self.hosts[side].adopted.is_none_or(|(e, _)| epoch >= e) {
                    self.hosts[side].adopted = Some((epoch, asg));
                }
                if side == 1 {
                    self.remote_adopted.insert(epoch.0);
                } else if !takeover && !self.remote_adopted.contains(&epoch.0) {
                    self.violation(
                        "I5",
                        format!(
                            "local adopted epoch {} that the remote never recorded",
                            epoch.0
                        ),
                    );
                }
            }
            Event::Resumed { point, .. } => {
                let takeover = std::mem::take(&mut self.took_over) && side == 0;
                if self.before_run == Some(side) && !takeover {
                    // The side that was executing resumes (after its own
                    // crash, say): it must not lose anything it passed.
                    self.report.restarts += 1;
                    if let Some(c) = self.hosts[side].committed.filter(|c| *c > point) {
                        self.violation(
                            "I2",
                            format!("{} resumed from {point} after passing {c}", side_of(side)),
                        );
                    }
                    return;
                }
                self.report.failovers += 1;
                let elapsed = self.now.saturating_sub(self.last_fault);
                if takeover {
                    self.report.takeovers += 1;
                    self.report.takeover_ns.push(elapsed);
                } else if matches!(self.last_fault_kind, "cut" | "crash") {
                    self.report.failover_ns.push(elapsed);
                }
                let other = &self.hosts[1 - side];
                let lost = other.committed.map_or(0, |c| c.steps_since(point));
                match other.commit_flow {
                    Flow::Sync => {
                        self.report.lost_sync.push(lost);
                        if lost > 0 {
                            self.violation(
                                "I2",
                                format!("sync mode lost {lost} committed steps at a failover"),
                            );
                        }
                    }
                    Flow::Async => self.report.lost_async.push(lost),
                    Flow::Alone => self.report.lost_alone.push(lost),
                }
            }
            Event::Migrated { downtime, .. } => {
                self.report.migrations += 1;
                self.report.downtime_ns.push(downtime.as_nanos() as u64);
            }
            Event::Divergence { point, .. } => {
                self.violation("I1", format!("divergence detected at point {point}"));
            }
            _ => {}
        }
    }
}

// After the `each!` macro, which these use.
mod faults;
mod trace;

use faults::dirs;
