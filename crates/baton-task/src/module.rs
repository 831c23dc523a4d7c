//! Module loading and preparation.
//!
//! This module owns the step from "bytes a user handed us" to "a core wasm
//! module baton can run and capture completely": validation, recognition of
//! the task shapes of the guest ABI (DESIGN §3), rejection of everything else
//! with one clear error, and the rewrite that exports every mutable global
//! under a reserved name so that state capture sees globals the module keeps
//! private (clang's `__stack_pointer` is the usual one).
//!
//! The code section is re-encoded by [`crate::nan`] to canonicalise NaNs
//! where their bits become observable.
//!
//! It must not compile or instantiate anything (that is [`crate::engine`]) and
//! knows nothing of the WASI host beyond the list of import names it provides.

use std::ops::Range;

use wasm_encoder::{ExportKind, ExportSection, RawSection};
use wasmparser::{
    BinaryReaderError, CompositeInnerType, ExternalKind, FunctionBody, GlobalSectionReader,
    ImportSectionReader, Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};

use crate::digest::Digest;
use crate::nan;

/// The import module every WASI preview1 function comes from.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The import module of baton's own guest functions.
pub const BATON_MODULE: &str = "baton";

/// `baton.point: [] -> []`, which marks a good place for a point
/// (`guest/baton.h`: `baton_point()`): a program without the step ABI takes
/// its point there once half of the step's work budget is spent, rather
/// than wherever the budget runs out. In a step task it does nothing.
pub const POINT_IMPORT: &str = "point";

/// Prefix of the export names baton adds for mutable globals; a module may
/// not export names of its own that start with it.
pub const GLOBAL_EXPORT_PREFIX: &str = "__baton_global_";

/// Prefix of every export name baton adds; a module may not export names of
/// its own that start with it.
pub const RESERVED_EXPORT_PREFIX: &str = "__baton_";

/// Largest module accepted, in bytes. Modules are held in memory and sent
/// over the network; anything this large is almost certainly a mistake.
pub const MAX_MODULE_BYTES: usize = 256 * 1024 * 1024;

/// How a prepared module is driven (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Shape {
    /// Exports `baton_step: [] -> [i32]`; each return is a point.
    Step {
        /// Whether the module exports `_initialize`, called once at creation.
        has_initialize: bool,
    },
    /// An ordinary WASI command (`_start`): made suspendable when the
    /// transform can handle it (see [`PreparedModule::points`]), else run as
    /// a single step.
    Command,
}

/// Where a prepared module's points can fall.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Points {
    /// A step task: between steps.
    Steps,
    /// A command made suspendable ([`crate::suspend`]): at loop headers (and
    /// entries of recursive functions) where the work budget runs out.
    Anywhere {
        /// Places in the code a point can be taken at or resumed from.
        sites: usize,
        /// Functions instrumented.
        instrumented: usize,
        /// Functions the module defines.
        functions: usize,
    },
    /// A command the transform cannot handle: it runs as one step, and this
    /// says why.
    OneStep(String),
}

/// The value type of a captured global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GlobalKind {
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `v128`
    V128,
}

/// A mutable global of the module, made capturable by an export.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapturedGlobal {
    /// Index of the global in the module's global index space.
    pub index: u32,
    /// Its value type.
    pub kind: GlobalKind,
    /// The name it is exported under in the prepared module.
    pub export: String,
}

/// A module that passed validation and was rewritten for capture.
#[derive(Clone, Debug)]
pub struct PreparedModule {
    digest: Digest,
    shape: Shape,
    bytes: Vec<u8>,
    globals: Vec<CapturedGlobal>,
    full_nan_canonicalisation: bool,
    points: Points,
}

impl PreparedModule {
    /// BLAKE3 digest of the module bytes as the user supplied them: the
    /// module's content address.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The task shape the module has.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The rewritten module, ready to compile.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the module must run with Cranelift's canonicalisation of
    /// every float result, because its code could not be rewritten to
    /// canonicalise where NaN bits are observed (SIMD float arithmetic;
    /// see [`crate::nan`]).
    pub fn full_nan_canonicalisation(&self) -> bool {
        self.full_nan_canonicalisation
    }

    /// The mutable globals captured as state, in index order.
    pub fn globals(&self) -> &[CapturedGlobal] {
        &self.globals
    }

    /// Where the module's points can fall.
    pub fn points(&self) -> &Points {
        &self.points
    }

    /// What preparing found, without the bytes: kept beside the compiled
    /// code so that a module is prepared once ([`PreparedModule::from_note`]).
    pub(crate) fn note(&self) -> Vec<u8> {
        let note = Note {
            shape: self.shape,
            globals: self.globals.clone(),
            full_nan_canonicalisation: self.full_nan_canonicalisation,
            points: self.points.clone(),
        };
        postcard::to_allocvec(&note).unwrap_or_default()
    }

    /// The module as a note said it was prepared; it has no bytes (its
    /// compiled code came from the cache). `None` if the note is unreadable.
    pub(crate) fn from_note(digest: Digest, note: &[u8]) -> Option<PreparedModule> {
        let note: Note = postcard::from_bytes(note).ok()?;
        Some(PreparedModule {
            digest,
            shape: note.shape,
            bytes: Vec::new(),
            globals: note.globals,
            full_nan_canonicalisation: note.full_nan_canonicalisation,
            points: note.points,
        })
    }
}

/// [`PreparedModule::note`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Note {
    shape: Shape,
    globals: Vec<CapturedGlobal>,
    full_nan_canonicalisation: bool,
    points: Points,
}

/// What a prepared module's cache key must change with besides the module:
/// the source of everything that prepares it (so a change to the transform
/// never meets code compiled from the old one) and whether it is made
/// suspendable.
pub(crate) fn preparation_key(digest: Digest, suspend: bool, nans: Nans) -> Vec<u8> {
    static SOURCES: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let sources = SOURCES.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        for text in [
            include_str!("module.rs"),
            include_str!("nan.rs"),
            include_str!("suspend/mod.rs"),
            include_str!("suspend/analysis.rs"),
            include_str!("suspend/func.rs"),
            include_str!("suspend/live.rs"),
        ] {
            h.update(&(text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        *h.finalize().as_bytes()
    });
    let mut key = b"baton prepared module\0".to_vec();
    key.extend_from_slice(sources);
    key.push(u8::from(suspend));
    key.push(match nans {
        Nans::Canonical => 0,
        Nans::Native => 1,
    });
    key.extend_from_slice(&digest.0);
    key
}

/// What NaN results look like in a task's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nans {
    /// Canonical wherever NaN bits become observable ([`crate::nan`]): the
    /// same bits on every CPU, for a task that may move to a machine of
    /// another architecture. Costs a compare at every float store
    /// (n-body: about 1.5×).
    #[default]
    Canonical,
    /// As the CPU makes them: the same bits on every run on CPUs of one
    /// architecture, at no cost. For a task that never leaves machines of
    /// this one's architecture (a run with no agent).
    Native,
}

/// Why a module was rejected. Every message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The bytes do not start with the wasm magic number.
    #[error("not a WebAssembly module (the file does not start with the bytes \\0asm)")]
    NotWasm,
    /// The bytes are a component, not a core module.
    #[error("this is a WebAssembly component; baton runs core modules (wasm32-wasi preview1)")]
    Component,
    /// The module is larger than [`MAX_MODULE_BYTES`].
    #[error("module is {size} bytes, more than the {max} bytes baton accepts")]
    TooLarge {
        /// Size of the module.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Validation failed: truncated, malformed or using unsupported features.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The module imports something the host does not provide.
    #[error("module imports `{module}::{name}`, which baton does not provide (only {WASI_MODULE} functions are available)")]
    UnsupportedImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// A provided function is imported with a type other than its own.
    #[error("module imports a WASI function with the wrong type: {0}")]
    ImportType(String),
    /// The module does not export a memory named `memory`.
    #[error("module does not export its linear memory as `memory`; build it as a WASI reactor or command")]
    NoMemory,
    /// The module has more than one memory.
    #[error("module has {0} memories; baton supports exactly one")]
    ManyMemories(usize),
    /// `baton_step` exists but has the wrong type.
    #[error("`baton_step` has type {found}; it must be `[] -> [i32]`")]
    BadStepType {
        /// The type found, written as `[params] -> [results]`.
        found: String,
    },
    /// `_initialize` or `_start` exists but has the wrong type.
    #[error("`{name}` has type {found}; it must be `[] -> []`")]
    BadEntryType {
        /// Which export.
        name: &'static str,
        /// The type found.
        found: String,
    },
    /// Neither `baton_step` nor `_start` is exported.
    #[error("module exports neither `baton_step` (a step task) nor `_start` (a WASI command)")]
    NoEntry,
    /// The module uses something baton cannot capture or restore.
    #[error("module uses {0}, which baton cannot checkpoint")]
    Unsupported(String),
}

/// Validates `bytes`, recognises the task shape and returns the module
/// rewritten so that every mutable global is exported.
///
/// `provided` lists the `wasi_snapshot_preview1` function names the host
/// implements; any other import is rejected by name.
///
/// # Errors
///
/// A [`ModuleError`] naming the first problem found.
pub fn prepare(bytes: &[u8], provided: &[&str]) -> Result<PreparedModule, ModuleError> {
    prepare_with(bytes, provided, true)
}

/// As [`prepare`]; with `suspend` false, a command is not made suspendable
/// and runs as one step ([`Points::OneStep`]).
///
/// # Errors
///
/// As [`prepare`].
pub fn prepare_with(
    bytes: &[u8],
    provided: &[&str],
    suspend: bool,
) -> Result<PreparedModule, ModuleError> {
    prepare_as(bytes, provided, suspend, Nans::Canonical)
}

/// As [`prepare_with`], with NaNs as `nans` says: [`Nans::Native`] leaves
/// the code's float operations as they are.
///
/// # Errors
///
/// As [`prepare`].
pub fn prepare_as(
    bytes: &[u8],
    provided: &[&str],
    suspend: bool,
    nans: Nans,
) -> Result<PreparedModule, ModuleError> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(ModuleError::TooLarge {
            size: bytes.len(),
            max: MAX_MODULE_BYTES,
        });
    }
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(ModuleError::NotWasm);
    }
    if bytes[4..8] != [1, 0, 0, 0] {
        if bytes[6..8] == [1, 0] {
            return Err(ModuleError::Component);
        }
        return Err(ModuleError::Invalid(format!(
            "unsupported binary version {:02x?}",
            &bytes[4..8]
        )));
    }
    let mut validator = Validator::new_with_features(features());
    validator
        .validate_all(bytes)
        .map_err(|e| ModuleError::Invalid(e.to_string()))?;

    let scan = Scan::run(bytes, provided)?;
    let shape = scan.shape()?;
    let canonical = nans == Nans::Canonical;
    let mut rewritten = scan.rewrite(bytes, canonical)?;
    let mut points = Points::Steps;
    if shape == Shape::Command && !suspend {
        points = Points::OneStep("points were turned off".to_string());
    } else if shape == Shape::Command {
        // Host calls never start an unwind, except the mark of a good point.
        let may_suspend = |module: &str, name: &str| module == BATON_MODULE && name == POINT_IMPORT;
        points = match crate::suspend::transform(&rewritten, &may_suspend) {
            Ok(done) => {
                rewritten = done.bytes;
                Points::Anywhere {
                    sites: done.sites,
                    instrumented: done.instrumented,
                    functions: done.functions,
                }
            }
            Err(refusal) => Points::OneStep(refusal.to_string()),
        };
    }
    Ok(PreparedModule {
        digest: Digest::of(bytes),
        shape,
        bytes: rewritten,
        full_nan_canonicalisation: canonical && scan.simd_float,
        globals: scan.captured,
        points,
    })
}

/// The wasm features baton accepts: those whose state is memory, globals and
/// host state. Threads (shared memory), multiple memories, 64-bit memories,
/// GC and exceptions are off because their state cannot be captured between
/// steps with this design.
pub(crate) fn features() -> WasmFeatures {
    let mut f = WasmFeatures::WASM2;
    f.remove(WasmFeatures::THREADS);
    f.remove(WasmFeatures::MULTI_MEMORY);
    f.remove(WasmFeatures::MEMORY64);
    f.remove(WasmFeatures::GC);
    f.remove(WasmFeatures::EXCEPTIONS);
    f.remove(WasmFeatures::COMPONENT_MODEL);
    f
}

/// What one pass over a validated module learnt.
#[derive(Default)]
struct Scan {
    /// Function types: (params, results).
    types: Vec<(Vec<ValType>, Vec<ValType>)>,
    /// Type index of every function, imports first.
    func_types: Vec<u32>,
    /// Exports as (name, kind, index).
    exports: Vec<(String, ExternalKind, u32)>,
    /// Float kind of every global (see [`nan::Context`]).
    float_globals: Vec<Option<bool>>,
    imported_funcs: usize,
    /// Whether the code uses SIMD float arithmetic (see [`crate::nan`]).
    simd_float: bool,
    memories: usize,
    imported_globals: u32,
    captured: Vec<CapturedGlobal>,
}

/// A function type: (params, results).
pub(crate) type FuncSig = (Vec<ValType>, Vec<ValType>);

/// The function types of a type section; `None` if it declares any other
/// kind of type (GC).
pub(crate) fn func_types(
    reader: wasmparser::TypeSectionReader<'_>,
) -> Result<Option<Vec<FuncSig>>, BinaryReaderError> {
    let mut out = Vec::new();
    for group in reader {
        for sub in group?.into_types() {
            match &sub.composite_type.inner {
                CompositeInnerType::Func(f) => {
                    out.push((f.params().to_vec(), f.results().to_vec()))
                }
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(out))
}

/// A parse error: the bytes are not a valid module.
fn invalid(e: BinaryReaderError) -> ModuleError {
    ModuleError::Invalid(e.to_string())
}

impl Scan {
    fn run(bytes: &[u8], provided: &[&str]) -> Result<Scan, ModuleError> {
        let mut scan = Scan::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(invalid)? {
                Payload::TypeSection(reader) => {
                    scan.types = func_types(reader)
                        .map_err(invalid)?
                        .ok_or_else(|| ModuleError::Unsupported("GC types".to_string()))?;
                }
                Payload::ImportSection(reader) => scan.imports(reader, provided)?,
                Payload::FunctionSection(reader) => {
                    for t in reader {
                        scan.func_types.push(t.map_err(invalid)?);
                    }
                }
                Payload::MemorySection(reader) => scan.memories += reader.count() as usize,
                Payload::GlobalSection(reader) => scan.globals(reader)?,
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(invalid)?;
                        if export.name.starts_with(RESERVED_EXPORT_PREFIX) {
                            return Err(ModuleError::Unsupported(format!(
                                "the reserved export name `{}`",
                                export.name
                            )));
                        }
                        scan.exports
                            .push((export.name.to_string(), export.kind, export.index));
                    }
                }
                Payload::StartSection { .. } => {
                    // A start function would run again on every restore.
                    return Err(ModuleError::Unsupported(
                        "a start section (use `_initialize` for set-up)".to_string(),
                    ));
                }
                Payload::CodeSectionEntry(body) => scan.code(&body)?,
                _ => {}
            }
        }
        if scan.memories > 1 {
            return Err(ModuleError::ManyMemories(scan.memories));
        }
        Ok(scan)
    }

    /// Imports: only functions of `wasi_snapshot_preview1` that the host
    /// provides.
    fn imports(
        &mut self,
        reader: ImportSectionReader<'_>,
        provided: &[&str],
    ) -> Result<(), ModuleError> {
        for import in reader.into_imports() {
            let import = import.map_err(invalid)?;
            let ok = matches!(import.ty, TypeRef::Func(_))
                && ((import.module == WASI_MODULE && provided.contains(&import.name))
                    || (import.module == BATON_MODULE && import.name == POINT_IMPORT));
            if !ok {
                return Err(ModuleError::UnsupportedImport {
                    module: import.module.to_string(),
                    name: import.name.to_string(),
                });
            }
            match import.ty {
                TypeRef::Func(t) => {
                    self.func_types.push(t);
                    self.imported_funcs += 1;
                }
                TypeRef::Global(_) => self.imported_globals += 1,
                TypeRef::Memory(_) => self.memories += 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// Globals: notes each one's float kind and the mutable ones to capture.
    fn globals(&mut self, reader: GlobalSectionReader<'_>) -> Result<(), ModuleError> {
        for (i, global) in reader.into_iter().enumerate() {
            let global = global.map_err(invalid)?;
            self.float_globals
                .push(nan::float_kind(global.ty.content_type));
            if !global.ty.mutable {
                continue;
            }
            let kind = match global.ty.content_type {
                ValType::I32 => GlobalKind::I32,
                ValType::I64 => GlobalKind::I64,
                ValType::F32 => GlobalKind::F32,
                ValType::F64 => GlobalKind::F64,
                ValType::V128 => GlobalKind::V128,
                ValType::Ref(_) => {
                    return Err(ModuleError::Unsupported(
                        "a mutable reference-typed global".to_string(),
                    ))
                }
            };
            let index = self.imported_globals + i as u32;
            self.captured.push(CapturedGlobal {
                index,
                kind,
                export: format!("{GLOBAL_EXPORT_PREFIX}{index}"),
            });
        }
        Ok(())
    }

    /// One function body: refuses what cannot be captured, notes SIMD float
    /// arithmetic.
    fn code(&mut self, body: &FunctionBody<'_>) -> Result<(), ModuleError> {
        let mut ops = body.get_operators_reader().map_err(invalid)?;
        let mut scratch = String::new();
        while !ops.eof() {
            let op = ops.read().map_err(invalid)?;
            if let Some(what) = uncapturable(&op) {
                return Err(ModuleError::Unsupported(what.to_string()));
            }
            if !self.simd_float && nan::is_simd_float(&op, &mut scratch) {
                self.simd_float = true;
            }
        }
        Ok(())
    }

    fn export(&self, name: &str, kind: ExternalKind) -> Option<u32> {
        self.exports
            .iter()
            .find(|(n, k, _)| n == name && *k == kind)
            .map(|(_, _, i)| *i)
    }

    fn func_type(&self, func: u32) -> Option<&(Vec<ValType>, Vec<ValType>)> {
        let t = *self.func_types.get(func as usize)?;
        self.types.get(t as usize)
    }

    fn shape(&self) -> Result<Shape, ModuleError> {
        if self.export("memory", ExternalKind::Memory).is_none() {
            return Err(ModuleError::NoMemory);
        }
        let check_unit = |name: &'static str| -> Result<bool, ModuleError> {
            let Some(f) = self.export(name, ExternalKind::Func) else {
                return Ok(false);
            };
            match self.func_type(f) {
                Some((p, r)) if p.is_empty() && r.is_empty() => Ok(true),
                other => Err(ModuleError::BadEntryType {
                    name,
                    found: show_type(other),
                }),
            }
        };
        if let Some(f) = self.export("baton_step", ExternalKind::Func) {
            match self.func_type(f) {
                Some((p, r)) if p.is_empty() && r.as_slice() == [ValType::I32] => {}
                other => {
                    return Err(ModuleError::BadStepType {
                        found: show_type(other),
                    })
                }
            }
            return Ok(Shape::Step {
                has_initialize: check_unit("_initialize")?,
            });
        }
        if check_unit("_start")? {
            return Ok(Shape::Command);
        }
        Err(ModuleError::NoEntry)
    }

    /// Copies every section as it is, replacing (or inserting) the export
    /// section with one that also exports each mutable global, and, if
    /// `canonical`, rewriting the code to canonicalise NaNs where they
    /// become observable.
    fn rewrite(&self, bytes: &[u8], canonical: bool) -> Result<Vec<u8>, ModuleError> {
        let mut exports = ExportSection::new();
        for (name, kind, index) in &self.exports {
            exports.export(name, export_kind(*kind), *index);
        }
        for g in &self.captured {
            exports.export(&g.export, ExportKind::Global, g.index);
        }
        let mut out = wasm_encoder::Module::new();
        let mut exports_written = false;
        let invalid = |e: wasmparser::BinaryReaderError| ModuleError::Invalid(e.to_string());
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(invalid)?;
            let Some((id, range)) = section_of(&payload) else {
                continue;
            };
            // Sections that must come after the export section (start,
            // element, data count, code, data): insert it before the first.
            if !exports_written && (7..=12).contains(&id) {
                out.section(&exports);
                exports_written = true;
            }
            if id == 7 {
                continue;
            }
            if let (Payload::CodeSectionStart { range, .. }, false) =
                (&payload, self.simd_float || !canonical)
            {
                let reader = wasmparser::CodeSectionReader::new(wasmparser::BinaryReader::new(
                    &bytes[range.clone()],
                    range.start,
                ))
                .map_err(invalid)?;
                let type_params: Vec<usize> = self.types.iter().map(|(p, _)| p.len()).collect();
                let cx = nan::Context {
                    type_params: &type_params,
                    func_types: &self.func_types,
                    imported_funcs: self.imported_funcs,
                    float_globals: &self.float_globals,
                };
                out.section(&nan::rewrite_code(&cx, reader)?);
                continue;
            }
            out.section(&RawSection {
                id,
                data: &bytes[range],
            });
        }
        if !exports_written {
            out.section(&exports);
        }
        let out = out.finish();
        // The rewrite must produce a valid module; anything else is our bug,
        // reported rather than left for the compiler to trip on.
        Validator::new_with_features(features())
            .validate_all(&out)
            .map_err(|e| ModuleError::Invalid(format!("rewritten module is invalid: {e}")))?;
        Ok(out)
    }
}

/// Instructions that change state we do not capture: table contents and
/// the dropped-ness of passive segments.
fn uncapturable(op: &Operator<'_>) -> Option<&'static str> {
    match op {
        Operator::TableSet { .. } => Some("table.set (mutable tables)"),
        Operator::TableGrow { .. } => Some("table.grow (mutable tables)"),
        Operator::TableFill { .. } => Some("table.fill (mutable tables)"),
        Operator::TableCopy { .. } => Some("table.copy (mutable tables)"),
        Operator::TableInit { .. } => Some("table.init (mutable tables)"),
        Operator::ElemDrop { .. } => Some("elem.drop"),
        Operator::DataDrop { .. } => Some("data.drop"),
        _ => None,
    }
}

/// The id and byte range (contents, without id and size) of a section
/// payload; `None` for payloads that are not whole sections.
pub(crate) fn section_of(payload: &Payload<'_>) -> Option<(u8, Range<usize>)> {
    let (id, range) = match payload {
        // Custom sections are re-emitted from their raw range too, which
        // keeps the `name` section and so function names in backtraces.
        Payload::CustomSection(r) => (0, r.range()),
        Payload::TypeSection(r) => (1, r.range()),
        Payload::ImportSection(r) => (2, r.range()),
        Payload::FunctionSection(r) => (3, r.range()),
        Payload::TableSection(r) => (4, r.range()),
        Payload::MemorySection(r) => (5, r.range()),
        Payload::TagSection(r) => (13, r.range()),
        Payload::GlobalSection(r) => (6, r.range()),
        Payload::ExportSection(r) => (7, r.range()),
        Payload::StartSection { range, .. } => (8, range.clone()),
        Payload::ElementSection(r) => (9, r.range()),
        Payload::DataCountSection { range, .. } => (12, range.clone()),
        Payload::CodeSectionStart { range, .. } => (10, range.clone()),
        Payload::DataSection(r) => (11, r.range()),
        _ => return None,
    };
    Some((id, range))
}

fn export_kind(kind: ExternalKind) -> ExportKind {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
    }
}

fn show_type(t: Option<&(Vec<ValType>, Vec<ValType>)>) -> String {
    match t {
        None => "unknown".to_string(),
        Some((p, r)) => {
            let list = |v: &[ValType]| {
                v.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("[{}] -> [{}]", list(p), list(r))
        }
    }
}
