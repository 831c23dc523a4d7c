//! The transform of one function that may suspend.
//!
//! Three passes over its operators:
//!
//! 1. **Read** (with the validator alongside, for the operand types): the
//!    tree of bodies (function, block, loop, then, else) and, in each, its
//!    *children*: calls that may suspend and constructs that contain such
//!    calls or a loop. Code the validator knows to be unreachable is left
//!    alone.
//! 2. **Number** the sites in program order, so that every child covers a
//!    contiguous range, and decide where each body's *guard* goes. A guard
//!    at a loop header (or the entry of a directly recursive function)
//!    counts one unit of the work budget and branches when it runs out; the
//!    entry of any other function tests the state global; any other guard
//!    tests a local. Between reading and emitting, [`super::live`] finds
//!    which locals are dead at each site. Its cold
//!    side restores the frame (at the function's entry), dispatches a
//!    rewind, or takes a point (at the entry and at loop headers, when the
//!    budget ran out and nothing is rewinding). A body that begins
//!    with a child block or loop hands its guard to that child, so a chain
//!    of blocks opened at one place (a `switch`) costs one check, not one
//!    per block.
//! 3. **Emit**: every child not at the start of its body gets a *wrapper*
//!    block that ends just before it, so that a rewind can skip everything
//!    before it with one branch (pushing the operand values the skipped code
//!    would have left, which are kept in scratch locals on the way in).
//!    After each call that may suspend, a check branches to the shared save
//!    code if the callee is unwinding.

use std::collections::HashMap;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType as EBlock, Function, Ieee32, Ieee64, Instruction as I, MemArg};
use wasmparser::{FuncValidator, FunctionBody, Operator, ValType, ValidatorResources};

use super::analysis::{invalid, Module, Refusal};
use super::live::{self, Set};
use super::{Types, BUDGET, FRAMES, REWINDING, STATE, TOP, UNWINDING};

/// Deepest nesting of blocks the transform follows (it recurses).
const MAX_NESTING: usize = 4000;

pub(crate) struct Out {
    pub(crate) function: Function,
    pub(crate) sites: usize,
    /// Byte offsets (from the start of the body) of the `if`s that only a
    /// point or a rewind takes: hinted as not taken, so that the compiler
    /// lays their code out of the way.
    pub(crate) cold: Vec<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BodyKind {
    Func,
    Block,
    Loop,
    Then,
    Else,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ChildKind {
    Call,
    Block,
    Loop,
    If,
}

struct Body {
    kind: BodyKind,
    /// Index of the first operator inside the body.
    start: usize,
    children: Vec<usize>,
    /// Whether a site lies inside (or it is a loop body).
    live: bool,
    /// Whether everything read so far in it has no effects (see
    /// [`Child::reached`]).
    pure: bool,
    /// As [`Child::keep`], for a point at the body's start.
    keep: Vec<(u32, ValType)>,
    first: u32,
    last: u32,
    guard: Option<Guard>,
}

struct Guard {
    point: Option<u32>,
    entry: bool,
    /// Bodies that handed their guard down to this one.
    also: Vec<usize>,
}

struct Child {
    /// Index of the call or construct operator.
    op: usize,
    kind: ChildKind,
    /// Operand types of its body's frame just before the operator.
    stack: Vec<ValType>,
    /// Absolute operand depth of `stack[0]`.
    base: u32,
    bodies: Vec<usize>,
    first: u32,
    last: u32,
    /// Whether a rewind gets to it just by running its body from the
    /// start: it is the body's first child, and everything before it is
    /// free of effects and reads only locals that it cannot change (so a
    /// call after `local.get`s and constants, not a block or an `if`).
    reached: bool,
    /// The scratch slots (absolute depth, type) holding the operand values
    /// an unwind from inside it must save (its own and its enclosers').
    keep: Vec<(u32, ValType)>,
    /// Locals the code before it reads (when `reached`): a rewind reads
    /// them again, so they count as live at it.
    prefix_reads: Vec<u32>,
}

/// Whether running `op` again during a rewind, with the locals restored,
/// changes nothing and pushes what it pushed the first time (given that
/// nothing between it and the call that follows can write a local).
fn pure(op: &Operator<'_>) -> bool {
    use Operator as O;
    matches!(
        op,
        O::Nop
            | O::Drop
            | O::Select
            | O::LocalGet { .. }
            | O::I32Const { .. }
            | O::I64Const { .. }
            | O::F32Const { .. }
            | O::F64Const { .. }
            | O::I32Eqz
            | O::I32Eq
            | O::I32Ne
            | O::I32LtS
            | O::I32LtU
            | O::I32GtS
            | O::I32GtU
            | O::I32LeS
            | O::I32LeU
            | O::I32GeS
            | O::I32GeU
            | O::I64Eqz
            | O::I64Eq
            | O::I64Ne
            | O::I32Add
            | O::I32Sub
            | O::I32Mul
            | O::I32And
            | O::I32Or
            | O::I32Xor
            | O::I32Shl
            | O::I32ShrS
            | O::I32ShrU
            | O::I64Add
            | O::I64Sub
            | O::I64Mul
            | O::I64And
            | O::I64Or
            | O::I64Xor
            | O::I64Shl
            | O::I64ShrS
            | O::I64ShrU
            | O::I32WrapI64
            | O::I64ExtendI32S
            | O::I64ExtendI32U
            | O::I32Extend8S
            | O::I32Extend16S
    )
}

/// The operand slots of every open construct, outermost first.
fn enclosing(open: &[Open]) -> Vec<(u32, ValType)> {
    let mut out = Vec::new();
    for o in open {
        if let Some(c) = &o.child {
            out.extend(
                c.stack
                    .iter()
                    .enumerate()
                    .map(|(d, t)| (c.base + d as u32, *t)),
            );
        }
    }
    out
}

/// An open construct during the read.
struct Open {
    /// `None` in unreachable code.
    child: Option<Child>,
    /// Body currently being read (then, then else).
    body: usize,
}

struct Func<'a, 'm> {
    module: &'m Module,
    index: u32,
    ops: Vec<Operator<'a>>,
    bodies: Vec<Body>,
    children: Vec<Child>,
    /// Child at each operator index.
    child_at: HashMap<usize, usize>,
    /// Body beginning after each operator index (`usize::MAX` for the
    /// function body).
    body_after: HashMap<usize, usize>,
    /// Types of every local: params, the function's own, then ours.
    locals: Vec<ValType>,
    declared: Vec<(u32, ValType)>,
    scratch: HashMap<(u32, ValType), u32>,
    site_local: u32,
    ptr_local: u32,
    /// Set while this function's rewind is finding its way to its site, so
    /// that guards inside the function test a local, not memory.
    rw_local: u32,
    /// Scratch for the budget count.
    budget_local: u32,
    next_site: u32,
    results: Vec<ValType>,
    /// The function's own locals' liveness at sites (set after the read).
    live: Option<live::Liveness>,
}

pub(crate) fn transform<'a>(
    module: &Module,
    suspends: &[bool],
    index: u32,
    counts_entry: bool,
    mut fv: FuncValidator<ValidatorResources>,
    body: &FunctionBody<'a>,
    types: &mut Types,
) -> Result<Out, Refusal> {
    let (params, results) = module
        .func_type(index)
        .cloned()
        .ok_or_else(|| Refusal::Internal(format!("function {index} has no type")))?;
    let mut locals = params.clone();
    let mut declared = Vec::new();
    let mut reader = body.get_locals_reader().map_err(invalid)?;
    for _ in 0..reader.get_count() {
        let offset = reader.original_position();
        let (count, ty) = reader.read().map_err(invalid)?;
        fv.define_locals(offset, count, ty).map_err(invalid)?;
        declared.push((count, ty));
        locals.extend(std::iter::repeat_n(ty, count as usize));
    }
    let site_local = locals.len() as u32;
    let ptr_local = site_local + 1;
    let rw_local = site_local + 2;
    let budget_local = site_local + 3;
    locals.push(ValType::I32);
    locals.push(ValType::I32);
    locals.push(ValType::I32);
    locals.push(ValType::I64);
    let mut f = Func {
        module,
        index,
        ops: Vec::new(),
        bodies: Vec::new(),
        children: Vec::new(),
        child_at: HashMap::new(),
        body_after: HashMap::new(),
        locals,
        declared,
        scratch: HashMap::new(),
        site_local,
        ptr_local,
        rw_local,
        budget_local,
        next_site: 0,
        results,
        live: None,
    };
    f.read(suspends, &mut fv, body)?;
    f.number(0, counts_entry, true, Vec::new(), 0)?;
    let calls: Vec<usize> = f
        .children
        .iter()
        .filter(|c| c.kind == ChildKind::Call)
        .map(|c| c.op)
        .collect();
    let points: Vec<usize> = f
        .bodies
        .iter()
        .filter(|b| b.guard.as_ref().is_some_and(|g| g.point.is_some()))
        .map(|b| b.start)
        .collect();
    f.live = Some(live::liveness(&f.ops, site_local as usize, &calls, &points));
    let sites = f.next_site as usize;
    let (function, cold) = f.emit(types)?;
    Ok(Out {
        function,
        sites,
        cold,
    })
}

fn val(t: ValType) -> Result<wasm_encoder::ValType, Refusal> {
    RoundtripReencoder
        .val_type(t)
        .map_err(|e| Refusal::Internal(e.to_string()))
}

fn size_of(t: ValType) -> u32 {
    match t {
        ValType::I32 | ValType::F32 => 4,
        ValType::I64 | ValType::F64 => 8,
        ValType::V128 => 16,
        ValType::Ref(_) => 0,
    }
}

fn mem1(offset: u64, align: u32) -> MemArg {
    MemArg {
        offset,
        align,
        memory_index: 1,
    }
}

impl<'a> Func<'a, '_> {
    // ---- pass 1: read ------------------------------------------------

    fn new_body(&mut self, kind: BodyKind, start: usize) -> usize {
        self.bodies.push(Body {
            kind,
            start,
            children: Vec::new(),
            live: kind == BodyKind::Loop,
            pure: true,
            keep: Vec::new(),
            first: 0,
            last: 0,
            guard: None,
        });
        self.bodies.len() - 1
    }

    /// The operand types of the current frame, bottom first, and the
    /// absolute depth of the first; `None` where the code is unreachable.
    fn frame_stack(fv: &FuncValidator<ValidatorResources>) -> Option<(Vec<ValType>, u32)> {
        let frame = fv.get_control_frame(0)?;
        if frame.unreachable {
            return None;
        }
        let height = fv.operand_stack_height() as usize;
        let base = frame.height;
        let mut out = Vec::with_capacity(height.saturating_sub(base));
        for abs in base..height {
            out.push(fv.get_operand_type(height - 1 - abs)??);
        }
        Some((out, base as u32))
    }

    fn scratch_for(&mut self, stack: &[ValType], base: u32) -> Result<(), Refusal> {
        for (d, t) in stack.iter().enumerate() {
            if matches!(t, ValType::Ref(_)) {
                return Err(Refusal::Uses("reference values across calls".to_string()));
            }
            let key = (base + d as u32, *t);
            if !self.scratch.contains_key(&key) {
                self.scratch.insert(key, self.locals.len() as u32);
                self.locals.push(*t);
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        suspends: &[bool],
        fv: &mut FuncValidator<ValidatorResources>,
        body: &FunctionBody<'a>,
    ) -> Result<(), Refusal> {
        let root = self.new_body(BodyKind::Func, 0);
        self.body_after.insert(usize::MAX, root);
        let mut open: Vec<Open> = vec![Open {
            child: None,
            body: root,
        }];
        let mut dead = 0usize;
        let mut ops = body.get_operators_reader().map_err(invalid)?;
        while !ops.eof() {
            let (op, offset) = ops.read_with_offset().map_err(invalid)?;
            let i = self.ops.len();
            let here = if dead > 0 {
                None
            } else {
                Self::frame_stack(fv)
            };
            let current = open.last().map(|o| o.body).filter(|b| *b != usize::MAX);
            match &op {
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                    if open.len() > MAX_NESTING {
                        return Err(Refusal::Uses(format!(
                            "blocks nested more than {MAX_NESTING} deep"
                        )));
                    }
                    let opened = self.open_construct(&op, i, here, &open);
                    if opened.child.is_none() {
                        dead += 1;
                    }
                    open.push(opened);
                }
                Operator::Else => {
                    if let Some(top) = open.last_mut() {
                        if let Some(child) = top.child.as_mut() {
                            let b = self.bodies.len();
                            child.bodies.push(b);
                            top.body = b;
                            let keep = self.bodies[child.bodies[0]].keep.clone();
                            self.new_body(BodyKind::Else, i + 1);
                            self.bodies[b].keep = keep;
                            self.body_after.insert(i, b);
                        }
                    }
                }
                Operator::End => {
                    let closed = open
                        .pop()
                        .ok_or_else(|| Refusal::Internal("unbalanced end".to_string()))?;
                    match closed.child {
                        None if closed.body == usize::MAX => dead -= 1,
                        None => {} // the function's own end
                        Some(child) => {
                            let live = child.bodies.iter().any(|b| self.bodies[*b].live);
                            if live {
                                self.add_child(&open, child)?;
                            }
                        }
                    }
                }
                Operator::Call { function_index } => {
                    if let Some((stack, base)) = here {
                        if self.module.call_may_suspend(suspends, *function_index) {
                            self.add_call(&open, i, stack, base)?;
                        }
                    }
                }
                Operator::CallIndirect { type_index, .. } => {
                    if let Some((stack, base)) = here {
                        if self.module.indirect_may_suspend(suspends, *type_index) {
                            self.add_call(&open, i, stack, base)?;
                        }
                    }
                }
                _ => {}
            }
            if !pure(&op) {
                if let Some(b) = current {
                    self.bodies[b].pure = false;
                }
            }
            fv.op(offset, &op).map_err(invalid)?;
            self.ops.push(op);
        }
        Ok(())
    }

    /// A block, loop or if at operator `i`: its first body, and the child
    /// it becomes if it turns out to hold a site; in unreachable code
    /// (`here` is `None`), nothing.
    fn open_construct(
        &mut self,
        op: &Operator<'_>,
        i: usize,
        here: Option<(Vec<ValType>, u32)>,
        open: &[Open],
    ) -> Open {
        let (kind, body_kind) = match op {
            Operator::Block { .. } => (ChildKind::Block, BodyKind::Block),
            Operator::Loop { .. } => (ChildKind::Loop, BodyKind::Loop),
            _ => (ChildKind::If, BodyKind::Then),
        };
        let Some((stack, base)) = here else {
            return Open {
                child: None,
                body: usize::MAX,
            };
        };
        let b = self.new_body(body_kind, i + 1);
        self.body_after.insert(i, b);
        let mut keep = enclosing(open);
        keep.extend(stack.iter().enumerate().map(|(d, t)| (base + d as u32, *t)));
        self.bodies[b].keep = keep;
        Open {
            child: Some(Child {
                op: i,
                kind,
                stack,
                base,
                bodies: vec![b],
                first: 0,
                last: 0,
                reached: false,
                keep: Vec::new(),
                prefix_reads: Vec::new(),
            }),
            body: b,
        }
    }

    fn add_call(
        &mut self,
        open: &[Open],
        op: usize,
        stack: Vec<ValType>,
        base: u32,
    ) -> Result<(), Refusal> {
        let mut keep = enclosing(open);
        keep.extend(stack.iter().enumerate().map(|(d, t)| (base + d as u32, *t)));
        self.add_child(
            open,
            Child {
                op,
                kind: ChildKind::Call,
                stack,
                base,
                bodies: Vec::new(),
                first: 0,
                last: 0,
                reached: false,
                keep,
                prefix_reads: Vec::new(),
            },
        )
    }

    fn add_child(&mut self, open: &[Open], mut child: Child) -> Result<(), Refusal> {
        let parent = open
            .last()
            .map(|o| o.body)
            .filter(|b| *b != usize::MAX)
            .ok_or_else(|| Refusal::Internal("a site outside any body".to_string()))?;
        let body = &self.bodies[parent];
        child.reached = body.children.is_empty()
            && (child.op == body.start || (child.kind == ChildKind::Call && body.pure));
        if child.reached {
            // A rewind runs the code before it again, reading these locals:
            // they must survive the unwind.
            for op in &self.ops[body.start.min(child.op)..child.op] {
                if let Operator::LocalGet { local_index } = op {
                    child.prefix_reads.push(*local_index);
                }
            }
        }
        self.scratch_for(&child.stack, child.base)?;
        self.child_at.insert(child.op, self.children.len());
        self.children.push(child);
        let c = self.children.len() - 1;
        self.bodies[parent].children.push(c);
        self.bodies[parent].live = true;
        Ok(())
    }

    // ---- pass 2: number ---------------------------------------------

    fn take_site(&mut self) -> u32 {
        self.next_site += 1;
        self.next_site - 1
    }

    fn number(
        &mut self,
        b: usize,
        wants_point: bool,
        entry: bool,
        mut delegators: Vec<usize>,
        depth: usize,
    ) -> Result<(), Refusal> {
        if depth > MAX_NESTING {
            return Err(Refusal::Uses(format!(
                "blocks nested more than {MAX_NESTING} deep"
            )));
        }
        let first = self.next_site;
        let kind = self.bodies[b].kind;
        let wants_point = wants_point || kind == BodyKind::Loop;
        let children = self.bodies[b].children.clone();
        let chain = children.first().copied().filter(|c| {
            let c = &self.children[*c];
            c.op == self.bodies[b].start && matches!(c.kind, ChildKind::Block | ChildKind::Loop)
        });
        let rest = match chain {
            Some(c) => {
                delegators.push(b);
                let inner = self.children[c].bodies[0];
                self.children[c].first = self.next_site;
                self.number(inner, wants_point, entry, delegators, depth + 1)?;
                self.children[c].last = self.next_site.wrapping_sub(1);
                &children[1..]
            }
            None => {
                let point = wants_point.then(|| self.take_site());
                let dispatch = children.iter().any(|c| !self.children[*c].reached)
                    || delegators
                        .iter()
                        .any(|d| self.bodies[*d].children.len() > 1);
                if point.is_some() || entry || dispatch {
                    self.bodies[b].guard = Some(Guard {
                        point,
                        entry,
                        also: delegators,
                    });
                }
                &children[..]
            }
        };
        for c in rest.iter().copied() {
            self.children[c].first = self.next_site;
            match self.children[c].kind {
                ChildKind::Call => {
                    self.take_site();
                }
                _ => {
                    for inner in self.children[c].bodies.clone() {
                        self.number(inner, false, false, Vec::new(), depth + 1)?;
                    }
                }
            }
            self.children[c].last = self.next_site.wrapping_sub(1);
        }
        self.bodies[b].first = first;
        self.bodies[b].last = self.next_site.wrapping_sub(1);
        Ok(())
    }

    // ---- pass 3: emit -----------------------------------------------

    fn block_type(&self, types: &mut Types, results: &[ValType]) -> Result<EBlock, Refusal> {
        Ok(match results {
            [] => EBlock::Empty,
            [t] => EBlock::Result(val(*t)?),
            many => EBlock::FunctionType(types.intern(&[], many)),
        })
    }

    /// The locals a frame saves, with their offsets; and the frame size.
    fn frame_layout(&self) -> (Vec<(u32, ValType, u32)>, u32) {
        let mut out = Vec::new();
        let mut offset = 8u32;
        for (i, t) in self.locals.iter().enumerate() {
            let i = i as u32;
            if i == self.site_local
                || i == self.ptr_local
                || i == self.rw_local
                || i == self.budget_local
            {
                continue;
            }
            out.push((i, *t, offset));
            offset += size_of(*t);
        }
        (out, offset)
    }

    fn emit(&mut self, types: &mut Types) -> Result<(Function, Vec<u32>), Refusal> {
        let mut decl: Vec<(u32, wasm_encoder::ValType)> = Vec::new();
        for (n, t) in &self.declared {
            decl.push((*n, val(*t)?));
        }
        let first_ours = self.site_local as usize;
        for t in &self.locals[first_ours..] {
            decl.push((1, val(*t)?));
        }
        let mut e = Emitter {
            state: self.module.globals,
            budget: self.module.globals + 1,
            f: Function::new(decl),
            // The function's own label.
            labels: vec![Label::Other],
            orig: Vec::new(),
            wrapper_pos: HashMap::new(),
            save_pos: 1,
            rt: RoundtripReencoder,
            cold: Vec::new(),
        };
        let (layout, frame) = self.frame_layout();
        // `$save`, reached with the site index by every unwinding branch;
        // inside it `$ret`, which stands for the original function label.
        e.save_pos = e.open(
            I::Block(EBlock::Result(wasm_encoder::ValType::I32)),
            Label::Other,
        );
        let ret = self.block_type(types, &self.results.clone())?;
        e.open(I::Block(ret), Label::Orig);
        self.begin_body(&mut e, types, usize::MAX, &layout)?;
        let ops = std::mem::take(&mut self.ops);
        for (i, op) in ops.iter().enumerate() {
            if let Some(c) = self.child_at.get(&i).copied() {
                self.before_child(&mut e, c);
            }
            match op {
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                    let ins = e.reencode(op.clone())?;
                    e.open(ins, Label::Orig);
                    self.begin_body(&mut e, types, i, &layout)?;
                }
                Operator::Else => {
                    e.f.instruction(&I::Else);
                    self.begin_body(&mut e, types, i, &layout)?;
                }
                Operator::End => {
                    if e.orig.len() == 1 {
                        // The function's end: close `$ret`, return normally;
                        // after `$save`, the unwinding epilogue.
                        e.close();
                        e.f.instruction(&I::Return);
                        e.close();
                        self.save_tail(&mut e, &layout, frame)?;
                        e.f.instruction(&I::End);
                    } else {
                        e.close();
                    }
                }
                Operator::Br { .. } | Operator::BrIf { .. } | Operator::BrTable { .. } => {
                    e.branch(op)?;
                }
                Operator::Call { .. } | Operator::CallIndirect { .. } => {
                    self.call(&mut e, i, op, &layout)?;
                }
                Operator::Delegate { .. }
                | Operator::Rethrow { .. }
                | Operator::BrOnNull { .. }
                | Operator::BrOnNonNull { .. }
                | Operator::BrOnCast { .. }
                | Operator::BrOnCastFail { .. } => {
                    return Err(Refusal::Uses(
                        "branches of the GC or exception proposals".to_string(),
                    ))
                }
                other => {
                    let ins = e.reencode(other.clone())?;
                    e.f.instruction(&ins);
                }
            }
        }
        Ok((e.f, e.cold))
    }

    /// A call: as it was, and if it may suspend, the test after it.
    fn call(
        &self,
        e: &mut Emitter,
        i: usize,
        op: &Operator<'_>,
        layout: &[(u32, ValType, u32)],
    ) -> Result<(), Refusal> {
        let ins = e.reencode(op.clone())?;
        e.f.instruction(&ins);
        if let Some(c) = self.child_at.get(&i) {
            // If this function was rewinding, the callee took the rewind on
            // and it is over by now (a call may be reached without passing
            // a guard, so this is the one place that always sees it end).
            e.f.instruction(&I::I32Const(0));
            e.f.instruction(&I::LocalSet(self.rw_local));
            let site = self.children[*c].first;
            let zeros = self.dead(
                self.live.as_ref().and_then(|l| l.after.get(&i)),
                &self.children[*c].keep,
                &self.children[*c].prefix_reads,
                layout,
            );
            e.after_call(site, &zeros);
        }
        Ok(())
    }

    /// At the start of a body: the wrappers of its children, then its
    /// guard.
    fn begin_body(
        &mut self,
        e: &mut Emitter,
        types: &mut Types,
        after: usize,
        layout: &[(u32, ValType, u32)],
    ) -> Result<(), Refusal> {
        let Some(b) = self.body_after.get(&after).copied() else {
            return Ok(());
        };
        let wrapped: Vec<usize> = self.bodies[b]
            .children
            .iter()
            .copied()
            .filter(|c| !self.children[*c].reached)
            .collect();
        for c in wrapped.iter().rev() {
            let bt = self.block_type(types, &self.children[*c].stack.clone())?;
            e.open(I::Block(bt), Label::Wrapper(*c));
            e.wrapper_pos.insert(*c, e.labels.len() - 1);
        }
        if self.bodies[b].guard.is_some() {
            self.guard(e, b, layout)?;
        }
        Ok(())
    }

    /// Before a child's operator: keep its frame's operand values in
    /// scratch locals (an unwind inside saves them; a rewind pushes them
    /// back), then close its wrapper.
    fn before_child(&self, e: &mut Emitter, c: usize) {
        let child = &self.children[c];
        for (d, t) in child.stack.iter().enumerate().rev() {
            let l = self.scratch[&(child.base + d as u32, *t)];
            e.f.instruction(&I::LocalSet(l));
        }
        for (d, t) in child.stack.iter().enumerate() {
            let l = self.scratch[&(child.base + d as u32, *t)];
            e.f.instruction(&I::LocalGet(l));
        }
        if e.labels.last() == Some(&Label::Wrapper(c)) {
            e.close();
        }
    }

    fn guard(
        &self,
        e: &mut Emitter,
        b: usize,
        layout: &[(u32, ValType, u32)],
    ) -> Result<(), Refusal> {
        let Some(guard) = &self.bodies[b].guard else {
            return Ok(());
        };
        // Loop headers (and recursive entries) count the budget, which the
        // host makes negative while rewinding, so the rare side is taken
        // then too; other entries test the state global; a guard inside the
        // function can only be reached rewinding when the entry found the
        // state rewinding and said so in `rw`.
        if guard.point.is_some() {
            e.f.instruction(&I::GlobalGet(e.budget));
            e.f.instruction(&I::I64Const(1));
            e.f.instruction(&I::I64Sub);
            e.f.instruction(&I::LocalTee(self.budget_local));
            e.f.instruction(&I::GlobalSet(e.budget));
            e.f.instruction(&I::LocalGet(self.budget_local));
            e.f.instruction(&I::I64Const(0));
            e.f.instruction(&I::I64LtS);
        } else if guard.entry {
            // An entry that does not count: only a rewind takes its rare
            // side.
            e.f.instruction(&I::GlobalGet(e.state));
        } else {
            e.f.instruction(&I::LocalGet(self.rw_local));
        }
        let g = e.cold_if();
        // Rewinding: restore (at the entry), then find the way in.
        if guard.entry {
            e.state_is(REWINDING);
        } else {
            e.f.instruction(&I::LocalGet(self.rw_local));
        }
        e.open(I::If(EBlock::Empty), Label::Other);
        if guard.entry {
            self.restore(e, layout)?;
            e.f.instruction(&I::I32Const(1));
            e.f.instruction(&I::LocalSet(self.rw_local));
        }
        if let Some(p) = guard.point {
            e.site_in(self.site_local, p, p);
            e.open(I::If(EBlock::Empty), Label::Other);
            e.finish_rewind();
            e.f.instruction(&I::I32Const(0));
            e.f.instruction(&I::LocalSet(self.rw_local));
            e.f.instruction(&I::Br(e.depth(g)));
            e.close();
        }
        let mut levels = vec![(b, 0usize)];
        levels.extend(guard.also.iter().map(|a| (*a, 1usize)));
        for (body, skip) in levels {
            for c in self.bodies[body].children[skip..].iter().copied() {
                self.dispatch_to(e, c, g)?;
            }
        }
        e.f.instruction(&I::Unreachable);
        e.close();
        // Not rewinding: the budget ran out, a point here.
        if let Some(p) = guard.point {
            let start = self.bodies[b].start;
            let zeros = self.dead(
                self.live.as_ref().and_then(|l| l.before.get(&start)),
                &self.bodies[b].keep,
                &[],
                layout,
            );
            e.zero(&zeros);
            e.start_unwind();
            e.f.instruction(&I::I32Const(p as i32));
            e.f.instruction(&I::Br(e.depth(e.save_pos)));
        }
        e.close();
        Ok(())
    }

    /// The saved locals that are dead at a site: the function's own not in
    /// `live` (all of them live if it is unknown), scratch slots not in
    /// `keep`.
    fn dead(
        &self,
        live: Option<&Set>,
        keep: &[(u32, ValType)],
        reads: &[u32],
        layout: &[(u32, ValType, u32)],
    ) -> Vec<(u32, ValType)> {
        let Some(live) = live else {
            return Vec::new();
        };
        let kept: Vec<u32> = keep
            .iter()
            .filter_map(|k| self.scratch.get(k).copied())
            .collect();
        layout
            .iter()
            .filter(|(l, _, _)| {
                if *l < self.site_local {
                    !live.contains(*l) && !reads.contains(l)
                } else {
                    !kept.contains(l)
                }
            })
            .map(|(l, t, _)| (*l, *t))
            .collect()
    }

    /// The rewind's way into child `c` (one `if` per range of its sites):
    /// push the operand values its wrapper ends with and branch there, or,
    /// for a child reached by running its body, leave the guard `g`.
    fn dispatch_to(&self, e: &mut Emitter, c: usize, g: usize) -> Result<(), Refusal> {
        let child = &self.children[c];
        let targets: Vec<(u32, u32, Option<i32>)> = match child.kind {
            ChildKind::If => child
                .bodies
                .iter()
                .enumerate()
                .filter(|(_, cb)| self.bodies[**cb].live)
                .map(|(k, cb)| {
                    let cb = &self.bodies[*cb];
                    (cb.first, cb.last, Some(if k == 0 { 1 } else { 0 }))
                })
                .filter(|(f, l, _)| f <= l && *l != u32::MAX)
                .collect(),
            _ => vec![(child.first, child.last, None)],
        };
        for (first, last, cond) in targets {
            if first > last || last == u32::MAX {
                continue;
            }
            e.site_in(self.site_local, first, last);
            e.open(I::If(EBlock::Empty), Label::Other);
            if child.reached {
                e.f.instruction(&I::Br(e.depth(g)));
            } else {
                let keep = child.stack.len() - usize::from(cond.is_some());
                for (d, t) in child.stack[..keep].iter().enumerate() {
                    let l = self.scratch[&(child.base + d as u32, *t)];
                    e.f.instruction(&I::LocalGet(l));
                }
                if let Some(v) = cond {
                    e.f.instruction(&I::I32Const(v));
                }
                let pos = e.wrapper_pos.get(&c).copied().ok_or_else(|| {
                    Refusal::Internal("a rewind target without its wrapper".to_string())
                })?;
                e.f.instruction(&I::Br(e.depth(pos)));
            }
            e.close();
        }
        Ok(())
    }

    /// Pops this function's frame off the saved stack into its locals.
    fn restore(&self, e: &mut Emitter, layout: &[(u32, ValType, u32)]) -> Result<(), Refusal> {
        let (_, frame) = self.frame_layout();
        let ptr = self.ptr_local;
        let f = &mut e.f;
        f.instruction(&I::I32Const(0));
        f.instruction(&I::I32Load(mem1(u64::from(TOP), 2)));
        f.instruction(&I::LocalTee(ptr));
        f.instruction(&I::I32Const((FRAMES + frame) as i32));
        f.instruction(&I::I32LtU);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::LocalGet(ptr));
        f.instruction(&I::I32Const(frame as i32));
        f.instruction(&I::I32Sub);
        f.instruction(&I::LocalTee(ptr));
        f.instruction(&I::I32Load(mem1(0, 0)));
        f.instruction(&I::I32Const(self.index as i32));
        f.instruction(&I::I32Ne);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::I32Const(0));
        f.instruction(&I::LocalGet(ptr));
        f.instruction(&I::I32Store(mem1(u64::from(TOP), 2)));
        f.instruction(&I::LocalGet(ptr));
        f.instruction(&I::I32Load(mem1(4, 0)));
        f.instruction(&I::LocalSet(self.site_local));
        for (l, t, off) in layout {
            f.instruction(&I::LocalGet(ptr));
            let m = mem1(u64::from(*off), 0);
            f.instruction(&match t {
                ValType::I32 => I::I32Load(m),
                ValType::I64 => I::I64Load(m),
                ValType::F32 => I::F32Load(m),
                ValType::F64 => I::F64Load(m),
                ValType::V128 => I::V128Load(m),
                ValType::Ref(_) => return Err(Refusal::Uses("reference-typed locals".to_string())),
            });
            f.instruction(&I::LocalSet(*l));
        }
        Ok(())
    }

    /// After `$save`: the site index is on the stack; push this frame and
    /// return zeros.
    fn save_tail(
        &self,
        e: &mut Emitter,
        layout: &[(u32, ValType, u32)],
        frame: u32,
    ) -> Result<(), Refusal> {
        let ptr = self.ptr_local;
        let f = &mut e.f;
        f.instruction(&I::LocalSet(self.site_local));
        f.instruction(&I::I32Const(0));
        f.instruction(&I::I32Load(mem1(u64::from(TOP), 2)));
        f.instruction(&I::LocalTee(ptr));
        f.instruction(&I::I32Const(frame as i32));
        f.instruction(&I::I32Add);
        f.instruction(&I::MemorySize(1));
        f.instruction(&I::I32Const(16));
        f.instruction(&I::I32Shl);
        f.instruction(&I::I32GtU);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::I32Const(((frame >> 16) + 1) as i32));
        f.instruction(&I::MemoryGrow(1));
        f.instruction(&I::I32Const(-1));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::End);
        f.instruction(&I::LocalGet(ptr));
        f.instruction(&I::I32Const(self.index as i32));
        f.instruction(&I::I32Store(mem1(0, 0)));
        f.instruction(&I::LocalGet(ptr));
        f.instruction(&I::LocalGet(self.site_local));
        f.instruction(&I::I32Store(mem1(4, 0)));
        for (l, t, off) in layout {
            f.instruction(&I::LocalGet(ptr));
            f.instruction(&I::LocalGet(*l));
            let m = mem1(u64::from(*off), 0);
            f.instruction(&match t {
                ValType::I32 => I::I32Store(m),
                ValType::I64 => I::I64Store(m),
                ValType::F32 => I::F32Store(m),
                ValType::F64 => I::F64Store(m),
                ValType::V128 => I::V128Store(m),
                ValType::Ref(_) => return Err(Refusal::Uses("reference-typed locals".to_string())),
            });
        }
        f.instruction(&I::I32Const(0));
        f.instruction(&I::LocalGet(ptr));
        f.instruction(&I::I32Const(frame as i32));
        f.instruction(&I::I32Add);
        f.instruction(&I::I32Store(mem1(u64::from(TOP), 2)));
        for t in &self.results {
            f.instruction(&match t {
                ValType::I32 => I::I32Const(0),
                ValType::I64 => I::I64Const(0),
                ValType::F32 => I::F32Const(Ieee32::new(0)),
                ValType::F64 => I::F64Const(Ieee64::new(0)),
                ValType::V128 => I::V128Const(0),
                ValType::Ref(_) => {
                    return Err(Refusal::Uses("reference-typed results".to_string()))
                }
            });
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    /// A label of the original code.
    Orig,
    Wrapper(usize),
    Other,
}

struct Emitter {
    f: Function,
    labels: Vec<Label>,
    /// Positions in `labels` of the original code's labels, outermost first.
    orig: Vec<usize>,
    wrapper_pos: HashMap<usize, usize>,
    save_pos: usize,
    rt: RoundtripReencoder,
    cold: Vec<u32>,
    /// Index of the state global.
    state: u32,
    /// Index of the budget global.
    budget: u32,
}

impl Emitter {
    fn reencode<'x>(&mut self, op: Operator<'x>) -> Result<I<'x>, Refusal> {
        self.rt
            .instruction(op)
            .map_err(|e| Refusal::Internal(e.to_string()))
    }

    /// Opens an `if` that is hardly ever taken.
    fn cold_if(&mut self) -> usize {
        self.cold.push(self.f.byte_len() as u32);
        self.open(I::If(EBlock::Empty), Label::Other)
    }

    /// Emits a block, loop or if and pushes its label; returns its position.
    fn open(&mut self, ins: I<'_>, label: Label) -> usize {
        self.f.instruction(&ins);
        self.labels.push(label);
        if label == Label::Orig {
            self.orig.push(self.labels.len() - 1);
        }
        self.labels.len() - 1
    }

    fn close(&mut self) {
        self.f.instruction(&I::End);
        if self.labels.pop() == Some(Label::Orig) {
            self.orig.pop();
        }
    }

    /// The branch depth, from here, of the label at `pos`.
    fn depth(&self, pos: usize) -> u32 {
        (self.labels.len() - 1 - pos) as u32
    }

    /// An original branch, with its depth counted again past the labels
    /// the transform added.
    fn branch(&mut self, op: &Operator<'_>) -> Result<(), Refusal> {
        match op {
            Operator::Br { relative_depth } => {
                let d = self.depth_of_orig(*relative_depth)?;
                self.f.instruction(&I::Br(d));
            }
            Operator::BrIf { relative_depth } => {
                let d = self.depth_of_orig(*relative_depth)?;
                self.f.instruction(&I::BrIf(d));
            }
            Operator::BrTable { targets } => {
                let mut list = Vec::with_capacity(targets.len() as usize);
                for t in targets.targets() {
                    list.push(self.depth_of_orig(t.map_err(invalid)?)?);
                }
                let default = self.depth_of_orig(targets.default())?;
                self.f.instruction(&I::BrTable(list.into(), default));
            }
            _ => return Err(Refusal::Internal("not a branch".to_string())),
        }
        Ok(())
    }

    /// The new depth of an original branch's relative depth.
    fn depth_of_orig(&self, rel: u32) -> Result<u32, Refusal> {
        let k = self
            .orig
            .len()
            .checked_sub(1 + rel as usize)
            .ok_or_else(|| Refusal::Internal("branch out of range".to_string()))?;
        Ok(self.depth(self.orig[k]))
    }

    /// Pushes whether the state byte equals `state`.
    fn state_is(&mut self, state: u8) {
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::I32Load8U(mem1(u64::from(STATE), 0)));
        self.f.instruction(&I::I32Const(i32::from(state)));
        self.f.instruction(&I::I32Eq);
    }

    /// Pushes whether local `site` lies in `first..=last`.
    fn site_in(&mut self, site: u32, first: u32, last: u32) {
        self.f.instruction(&I::LocalGet(site));
        if first == last {
            self.f.instruction(&I::I32Const(first as i32));
            self.f.instruction(&I::I32Eq);
        } else {
            self.f.instruction(&I::I32Const(first as i32));
            self.f.instruction(&I::I32Sub);
            self.f.instruction(&I::I32Const((last - first) as i32));
            self.f.instruction(&I::I32LeU);
        }
    }

    /// The rewind ends here: every frame must have been taken back.
    fn finish_rewind(&mut self) {
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::I32Load(mem1(u64::from(TOP), 2)));
        self.f.instruction(&I::I32Const(FRAMES as i32));
        self.f.instruction(&I::I32Ne);
        self.f.instruction(&I::If(EBlock::Empty));
        self.f.instruction(&I::Unreachable);
        self.f.instruction(&I::End);
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::I32Store8(mem1(u64::from(STATE), 0)));
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::GlobalSet(self.state));
        // The step from this point gets its whole budget.
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::I64Load(mem1(u64::from(BUDGET), 3)));
        self.f.instruction(&I::GlobalSet(self.budget));
    }

    /// Sets each of `locals` to zero (on the way to the save code: they are
    /// dead there, and a use by the save code would keep them alive).
    fn zero(&mut self, locals: &[(u32, ValType)]) {
        for (l, t) in locals {
            self.f.instruction(&match t {
                ValType::I64 => I::I64Const(0),
                ValType::F32 => I::F32Const(Ieee32::new(0)),
                ValType::F64 => I::F64Const(Ieee64::new(0)),
                ValType::V128 => I::V128Const(0),
                _ => I::I32Const(0),
            });
            self.f.instruction(&I::LocalSet(*l));
        }
    }

    /// Sets the state to unwinding.
    fn start_unwind(&mut self) {
        self.f.instruction(&I::I32Const(0));
        self.f.instruction(&I::I32Const(i32::from(UNWINDING)));
        self.f.instruction(&I::I32Store8(mem1(u64::from(STATE), 0)));
        self.f.instruction(&I::I32Const(i32::from(UNWINDING)));
        self.f.instruction(&I::GlobalSet(self.state));
    }

    /// After a call that may suspend: if the callee is unwinding, save.
    fn after_call(&mut self, site: u32, zeros: &[(u32, ValType)]) {
        self.f.instruction(&I::GlobalGet(self.state));
        self.f.instruction(&I::I32Const(i32::from(UNWINDING)));
        self.f.instruction(&I::I32Eq);
        self.cold_if();
        self.zero(zeros);
        self.f.instruction(&I::I32Const(site as i32));
        self.f.instruction(&I::Br(self.depth(self.save_pos)));
        self.close();
    }
}
