//! Which locals of a function are live where a point can be taken.
//!
//! The unwind path saves a function's locals into its frame. If every site
//! branched to the save code with every local, every local would be kept
//! alive across every call that may suspend, which costs the compiler
//! registers and spills on the hot path. So at each site the locals that
//! are dead there (not read before being written again, on any path) are
//! replaced by zeros on the way to the save code; restoring a dead local
//! to zero changes nothing the program can see.
//!
//! This module only computes liveness, by a backward pass over the
//! structured code (iterated until every loop header's set is stable). It
//! must not emit anything.

use std::collections::{HashMap, HashSet};

use wasmparser::Operator;

/// A set of local indices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Set(Vec<u64>);

impl Set {
    fn with_capacity(n: usize) -> Set {
        Set(vec![0; n.div_ceil(64)])
    }

    fn insert(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn remove(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    /// Whether `i` is in the set.
    pub(crate) fn contains(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn union(&mut self, other: &Set) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }
}

struct Frame {
    /// Operator index of the block, loop or if (`usize::MAX` for the
    /// function).
    opener: usize,
    /// Live where a branch to this frame's label goes.
    label: Set,
    /// Live at the frame's end (for an `if`, where its then-body flows).
    end: Set,
    /// Live at the start of the else-body, once walked.
    else_start: Option<Set>,
}

/// Live sets: after each operator in `after` and before each operator in
/// `before`, over the first `locals` locals.
pub(crate) struct Liveness {
    /// Live right after the operator (for calls: across the call).
    pub(crate) after: HashMap<usize, Set>,
    /// Live right before the operator (for a body's first operator: at the
    /// body's start).
    pub(crate) before: HashMap<usize, Set>,
}

/// Computes liveness for `ops` (a whole function body, ending with its
/// `end`), recording the sets after the operators in `after` and before the
/// operators in `before`.
pub(crate) fn liveness(
    ops: &[Operator<'_>],
    locals: usize,
    after: &[usize],
    before: &[usize],
) -> Liveness {
    let openers = openers(ops);
    let want_after: HashSet<usize> = after.iter().copied().collect();
    let want_before: HashSet<usize> = before.iter().copied().collect();
    let mut loops: HashMap<usize, Set> = HashMap::new();
    // Each pass can only grow the loop headers' sets, which are bounded, so
    // this ends; in practice after two or three passes.
    loop {
        let mut out = Liveness {
            after: HashMap::new(),
            before: HashMap::new(),
        };
        let mut walk = Walk {
            ops,
            locals,
            openers: &openers,
            loops: &mut loops,
            live: Set::with_capacity(locals),
            frames: Vec::new(),
            changed: false,
        };
        for i in (0..ops.len()).rev() {
            if want_after.contains(&i) {
                out.after.insert(i, walk.live.clone());
            }
            walk.step(i);
            if want_before.contains(&i) {
                out.before.insert(i, walk.live.clone());
            }
        }
        if !walk.changed {
            return out;
        }
    }
}

/// The block, loop or if each `end` closes (`usize::MAX` for the
/// function's own), by one forward walk.
fn openers(ops: &[Operator<'_>]) -> HashMap<usize, usize> {
    let mut opener_of_end = HashMap::new();
    let mut open: Vec<usize> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => open.push(i),
            Operator::End => {
                opener_of_end.insert(i, open.pop().unwrap_or(usize::MAX));
            }
            _ => {}
        }
    }
    opener_of_end
}

/// One backward pass: the live set and the frames around the operator.
struct Walk<'w, 'a> {
    ops: &'w [Operator<'a>],
    locals: usize,
    openers: &'w HashMap<usize, usize>,
    /// Live at each loop header, from the passes so far.
    loops: &'w mut HashMap<usize, Set>,
    live: Set,
    frames: Vec<Frame>,
    /// Whether a loop header's set grew in this pass.
    changed: bool,
}

impl Walk<'_, '_> {
    /// From live after operator `i` to live before it.
    fn step(&mut self, i: usize) {
        let locals = self.locals;
        match &self.ops[i] {
            Operator::End => self.end(i),
            Operator::Else => {
                if let Some(f) = self.frames.last_mut() {
                    f.else_start = Some(self.live.clone());
                    self.live = f.end.clone();
                }
            }
            Operator::Block { .. } => {
                self.frames.pop();
            }
            Operator::Loop { .. } => {
                if let Some(f) = self.frames.pop() {
                    let known = self
                        .loops
                        .entry(f.opener)
                        .or_insert_with(|| Set::with_capacity(locals));
                    let was = known.clone();
                    known.union(&self.live);
                    if *known != was {
                        self.changed = true;
                    }
                }
            }
            Operator::If { .. } => {
                if let Some(f) = self.frames.pop() {
                    self.live.union(f.else_start.as_ref().unwrap_or(&f.end));
                }
            }
            Operator::Br { relative_depth } => {
                self.live = label(&self.frames, *relative_depth, locals);
            }
            Operator::BrIf { relative_depth } => {
                self.live
                    .union(&label(&self.frames, *relative_depth, locals));
            }
            Operator::BrTable { targets } => {
                let mut all = label(&self.frames, targets.default(), locals);
                for t in targets.targets().flatten() {
                    all.union(&label(&self.frames, t, locals));
                }
                self.live = all;
            }
            Operator::Return | Operator::Unreachable => self.live.clear(),
            Operator::LocalGet { local_index } => self.live.insert(*local_index),
            Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
                self.live.remove(*local_index)
            }
            _ => {}
        }
    }

    /// Walking backward, an `end` opens a frame: its label is live at its
    /// end (a block, an if) or at its header (a loop, as known so far).
    fn end(&mut self, i: usize) {
        let opener = self.openers.get(&i).copied().unwrap_or(usize::MAX);
        if opener == usize::MAX {
            // The function's end: nothing is live after it.
            self.live.clear();
        }
        let label = match self.ops.get(opener) {
            Some(Operator::Loop { .. }) => self
                .loops
                .get(&opener)
                .cloned()
                .unwrap_or_else(|| Set::with_capacity(self.locals)),
            _ => self.live.clone(),
        };
        self.frames.push(Frame {
            opener,
            label,
            end: self.live.clone(),
            else_start: None,
        });
    }
}

/// Live where a branch of `depth` goes: the frame's label, or nothing for
/// the function's own label (a return).
fn label(frames: &[Frame], depth: u32, locals: usize) -> Set {
    frames
        .len()
        .checked_sub(1 + depth as usize)
        .and_then(|k| frames.get(k))
        .filter(|f| f.opener != usize::MAX)
        .map(|f| f.label.clone())
        .unwrap_or_else(|| Set::with_capacity(locals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmparser::{FunctionBody, Parser, Payload};

    /// Liveness across the first call of the last function of a module in
    /// text form; returns it and the call's operator index.
    fn of(wat: &str) -> (Liveness, usize) {
        let bytes = wat::parse_str(wat).unwrap();
        let mut body: Option<FunctionBody<'_>> = None;
        for p in Parser::new(0).parse_all(&bytes) {
            if let Payload::CodeSectionEntry(b) = p.unwrap() {
                body = Some(b);
            }
        }
        let body = body.unwrap();
        let mut ops = Vec::new();
        let mut r = body.get_operators_reader().unwrap();
        while !r.eof() {
            ops.push(r.read().unwrap());
        }
        let call = ops
            .iter()
            .position(|o| matches!(o, Operator::Call { .. }))
            .unwrap();
        (liveness(&ops, 8, &[call], &[]), call)
    }

    #[test]
    fn a_local_read_after_the_call_is_live_and_one_written_first_is_not() {
        let (l, call) = of(r#"(module (func $f (result i32) (i32.const 0))
                (func (param i32) (local i32)
                  (local.get 0) (drop (call $f)) (drop)
                  (local.set 1 (i32.const 1))
                  (drop (i32.add (local.get 1) (local.get 0)))))"#);
        let after = &l.after[&call];
        assert!(after.contains(0));
        assert!(!after.contains(1));
    }

    #[test]
    fn a_loop_keeps_alive_what_its_next_round_reads() {
        // local 1 is read at the top of the loop and written after the call:
        // across the call it is dead; local 0 is read every round: live.
        let (l, call) = of(r#"(module (func $f (result i32) (i32.const 0))
                (func (param i32) (local i32)
                  (loop $l
                    (drop (local.get 1))
                    (drop (call $f))
                    (local.set 1 (local.get 0))
                    (br_if $l (local.get 0)))))"#);
        let after = &l.after[&call];
        assert!(after.contains(0));
        assert!(!after.contains(1));
    }
}
