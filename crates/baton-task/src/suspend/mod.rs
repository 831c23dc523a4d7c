//! Making an ordinary WASI program suspendable: the unwind/rewind transform.
//!
//! A command (`_start`) has no points of its own: between its start and its
//! end the state includes the wasm call stack, which wasmtime cannot capture.
//! This module rewrites such a module so that its stack can be *unwound*
//! into a memory of its own and *rewound* from it, which makes a point
//! possible anywhere the transform put a check, with the state once again
//! only memories, globals and host state.
//!
//! What the rewritten module has (DESIGN §3):
//!
//! - A second memory, exported as [`MEMORY_EXPORT`], that the program cannot
//!   name. Byte [`STATE`] is [`UNWINDING`] or [`REWINDING`] while the stack
//!   moves (and mirrored in the global [`STATE_EXPORT`]); word [`TOP`] is
//!   the end of the saved frames, which start at [`FRAMES`]; [`BUDGET`]
//!   holds the work budget of a step.
//! - A work counter, the global [`BUDGET_EXPORT`]: points are taken where
//!   it runs out, so they fall at deterministic places (never where a clock
//!   or another thread happens to say).
//! - In every function that can be on the stack at a point ("may suspend":
//!   see [`analysis`]): at every loop header (and at the entry of a directly
//!   recursive function), a count of the budget, whose rare side takes a
//!   point when it runs out; at the entry, a test of the state, whose rare
//!   side is where a rewind finds its way back in; after every call that may
//!   suspend, a test of the state (the callee unwound: save this frame too).
//!   Every other function is left byte for byte as it was.
//! - Unwinding saves a frame (function index, site, every local) and returns
//!   zeros; rewinding re-enters each function, restores its locals, and
//!   branches through the structured control flow to the site it left
//!   from, without running anything on the way.
//!
//! Points are taken at a function entry or a loop header when the budget
//! runs out. A rewind ends there, or in a host call (which then returns what
//! it returned before the unwind, see `crate::wasi`). The program cannot
//! observe any of it: its memory, globals and results are untouched.
//!
//! This module owns the transform and the memory layout shared with the host
//! side. It must not compile, instantiate or run anything.

mod analysis;
mod func;
mod live;

use std::collections::HashMap;

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    BranchHint, BranchHints, CodeSection, ConstExpr, ExportKind, ExportSection, GlobalSection,
    GlobalType, MemorySection, RawSection, TypeSection,
};
use wasmparser::{Parser, Payload, ValType, ValidPayload, Validator};

pub(crate) use analysis::Refusal;

/// Export name of the memory the transform adds.
pub const MEMORY_EXPORT: &str = "__baton_suspend";
/// Export name of the global the transform adds: the state byte's value,
/// kept in a global too because a global is the cheapest thing to test after
/// every call.
pub const STATE_EXPORT: &str = "__baton_state";
/// Export name of the i64 global holding the work left before the next
/// point: every loop header of an instrumented function (and the entry of a
/// directly recursive one) counts one, and a point is taken where it goes
/// below zero. Points thus fall at the same places on every machine and in
/// every run from the same state, which is what lets two sides that ran
/// from one point agree.
pub const BUDGET_EXPORT: &str = "__baton_budget";
/// Byte offset of the state byte in the frame memory.
pub const STATE: u32 = 1;
/// State byte: frames are being saved.
pub const UNWINDING: u8 = 1;
/// State byte: frames are being restored.
pub const REWINDING: u8 = 2;
/// Byte offset of the word holding the end of the saved frames.
pub const TOP: u32 = 4;
/// Byte offset of the i64 work budget of a step, which the budget global is
/// set back to when a rewind ends.
pub const BUDGET: u32 = 8;
/// Byte offset where saved frames start.
pub const FRAMES: u32 = 16;
/// Name of the custom section of branch hints (the branch-hinting
/// proposal), which tells Cranelift which side of a branch is cold.
const HINTS_SECTION: &str = "metadata.code.branch_hint";

/// Largest size the frame memory may grow to, in 64 KiB pages (1 GiB):
/// keeps every address computation within an unsigned 32-bit word.
pub const MAX_FRAME_PAGES: u64 = 16384;

/// Nanoseconds of work one unit of the budget stands for, nominally: the
/// budget counts function entries and loop iterations, whose cost depends
/// on the program (see BENCHMARKS.md for what it comes to).
pub const NOMINAL_NS_PER_UNIT: u64 = 10;

/// The work budget of a step for a point every `every`, at the nominal rate.
pub fn budget_units(every: std::time::Duration) -> i64 {
    let units = every.as_nanos() / u128::from(NOMINAL_NS_PER_UNIT);
    i64::try_from(units).unwrap_or(i64::MAX).max(1)
}

/// The result of the transform.
#[derive(Debug)]
pub struct Suspendable {
    /// The rewritten module.
    pub bytes: Vec<u8>,
    /// Functions instrumented, of all defined functions.
    pub instrumented: usize,
    /// Defined functions.
    pub functions: usize,
    /// Places a point can be taken or resumed from.
    pub sites: usize,
}

/// Rewrites a prepared command module (one defined memory, imports only
/// functions) to be suspendable. `may_suspend_import(module, name)` says
/// which imported functions can start an unwind.
///
/// # Errors
///
/// A [`Refusal`] naming what the transform cannot handle; the caller then
/// runs the program as one step.
pub(crate) fn transform(
    bytes: &[u8],
    may_suspend_import: &dyn Fn(&str, &str) -> bool,
) -> Result<Suspendable, Refusal> {
    let module = analysis::Module::read(bytes, may_suspend_import)?;
    let suspends = module.may_suspend();
    let recursive: std::collections::HashSet<u32> = module.recursive().into_iter().collect();
    let mut types = Types::new(module.types.len() as u32);
    let mut code = CodeSection::new();
    let mut hints = BranchHints::new();
    let mut validator = Validator::new_with_features(
        crate::module::features() | wasmparser::WasmFeatures::MULTI_MEMORY,
    );
    let mut defined = 0usize;
    let mut instrumented = 0usize;
    let mut sites = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(analysis::invalid)?;
        let valid = validator.payload(&payload).map_err(analysis::invalid)?;
        if let ValidPayload::Func(to_validate, body) = valid {
            let index = module.imported + defined as u32;
            defined += 1;
            if suspends[index as usize] {
                let fv = to_validate.into_validator(Default::default());
                let counts_entry = recursive.contains(&index);
                let out = func::transform(
                    &module,
                    &suspends,
                    index,
                    counts_entry,
                    fv,
                    &body,
                    &mut types,
                )?;
                sites += out.sites;
                instrumented += 1;
                code.function(&out.function);
                hints.function_hints(
                    index,
                    out.cold.iter().map(|offset| BranchHint {
                        branch_func_offset: *offset,
                        branch_hint_value: 0,
                    }),
                );
            } else {
                code.raw(&bytes[body.range()]);
            }
        }
    }
    let out = module.emit(bytes, &types, &hints, &code)?;
    // Our bug if this fails: report it rather than leave it to the compiler.
    Validator::new_with_features(
        crate::module::features() | wasmparser::WasmFeatures::MULTI_MEMORY,
    )
    .validate_all(&out)
    .map_err(|e| Refusal::Internal(format!("the suspendable module is invalid: {e}")))?;
    Ok(Suspendable {
        bytes: out,
        instrumented,
        functions: defined,
        sites,
    })
}

/// Function types the transform adds (for blocks with several results),
/// numbered after the module's own.
pub(crate) struct Types {
    first: u32,
    added: Vec<(Vec<ValType>, Vec<ValType>)>,
    index: HashMap<(Vec<ValType>, Vec<ValType>), u32>,
}

impl Types {
    fn new(first: u32) -> Types {
        Types {
            first,
            added: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The index of the function type `params -> results`, added if new.
    pub(crate) fn intern(&mut self, params: &[ValType], results: &[ValType]) -> u32 {
        let key = (params.to_vec(), results.to_vec());
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        let i = self.first + self.added.len() as u32;
        self.added.push(key.clone());
        self.index.insert(key, i);
        i
    }
}

impl analysis::Module {
    /// Writes the module back: the type section with the added types, the
    /// frame memory after the program's, its export, and the new code.
    fn emit(
        &self,
        bytes: &[u8],
        types: &Types,
        hints: &BranchHints,
        code: &CodeSection,
    ) -> Result<Vec<u8>, Refusal> {
        let mut rt = RoundtripReencoder;
        let mut out = wasm_encoder::Module::new();
        let mut saw = [false; 3]; // type, memory, export sections written
        let mut globals_written = false;
        let internal = |e: wasm_encoder::reencode::Error| Refusal::Internal(e.to_string());
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(analysis::invalid)?;
            match payload {
                Payload::TypeSection(reader) => {
                    let mut section = TypeSection::new();
                    rt.parse_type_section(&mut section, reader)
                        .map_err(internal)?;
                    for (p, r) in &types.added {
                        let p: Vec<_> = p
                            .iter()
                            .map(|t| rt.val_type(*t))
                            .collect::<Result<_, _>>()
                            .map_err(internal)?;
                        let r: Vec<_> = r
                            .iter()
                            .map(|t| rt.val_type(*t))
                            .collect::<Result<_, _>>()
                            .map_err(internal)?;
                        section.ty().function(p, r);
                    }
                    out.section(&section);
                    saw[0] = true;
                }
                Payload::MemorySection(reader) => {
                    let mut section = MemorySection::new();
                    rt.parse_memory_section(&mut section, reader)
                        .map_err(internal)?;
                    section.memory(frame_memory());
                    out.section(&section);
                    saw[1] = true;
                }
                Payload::GlobalSection(reader) => {
                    let mut section = GlobalSection::new();
                    rt.parse_global_section(&mut section, reader)
                        .map_err(internal)?;
                    added_globals(&mut section);
                    out.section(&section);
                    globals_written = true;
                }
                Payload::ExportSection(reader) => {
                    if !globals_written {
                        let mut section = GlobalSection::new();
                        added_globals(&mut section);
                        out.section(&section);
                        globals_written = true;
                    }
                    let mut section = ExportSection::new();
                    rt.parse_export_section(&mut section, reader)
                        .map_err(internal)?;
                    section.export(MEMORY_EXPORT, ExportKind::Memory, self.memories);
                    section.export(STATE_EXPORT, ExportKind::Global, self.globals);
                    section.export(BUDGET_EXPORT, ExportKind::Global, self.globals + 1);
                    out.section(&section);
                    saw[2] = true;
                }
                Payload::CodeSectionStart { .. } => {
                    out.section(hints);
                    out.section(code);
                }
                // The module's own hints no longer point at the right
                // instructions.
                Payload::CustomSection(c) if c.name() == HINTS_SECTION => {}
                Payload::CodeSectionEntry(_) => {}
                other => {
                    if let Some((id, range)) = crate::module::section_of(&other) {
                        out.section(&RawSection {
                            id,
                            data: &bytes[range],
                        });
                    }
                }
            }
        }
        if !(saw[1] && saw[2]) || (!saw[0] && !types.added.is_empty()) {
            // A prepared module always defines and exports its memory, and
            // has types if it has functions.
            return Err(Refusal::Internal(
                "module without memory, export or type section".to_string(),
            ));
        }
        Ok(out.finish())
    }
}

/// The globals the transform adds, after the module's own: the state
/// ([`STATE_EXPORT`]) and the budget ([`BUDGET_EXPORT`]).
fn added_globals(section: &mut GlobalSection) {
    section.global(
        GlobalType {
            val_type: wasm_encoder::ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(0),
    );
    section.global(
        GlobalType {
            val_type: wasm_encoder::ValType::I64,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i64_const(i64::MAX),
    );
}

fn frame_memory() -> wasm_encoder::MemoryType {
    wasm_encoder::MemoryType {
        minimum: 1,
        maximum: Some(MAX_FRAME_PAGES),
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

#[cfg(test)]
mod tests;
