//! What one side holds: the states its stub persists, and the checkpoints
//! it captures for the peer.
//!
//! Owns the store half of [`ExecCore`]: `Persist` (a state this side
//! reached, or one received from the peer, made the store's newest, and
//! what the log should write for it), `Capture` (a state encoded for the
//! peer as a delta against what the peer holds, tracked by the *mirror*),
//! the full state a growing log is rewritten from, and writing the task's
//! files back at the end. What is kept follows [`Keep`]. It must not do IO.

use baton_proto::{Blob, Checkpoint as WireCheckpoint, StateRef};
use baton_task::checkpoint::{self, CheckpointError, Decoded};
use baton_task::wasi::Preopen;
use baton_task::{State, Task};

use super::exec::{wire_digest, ExecCore, ExecError, FinishReport, Keep};

/// What a persisted state write amounts to, for a durable log.
#[derive(Debug)]
pub enum Written {
    /// The store already held the state.
    Nothing,
    /// The state as a full checkpoint.
    Full(Payload),
    /// The state as a delta against the store's previous state.
    Delta(Payload),
}

/// A written state's bytes: encoded here, or as received from the peer.
#[derive(Debug)]
pub enum Payload {
    /// Encoded by this side; its buffer goes back to the encoder once
    /// logged ([`Written::recycle`]).
    Encoded(Vec<u8>),
    /// Received from the peer.
    Received(Blob),
}

impl Payload {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Encoded(v) => v,
            Payload::Received(b) => b.as_bytes(),
        }
    }
}

impl Written {
    /// Hands an encoded checkpoint's buffer back to the encoder: a fresh
    /// buffer of several megabytes per point costs a page fault and the
    /// kernel's zeroing of every page, measured as a quarter of a
    /// journaled run with large deltas.
    pub fn recycle(self) {
        if let Written::Full(Payload::Encoded(v)) | Written::Delta(Payload::Encoded(v)) = self {
            baton_task::checkpoint::recycle(v);
        }
    }
}

/// What the peer is believed to hold, for deltas.
pub(super) enum Mirror {
    /// Nothing known.
    None,
    /// The peer holds the store's newest state (it sent it to us).
    Newest,
    /// The peer holds (or is being sent) this state.
    Copy(StateRef, Box<State>),
}

impl ExecCore {
    /// The state part of `Action::Persist`: make `write` the store's newest
    /// state. `Own` states come from the live task (which must be paused
    /// there); `Received` ones are decoded, checked and applied.
    ///
    /// # Errors
    ///
    /// A checkpoint that does not decode, does not apply to the store or is
    /// not the state it claims to be; a task that cannot be captured.
    pub fn persist(&mut self, write: &baton_proto::StateWrite) -> Result<Written, ExecError> {
        match write {
            baton_proto::StateWrite::Own(s) => self.persist_own(*s),
            baton_proto::StateWrite::Received(cp) => self.persist_received(cp),
        }
    }

    fn persist_own(&mut self, s: StateRef) -> Result<Written, ExecError> {
        if self.store.as_ref().is_some_and(|(r, _)| *r == s) || self.held == Some(s) {
            return Ok(Written::Nothing);
        }
        match self.keep {
            Keep::Copy => {}
            Keep::Nothing { .. } => {
                self.held = Some(s);
                return Ok(Written::Nothing);
            }
            Keep::Log => return self.persist_to_log(s),
        }
        let (Some(task), true) = (self.task.as_mut(), self.at == Some(s)) else {
            return Err(ExecError::Missing(s));
        };
        // The peer's copy must not change with ours.
        if matches!(self.mirror, Mirror::Newest) {
            self.mirror = match &self.store {
                Some((r, st)) => Mirror::Copy(*r, Box::new(st.clone())),
                None => Mirror::None,
            };
        }
        let base_matches = match (&self.store, task.base()) {
            (Some((r, _)), Some(b)) => wire_digest(b) == r.digest,
            _ => false,
        };
        if base_matches {
            // What the last steps changed, applied to the stored copy:
            // proportional to the changed pages, not to the memory size.
            let delta = task.delta()?;
            match checkpoint::decode(&delta.bytes, &self.decode_limits)? {
                Decoded::Delta(d) => {
                    if let Some((r, st)) = self.store.as_mut() {
                        d.apply(st)?;
                        *r = s;
                    }
                }
                Decoded::Full(st) => self.store = Some((s, st)),
            }
            task.rebase()?;
            Ok(Written::Delta(Payload::Encoded(delta.bytes)))
        } else {
            let full = task.checkpoint()?;
            self.store = Some((s, task.state()?));
            task.rebase()?;
            Ok(Written::Full(Payload::Encoded(full.bytes)))
        }
    }

    /// [`Keep::Log`]: what the last steps changed, for the log; nothing is
    /// kept in memory but the task's own base.
    fn persist_to_log(&mut self, s: StateRef) -> Result<Written, ExecError> {
        let (Some(task), true) = (self.task.as_mut(), self.at == Some(s)) else {
            return Err(ExecError::Missing(s));
        };
        let written = match task.base() {
            Some(_) => {
                let delta = task.delta()?;
                task.rebase()?;
                Written::Delta(Payload::Encoded(delta.bytes))
            }
            None => Written::Full(Payload::Encoded(task.checkpoint()?.bytes)),
        };
        self.held = Some(s);
        Ok(written)
    }

    /// The newest persisted state as a full checkpoint, for rewriting a log
    /// that has grown: from the store's copy, or from the live task paused
    /// there (which then takes it as its delta base, as the log will).
    ///
    /// # Errors
    ///
    /// The state is not here, or cannot be encoded.
    pub fn full_for_log(&mut self) -> Result<Vec<u8>, ExecError> {
        if let Some((_, st)) = &self.store {
            return Ok(checkpoint::encode_full(st)?.bytes);
        }
        match (self.task.as_mut(), self.held) {
            (Some(task), Some(h)) if self.at == Some(h) => Ok(task.checkpoint()?.bytes),
            (_, h) => Err(ExecError::Missing(h.unwrap_or(StateRef::new(
                baton_proto::Point(0),
                baton_proto::Digest::default(),
            )))),
        }
    }

    /// Writes the task's files back to `preopens` from the final state
    /// `state`: the store's copy, or the live task paused there.
    ///
    /// # Errors
    ///
    /// The state is not here, or a file cannot be written.
    pub fn finish(
        &mut self,
        state: StateRef,
        preopens: &[Preopen],
    ) -> Result<FinishReport, ExecError> {
        let live = self.task.as_ref().filter(|_| self.at == Some(state));
        let (written, memory) = match (&self.store, live) {
            (Some((r, st)), _) if *r == state => {
                // A state from the peer decides nothing about the host's
                // files until it is checked as a whole.
                st.host
                    .validate()
                    .map_err(|e| ExecError::WriteBack(e.to_string()))?;
                (st.host.write_back_to(preopens), st.memory().len())
            }
            (_, Some(task)) => (task.host().write_back_to(preopens), task.memory_size()),
            _ => return Err(ExecError::Missing(state)),
        };
        Ok(FinishReport {
            written: written.map_err(|e| ExecError::WriteBack(e.to_string()))?,
            memory_refused: live.and_then(Task::memory_refused),
            memory: memory as u64,
        })
    }

    fn persist_received(&mut self, cp: &WireCheckpoint) -> Result<Written, ExecError> {
        let claimed = cp.state;
        match checkpoint::decode(cp.bytes.as_bytes(), &self.decode_limits)? {
            Decoded::Full(state) => {
                if state.point != claimed.point.0 {
                    return Err(ExecError::WrongState {
                        claimed: claimed.point.0,
                        found: state.point,
                    });
                }
                let digest = state
                    .digest()
                    .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
                if wire_digest(digest) != claimed.digest {
                    return Err(CheckpointError::Malformed(
                        "the state's digest is not the one announced".into(),
                    )
                    .into());
                }
                // What the peer says is in the task's files is checked
                // before it is kept (it may be written back here later).
                state
                    .host
                    .validate()
                    .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
                self.store = Some((claimed, state));
                self.mirror = Mirror::Newest;
                return Ok(Written::Full(Payload::Received(cp.bytes.clone())));
            }
            Decoded::Delta(d) => {
                if d.point() != claimed.point.0 || wire_digest(d.digest()) != claimed.digest {
                    return Err(ExecError::WrongState {
                        claimed: claimed.point.0,
                        found: d.point(),
                    });
                }
                let Some((r, st)) = self.store.as_mut() else {
                    return Err(ExecError::Missing(cp.base.unwrap_or(claimed)));
                };
                // `apply` checks the base digest and leaves the state
                // unchanged if anything is wrong.
                d.apply(st)?;
                *r = claimed;
                // Checked before it is reported held; a bad one ends the
                // task (the store's copy is no longer trusted either).
                st.host
                    .validate()
                    .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
            }
        }
        self.mirror = Mirror::Newest;
        Ok(Written::Delta(Payload::Received(cp.bytes.clone())))
    }

    /// `Action::Capture`: encode `state` for the peer, as a delta against
    /// `base` if the mirror holds it, else in full. The executor stays
    /// where it is.
    ///
    /// # Errors
    ///
    /// The state is not here, or cannot be encoded.
    pub fn capture(
        &mut self,
        state: StateRef,
        base: Option<StateRef>,
    ) -> Result<WireCheckpoint, ExecError> {
        let live;
        let source: &State = match &self.store {
            Some((r, st)) if *r == state => st,
            _ => match (self.task.as_mut(), self.at == Some(state)) {
                (Some(task), true) => {
                    live = task.state()?;
                    &live
                }
                _ => return Err(ExecError::Missing(state)),
            },
        };
        let mirror = std::mem::replace(&mut self.mirror, Mirror::None);
        let (bytes, delta_base, mirror) = match mirror {
            // The usual case: what changed since the last state shipped,
            // applied to the mirror in place (no copy of the memory).
            Mirror::Copy(m, mut ms) if base == Some(m) => {
                let cp = checkpoint::encode_delta(&ms, source)?;
                if let Decoded::Delta(d) = checkpoint::decode(&cp.bytes, &self.decode_limits)? {
                    d.apply(&mut ms)?;
                }
                (cp.bytes, Some(m), Mirror::Copy(state, ms))
            }
            Mirror::Newest => match &self.store {
                Some((m, ms)) if base == Some(*m) => {
                    let cp = checkpoint::encode_delta(ms, source)?;
                    let next = if *m == state {
                        Mirror::Newest
                    } else {
                        Mirror::Copy(state, Box::new(source.clone()))
                    };
                    (cp.bytes, Some(*m), next)
                }
                _ => {
                    let cp = checkpoint::encode_full(source)?;
                    (
                        cp.bytes,
                        None,
                        Mirror::Copy(state, Box::new(source.clone())),
                    )
                }
            },
            _ => {
                let cp = checkpoint::encode_full(source)?;
                (
                    cp.bytes,
                    None,
                    Mirror::Copy(state, Box::new(source.clone())),
                )
            }
        };
        self.mirror = mirror;
        Ok(WireCheckpoint {
            state,
            base: delta_base,
            bytes: Blob::from(bytes),
        })
    }
}
