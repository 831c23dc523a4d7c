//! The simulated network, links and faults of a world: sending and
//! delivering messages, dialing, partitions, crashes, restarts, clock jumps,
//! freezes, address changes and the user's and agent's commands.

use super::*;

impl World {
    // ----- network ---------------------------------------------------------

    pub(super) fn redial(&mut self, after: u64) {
        if !self.dialing {
            self.dialing = true;
            let at = self.now + after;
            self.schedule(at, Ev::Dial);
        }
    }

    pub(super) fn on_dial(&mut self) {
        self.dialing = false;
        let (l, r) = (&self.hosts[0], &self.hosts[1]);
        if !l.alive || l.link_up {
            return;
        }
        if r.alive && self.cut[0] == 0 && self.cut[1] == 0 {
            let rtt = 2 * self.sc.latency_ns;
            let (li, ri) = (l.incarnation, r.incarnation);
            self.schedule(
                self.now + rtt / 2,
                Ev::Link {
                    side: 1,
                    inc: ri,
                    up: true,
                },
            );
            self.schedule(
                self.now + rtt,
                Ev::Link {
                    side: 0,
                    inc: li,
                    up: true,
                },
            );
        } else {
            let backoff = self.rng.range(100, 600) * 1_000_000;
            self.redial(backoff);
        }
    }

    pub(super) fn send(&mut self, from: usize, t: Transmit) {
        self.trace(from, Tr::Send(t.message.clone()));
        let dir = from;
        if !self.hosts[from].link_up || self.cut[dir] > 0 || self.now < self.blackhole_until {
            return;
        }
        if self.rng.chance(self.sc.loss) {
            return;
        }
        let bytes = t.message.encode();
        let size = bytes.len() as u64 * SCALE;
        let copies = if self.rng.chance(self.sc.dup) { 2 } else { 1 };
        for copy in 0..copies {
            let mut delay = self.sc.latency_ns + (self.rng.f64() * self.sc.jitter_ns as f64) as u64;
            // A duplicate may come much later (a replayed buffer, a stale
            // path): the stale messages that fencing exists for.
            if self.rng.chance(self.sc.spike) || (copy == 1 && self.rng.chance(0.5)) {
                delay += self.rng.range(0, self.sc.spike_ns);
            }
            let at = if t.channel == Channel::Bulk {
                let start = self.bulk_free[dir].max(self.now);
                let busy = size.saturating_mul(1_000_000_000) / self.sc.bandwidth.max(1);
                self.bulk_free[dir] = start + busy;
                start + busy + delay
            } else {
                self.now + delay
            };
            self.schedule(
                at,
                Ev::Deliver {
                    to: 1 - from,
                    dir,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    pub(super) fn on_deliver(&mut self, to: usize, dir: usize, bytes: Vec<u8>) {
        if self.cut[dir] > 0 || !self.hosts[to].alive || !self.hosts[to].link_up {
            return;
        }
        let msg = match Message::decode(&bytes, &Limits::default()) {
            Ok(m) => m,
            Err(e) => {
                self.violation(
                    "codec",
                    format!("a message the stub encoded does not decode: {e}"),
                );
                return;
            }
        };
        self.trace(to, Tr::Recv(msg.clone()));
        if to == 1 && matches!(self.hosts[1].stub, Stub::None) {
            if !matches!(msg, Message::Hello(_)) {
                return;
            }
            let cfg = self.remote_config();
            let now = self.hosts[1].local_now(self.now);
            self.hosts[1].stub = Stub::Remote(Box::new(RemoteStub::new(cfg, now)));
        }
        let now = self.hosts[to].local_now(self.now);
        each!(&mut self.hosts[to].stub, s => s.handle_message(now, msg), ());
        self.pump(to);
    }

    // ----- faults ------------------------------------------------------------

    pub(super) fn on_fault(&mut self, f: Fault) {
        self.note(format!("fault {f:?}"));
        match f {
            Fault::Cut { dir, heal } => {
                (self.last_fault, self.last_fault_kind) = (self.now, "cut");
                for d in dirs(dir) {
                    self.cut[d] += 1;
                }
                if let Some(h) = heal {
                    self.schedule(self.now + h, Ev::Heal { dir });
                }
                self.schedule(self.now + self.idle_timeout, Ev::LinkCheck);
            }
            Fault::Crash { side, restart } => {
                let i = ix(side);
                if !self.hosts[i].alive {
                    return;
                }
                (self.last_fault, self.last_fault_kind) = (self.now, "crash");
                let h = &mut self.hosts[i];
                h.alive = false;
                h.incarnation += 1;
                h.stub = Stub::None;
                h.exec = ExecS::Idle;
                h.exec_gen += 1;
                h.known.clear();
                h.writes.clear();
                h.link_up = false;
                h.timer_gen += 1;
                h.frozen_until = 0;
                match restart {
                    Some(after) => self.schedule(self.now + after, Ev::Restart { side: i }),
                    None => self.hosts[i].dead_forever = true,
                }
                // The peer's connection is reset at once, or times out.
                let other = 1 - i;
                let inc = self.hosts[other].incarnation;
                let after = if self.rng.chance(0.5) {
                    2 * self.sc.latency_ns
                } else {
                    self.idle_timeout
                };
                self.schedule(
                    self.now + after,
                    Ev::Link {
                        side: other,
                        inc,
                        up: false,
                    },
                );
            }
            Fault::ClockJump { side, by } => {
                (self.last_fault, self.last_fault_kind) = (self.now, "clock");
                let i = ix(side);
                self.hosts[i].offset += by;
                if self.hosts[i].alive && self.hosts[i].frozen_until <= self.now {
                    let now = self.hosts[i].local_now(self.now);
                    each!(&mut self.hosts[i].stub, s => s.handle_timeout(now), ());
                    self.pump(i);
                }
            }
            Fault::Freeze { side, dur } => {
                (self.last_fault, self.last_fault_kind) = (self.now, "freeze");
                let i = ix(side);
                self.hosts[i].frozen_until = self.hosts[i].frozen_until.max(self.now + dur);
            }
            Fault::AddressChange { reset } => {
                (self.last_fault, self.last_fault_kind) = (self.now, "address");
                self.blackhole_until = self.now + self.rng.range(20, 300) * 1_000_000;
                if reset {
                    for side in 0..2 {
                        let inc = self.hosts[side].incarnation;
                        self.schedule(
                            self.now + 2 * self.sc.latency_ns,
                            Ev::Link {
                                side,
                                inc,
                                up: false,
                            },
                        );
                    }
                }
            }
            Fault::Migrate(to) => {
                if self.migrate_ok && self.hosts[0].alive {
                    let now = self.hosts[0].local_now(self.now);
                    if let Stub::Local(l) = &mut self.hosts[0].stub {
                        l.migrate(now, to);
                    }
                    self.pump(0);
                }
            }
            Fault::Drain => {
                if self.hosts[1].alive {
                    let now = self.hosts[1].local_now(self.now);
                    if let Stub::Remote(r) = &mut self.hosts[1].stub {
                        r.drain(now);
                    }
                    self.pump(1);
                }
            }
        }
    }

    pub(super) fn on_restart(&mut self, i: usize) {
        let now = self.hosts[i].local_now(self.now);
        self.note(format!("restart {}", side_of(i)));
        self.hosts[i].alive = true;
        self.hosts[i].link_up = false;
        let record = self.hosts[i].store.record.clone();
        if i == 0 {
            let record = match record {
                Some(Record::Local(r)) => r,
                _ => {
                    // Nothing journaled yet: the task is re-created at point 0.
                    let mode = self.sc.mode;
                    let asg = Assignment::local(crate::policy::ModePolicy::choose(
                        &mode,
                        Side::Local,
                        Side::Local,
                    ));
                    LocalRecord {
                        agreement: Agreement {
                            epoch: Epoch(0),
                            assignment: asg,
                            anchor: Some(self.initial),
                        },
                        takeover: false,
                        minted: 0,
                        pending: None,
                        durable: Some(self.initial),
                        finished: None,
                        pinned_local: false,
                    }
                }
            };
            let delivered = Point(self.sink.len() as u64);
            let stub = LocalStub::recover(self.local_config(), now, record, delivered);
            self.hosts[0].stub = Stub::Local(Box::new(stub));
            self.pump(0);
            let after = self.rng.range(10, 200) * 1_000_000;
            self.redial(after);
        } else if let Some(Record::Remote(r)) = record {
            let outputs = self.hosts[1].store.outputs.clone();
            let stub = RemoteStub::recover(self.remote_config(), now, r, outputs);
            self.hosts[1].stub = Stub::Remote(Box::new(stub));
            self.pump(1);
        }
    }
}

pub(super) fn dirs(dir: Option<usize>) -> Vec<usize> {
    match dir {
        Some(d) => vec![d],
        None => vec![0, 1],
    }
}
