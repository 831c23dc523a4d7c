//! What the transform needs to know of the whole module before it rewrites
//! a function: types, which imports and functions may suspend, and what it
//! must refuse.
//!
//! A function *may suspend* if a point can be taken while it is on the
//! stack: it has a loop (every loop header is a place for a point), it is
//! part of a cycle of direct calls (recursion without loops must reach
//! points too), or it calls, directly or through a table, a function that
//! may suspend. Everything else runs untouched and costs nothing.
//!
//! This module only reads; it must not encode anything.

use wasmparser::{
    BinaryReaderError, BlockType, ElementItems, ElementKind, Operator, Parser, Payload, TypeRef,
    ValType,
};

/// Why a module cannot be made suspendable; it then runs as one step.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The module uses something whose state the transform cannot move.
    #[error("it uses {0}, which the suspend transform does not handle")]
    Uses(String),
    /// The module could not be parsed (it was validated before, so this is
    /// unexpected).
    #[error("it could not be read: {0}")]
    Invalid(String),
    /// The transform produced something invalid: a bug in baton.
    #[error("internal error in the suspend transform: {0}")]
    Internal(String),
}

pub(crate) fn invalid(e: BinaryReaderError) -> Refusal {
    Refusal::Invalid(e.to_string())
}

/// One defined function, as far as the call graph cares.
#[derive(Default)]
struct FuncFacts {
    has_loop: bool,
    calls: Vec<u32>,
    /// Type indices of its `call_indirect`s.
    indirect: Vec<u32>,
}

/// The module-wide facts.
pub(crate) struct Module {
    /// Function types: (params, results).
    pub(crate) types: Vec<(Vec<ValType>, Vec<ValType>)>,
    /// Type index of every function, imports first.
    pub(crate) func_types: Vec<u32>,
    /// Number of imported functions.
    pub(crate) imported: u32,
    /// Which imported functions may suspend.
    import_suspends: Vec<bool>,
    /// Functions that a table holds (so an indirect call may reach).
    in_table: Vec<u32>,
    facts: Vec<FuncFacts>,
    /// Memories the module defines (the frame memory gets the next index).
    pub(crate) memories: u32,
    /// Globals, imported and defined (the state global gets the next index).
    pub(crate) globals: u32,
}

impl Module {
    pub(crate) fn read(
        bytes: &[u8],
        may_suspend_import: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Module, Refusal> {
        let mut m = Module {
            types: Vec::new(),
            func_types: Vec::new(),
            imported: 0,
            import_suspends: Vec::new(),
            in_table: Vec::new(),
            facts: Vec::new(),
            memories: 0,
            globals: 0,
        };
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(invalid)? {
                Payload::TypeSection(reader) => {
                    m.types = crate::module::func_types(reader)
                        .map_err(invalid)?
                        .ok_or_else(|| Refusal::Uses("GC types".to_string()))?;
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.map_err(invalid)?;
                        match import.ty {
                            TypeRef::Func(t) => {
                                m.func_types.push(t);
                                m.imported += 1;
                                m.import_suspends
                                    .push(may_suspend_import(import.module, import.name));
                            }
                            TypeRef::Memory(_) => {
                                return Err(Refusal::Uses("an imported memory".to_string()))
                            }
                            TypeRef::Global(_) => m.globals += 1,
                            _ => {}
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for t in reader {
                        m.func_types.push(t.map_err(invalid)?);
                    }
                }
                Payload::MemorySection(reader) => m.memories += reader.count(),
                Payload::GlobalSection(reader) => m.globals += reader.count(),
                Payload::ElementSection(reader) => {
                    for element in reader {
                        let element = element.map_err(invalid)?;
                        if !matches!(element.kind, ElementKind::Active { .. }) {
                            continue;
                        }
                        match element.items {
                            ElementItems::Functions(funcs) => {
                                for f in funcs {
                                    m.in_table.push(f.map_err(invalid)?);
                                }
                            }
                            ElementItems::Expressions(_, exprs) => {
                                for e in exprs {
                                    let mut ops = e.map_err(invalid)?.get_operators_reader();
                                    while !ops.eof() {
                                        if let Operator::RefFunc { function_index } =
                                            ops.read().map_err(invalid)?
                                        {
                                            m.in_table.push(function_index);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Payload::CodeSectionEntry(body) => {
                    let facts = m.facts_of(&body)?;
                    m.facts.push(facts);
                }
                _ => {}
            }
        }
        m.in_table.sort_unstable();
        m.in_table.dedup();
        Ok(m)
    }

    /// The type of function `f`.
    pub(crate) fn func_type(&self, f: u32) -> Option<&(Vec<ValType>, Vec<ValType>)> {
        self.types.get(*self.func_types.get(f as usize)? as usize)
    }

    fn facts_of(&self, body: &wasmparser::FunctionBody<'_>) -> Result<FuncFacts, Refusal> {
        for local in body.get_locals_reader().map_err(invalid)? {
            let (_, ty) = local.map_err(invalid)?;
            if matches!(ty, ValType::Ref(_)) {
                return Err(Refusal::Uses("reference-typed locals".to_string()));
            }
        }
        let mut facts = FuncFacts::default();
        let mut ops = body.get_operators_reader().map_err(invalid)?;
        while !ops.eof() {
            match ops.read().map_err(invalid)? {
                Operator::Loop { blockty } => {
                    facts.has_loop = true;
                    self.check_block(blockty)?;
                }
                Operator::Block { blockty } | Operator::If { blockty } => {
                    self.check_block(blockty)?
                }
                Operator::Call { function_index } => facts.calls.push(function_index),
                Operator::CallIndirect { type_index, .. } => facts.indirect.push(type_index),
                Operator::ReturnCall { .. }
                | Operator::ReturnCallIndirect { .. }
                | Operator::ReturnCallRef { .. } => {
                    return Err(Refusal::Uses("tail calls".to_string()))
                }
                Operator::CallRef { .. } => {
                    return Err(Refusal::Uses("typed function references".to_string()))
                }
                _ => {}
            }
        }
        Ok(facts)
    }

    /// Blocks that take parameters are refused: a rewind enters a block
    /// from its start, with nothing on the stack to pass in.
    fn check_block(&self, blockty: BlockType) -> Result<(), Refusal> {
        if let BlockType::FuncType(t) = blockty {
            match self.types.get(t as usize) {
                Some((params, _)) if params.is_empty() => {}
                _ => return Err(Refusal::Uses("blocks with parameters".to_string())),
            }
        }
        Ok(())
    }

    /// Which functions (imports first) may suspend.
    pub(crate) fn may_suspend(&self) -> Vec<bool> {
        let n = self.func_types.len();
        let mut suspends = vec![false; n];
        suspends[..self.imported as usize].copy_from_slice(&self.import_suspends);
        // Indirect targets by type: two type indices with the same signature
        // reach the same functions.
        let same_type = |a: u32, b: u32| {
            a == b || {
                let (x, y) = (self.types.get(a as usize), self.types.get(b as usize));
                x.is_some() && x == y
            }
        };
        let callees = |f: usize| -> Vec<u32> {
            let facts = &self.facts[f - self.imported as usize];
            let mut out = facts.calls.clone();
            for t in &facts.indirect {
                out.extend(self.in_table.iter().copied().filter(|g| {
                    self.func_types
                        .get(*g as usize)
                        .is_some_and(|gt| same_type(*gt, *t))
                }));
            }
            out
        };
        let graph: Vec<Vec<u32>> = (0..n)
            .map(|f| {
                if f < self.imported as usize {
                    Vec::new()
                } else {
                    callees(f)
                }
            })
            .collect();
        for (f, facts) in self.facts.iter().enumerate() {
            if facts.has_loop {
                suspends[f + self.imported as usize] = true;
            }
        }
        for f in self.recursive() {
            suspends[f as usize] = true;
        }
        // Callers of functions that may suspend may suspend: iterate to a
        // fixed point over the reversed graph.
        let mut callers: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (f, out) in graph.iter().enumerate() {
            for g in out {
                if let Some(c) = callers.get_mut(*g as usize) {
                    c.push(f as u32);
                }
            }
        }
        let mut work: Vec<usize> = (0..n).filter(|f| suspends[*f]).collect();
        while let Some(g) = work.pop() {
            for f in &callers[g] {
                let f = *f as usize;
                if !suspends[f] {
                    suspends[f] = true;
                    work.push(f);
                }
            }
        }
        suspends
    }

    /// Functions on a cycle of direct calls: they count the budget at their
    /// entry too, so that recursion without loops reaches points. Cycles
    /// through tables are left out: counting at the entry of every function
    /// that might be reached through a table would cost every call, and a
    /// recursion through function pointers with no loop anywhere on it is
    /// rare (an interpreter's recursion passes through its loop). Such a
    /// recursion still runs correctly; it just takes no point until a loop.
    pub(crate) fn recursive(&self) -> Vec<u32> {
        let n = self.func_types.len();
        let graph: Vec<Vec<u32>> = (0..n)
            .map(|f| match f.checked_sub(self.imported as usize) {
                Some(d) => self.facts[d].calls.clone(),
                None => Vec::new(),
            })
            .collect();
        in_cycles(&graph).into_iter().map(|f| f as u32).collect()
    }

    /// Whether a call from a suspendable function to `callee` needs a check.
    pub(crate) fn call_may_suspend(&self, suspends: &[bool], callee: u32) -> bool {
        suspends.get(callee as usize).copied().unwrap_or(true)
    }

    /// Whether a `call_indirect` of type `t` may reach a function that may
    /// suspend.
    pub(crate) fn indirect_may_suspend(&self, suspends: &[bool], t: u32) -> bool {
        let want = self.types.get(t as usize);
        self.in_table.iter().any(|g| {
            suspends.get(*g as usize).copied().unwrap_or(false)
                && self
                    .func_types
                    .get(*g as usize)
                    .and_then(|gt| self.types.get(*gt as usize))
                    == want
        })
    }
}

/// Nodes on a cycle of `graph` (including self-loops), by Tarjan's
/// algorithm without recursion (call graphs can be deep).
fn in_cycles(graph: &[Vec<u32>]) -> Vec<usize> {
    let n = graph.len();
    let mut index = vec![u32::MAX; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0u32;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != u32::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
            if let Some(&w) = graph[v].get(*edge) {
                *edge += 1;
                let w = w as usize;
                if w >= n {
                    continue;
                }
                if index[w] == u32::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                let self_loop = graph[v].iter().any(|w| *w as usize == v);
                if component.len() > 1 || self_loop {
                    out.extend(component);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::in_cycles;

    #[test]
    fn cycles_and_self_loops_are_found() {
        // 0 -> 1 -> 2 -> 1, 3 -> 3, 4 -> 0
        let g = vec![vec![1], vec![2], vec![1], vec![3], vec![0]];
        let mut c = in_cycles(&g);
        c.sort();
        assert_eq!(c, vec![1, 2, 3]);
    }
}
