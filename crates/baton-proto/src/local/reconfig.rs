//! Reconfiguration, the local stub's coordinator role: choosing the
//! wanted assignment from the policies, quiescing both executors, choosing
//! the anchor, making sure the sides that need it hold it, proposing a new
//! epoch and adopting it on the remote's durable acceptance; and the
//! takeover the local side makes alone.

use super::*;

/// Where a reconfiguration stands.
#[derive(Clone, Debug)]
pub(super) enum Phase {
    /// Waiting for both executors to be still, then for the sides that need
    /// the anchor (the newest state) to hold it.
    Prepare,
    /// The proposal is being persisted (as pending) before it is sent.
    Persisting { seq: u64, proposal: Proposal },
    /// The proposal was sent; waiting for `Accept`.
    Proposed { proposal: Proposal },
}

#[derive(Clone, Debug)]
pub(super) struct Reconfig {
    pub(super) target: Assignment,
    pub(super) phase: Phase,
    /// When both executors were seen still (for the downtime estimate).
    pub(super) quiet_since: Option<Time>,
    /// The executor when the reconfiguration began.
    pub(super) from: Side,
}

impl LocalStub {
    /// The assignment the policies want now.
    pub(super) fn target(&self, now: Time) -> Assignment {
        let ctx = self.ctx(now);
        let peer = self.core.session.as_ref().and_then(|s| s.peer.as_ref());
        let draining = peer.is_some_and(|p| p.draining);
        let executor = if self.pinned_local || draining {
            Side::Local
        } else if self.force_remote || self.cfg.migrate.wants_remote(&ctx) {
            Side::Remote
        } else {
            Side::Local
        };
        let responsible = if draining {
            Side::Local
        } else {
            self.cfg.responsible.choose(&ctx, executor)
        };
        let mode = self.cfg.mode.choose(executor, responsible);
        Assignment {
            executor,
            responsible,
            mode,
        }
    }

    /// Records the pending proposal as the agreement (the remote accepted).
    /// If the proposal is of the live session, the executors switch as
    /// agreed; if it is of an earlier session, it is only recorded (its
    /// anchor is history: this side may have moved on alone since).
    pub(super) fn adopt_pending(&mut self, now: Time) {
        let Some(p) = self.pending.take() else { return };
        let act = self.core.live_session() == Some(p.session);
        let old = self.agreed;
        self.agreed = Agreement {
            epoch: p.epoch,
            assignment: p.assignment,
            anchor: Some(p.anchor),
        };
        self.agreed_requested = self.agreed;
        self.takeover = false;
        self.peer_floor = self.peer_floor.max(p.epoch);
        self.persist_record();
        self.core.timers.clear(Timer::Propose);
        if self.core.live_session() == Some(p.session) {
            self.session_agreed = true;
        }
        let rc = self.reconfig.take();
        let from = rc.as_ref().map_or(old.assignment.executor, |r| r.from);
        if act && from != p.assignment.executor {
            let quiet = rc.as_ref().and_then(|r| r.quiet_since).unwrap_or(now);
            self.core.events.push_back(Event::Migrated {
                from,
                to: p.assignment.executor,
                point: p.anchor.point,
                downtime: now.saturating_since(quiet),
            });
        }
        if old.assignment.responsible != p.assignment.responsible {
            self.last_change = now;
        }
        self.core.events.push_back(Event::agreed(&p));
        if !act {
            self.session_agreed = false;
        } else if p.assignment.executor == Side::Local {
            if self.core.paused_at() != Some(p.anchor) {
                self.core.stop();
                let batch = self.batch(now);
                self.core.run(now, p.anchor, batch);
                self.ever_ran = true;
            }
        } else {
            self.core.stop();
        }
        self.summary_dirty = true;
    }

    pub(super) fn begin_takeover(&mut self, now: Time) {
        let _ = now;
        if self.takeover_seq.is_some() {
            return;
        }
        self.minted += 1;
        let mode = self.cfg.mode.choose(Side::Local, Side::Local);
        self.agreed_requested = Agreement {
            epoch: Epoch(self.minted),
            assignment: Assignment::local(mode),
            anchor: self.core.durable,
        };
        self.pending = None;
        self.takeover_seq = Some(0);
        let seq = self.persist_record();
        self.takeover_seq = Some(seq);
    }

    /// Runs the reconfiguration state machine one step.
    pub(super) fn drive_reconfig(&mut self, now: Time) {
        let Some(rc) = self.reconfig.clone() else {
            return;
        };
        let Some(peer) = self.peer().cloned() else {
            return;
        };
        if !matches!(rc.phase, Phase::Prepare) {
            return; // persisting or waiting for the remote's answer
        }
        let no_fencing = self.core.mutations.no_fencing();
        // 1. Both executors still (the remote confirms in a fresh summary).
        let local_still = !self.core.running() && self.core.ship.capturing().is_none();
        self.core.yield_now();
        let remote_still = !matches!(peer.exec, ExecStatus::Running { .. })
            && (no_fencing || peer.epoch >= self.peer_floor)
            && peer.quiesced == Some(peer.epoch);
        if !(local_still && remote_still) {
            return;
        }
        if rc.quiet_since.is_none() {
            if let Some(r) = &mut self.reconfig {
                r.quiet_since = Some(now);
            }
        }
        // 2. The anchor: the newest state either side holds. Recomputed every
        //    time, since writes queued before the quiesce may still land.
        let remote_paused = match peer.exec {
            ExecStatus::Paused { at } => Some(at),
            _ => None,
        };
        let anchor = newest(
            newest(self.core.paused_at(), self.core.durable),
            newest(remote_paused, peer.durable),
        );
        let Some(anchor) = anchor else { return };
        // 3. The new executor must hold it; the responsible side, and in
        //    sync mode the other side too, must hold it durably.
        let target = rc.target;
        let l_durable = self.core.durable == Some(anchor);
        let l_any = l_durable || self.core.paused_at() == Some(anchor);
        let r_durable = peer.durable == Some(anchor);
        let r_any = r_durable || remote_paused == Some(anchor);
        let needs = |side: Side| -> (bool, bool) {
            let exec = target.executor == side;
            let durable = target.responsible == side || (!exec && target.mode == Mode::Sync);
            (exec || durable, durable)
        };
        let (l_need, l_need_durable) = needs(Side::Local);
        let (r_need, r_need_durable) = needs(Side::Remote);
        // The remote ships what we lack by itself (it ships whenever it
        // holds something newer than we do); we ship what it lacks.
        let local_ok = (!l_need || l_any) && (!l_need_durable || l_durable);
        let remote_ok = (!r_need || r_any) && (!r_need_durable || r_durable);
        if !remote_ok && l_any && !r_durable && self.core.ship.wants(anchor) {
            self.core.capture(anchor);
        }
        let remote_can = !(target.executor == Side::Remote || target.responsible == Side::Remote)
            || peer.has_module;
        if !(local_ok && remote_ok && remote_can) {
            return;
        }
        // 4. Propose, once the proposal is durable as pending.
        let Some(session) = self.core.live_session() else {
            return;
        };
        self.minted += 1;
        let proposal = Proposal {
            session,
            epoch: Epoch(self.minted),
            assignment: target,
            anchor,
        };
        self.pending = Some(proposal.clone());
        let seq = self.persist_record();
        if let Some(r) = &mut self.reconfig {
            r.phase = Phase::Persisting { seq, proposal };
        }
    }
}
