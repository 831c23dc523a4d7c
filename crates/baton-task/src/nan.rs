//! NaN canonicalisation where NaN bits become observable.
//!
//! The determinism contract (DESIGN §4) needs NaN results to have the same
//! bits on every CPU. Cranelift can canonicalise after *every* float
//! operation, but that measured 4.3× slower on n-body (four instructions on
//! every link of a dependency chain). Yet a NaN's payload and sign can only
//! be observed in a few places; this module rewrites a module's code to
//! canonicalise exactly there:
//!
//! - `f32.store` / `f64.store`: the value written to memory (which is state);
//! - `i32.reinterpret_f32` / `i64.reinterpret_f64`: bits become integers;
//! - `f32.copysign` / `f64.copysign`: the sign operand's sign bit is used;
//! - `global.set` of a float global: globals are state.
//!
//! Everything else either cannot see NaN bits (comparisons, conversions to
//! integers trap or saturate the same way whatever the payload) or only
//! moves them to one of the places above (locals, operands, `select`,
//! `abs`/`neg`, calls between wasm functions; WASI passes no floats). The
//! wasm stack is empty at every point, so state holds no float that has not
//! passed through one of them. The canonical NaN is the one Cranelift uses
//! (positive, quiet, zero payload), so the result is the same as with
//! Cranelift's setting.
//!
//! SIMD float lanes are another matter: `v128.store` cannot tell float lanes
//! from integer bytes. Modules with SIMD float arithmetic are left
//! unrewritten and run on an engine with Cranelift's full canonicalisation
//! ([`needs_full_canonicalisation`]).
//!
//! Owns only this code rewrite; it must not change anything else about the
//! module (function indices, locals' meanings, other sections).

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{CodeSection, Function, Ieee32, Ieee64, Instruction};
use wasmparser::{CodeSectionReader, FunctionBody, Operator, ValType};

use crate::module::ModuleError;

const CANONICAL_F32: u32 = 0x7fc0_0000;
const CANONICAL_F64: u64 = 0x7ff8_0000_0000_0000;

/// Whether an operator is SIMD float arithmetic, whose NaN lanes this
/// rewrite cannot reach.
pub(crate) fn is_simd_float(op: &Operator<'_>, scratch: &mut String) -> bool {
    use std::fmt::Write;
    scratch.clear();
    let _ = write!(scratch, "{op:?}");
    scratch.starts_with("F32x4") || scratch.starts_with("F64x2")
}

/// What the rewrite needs to know about the module.
pub(crate) struct Context<'a> {
    /// Parameter types of each function type.
    pub(crate) type_params: &'a [usize],
    /// Type index of each function, imports first.
    pub(crate) func_types: &'a [u32],
    /// Number of imported functions (code entries start after them).
    pub(crate) imported_funcs: usize,
    /// For every global index: `Some(true)` for f64, `Some(false)` for f32,
    /// `None` for other types.
    pub(crate) float_globals: &'a [Option<bool>],
}

/// Re-encodes a code section with canonicalisation inserted at the places
/// listed in the module docs.
pub(crate) fn rewrite_code(
    cx: &Context<'_>,
    reader: CodeSectionReader<'_>,
) -> Result<CodeSection, ModuleError> {
    let invalid = |e: wasmparser::BinaryReaderError| ModuleError::Invalid(e.to_string());
    let mut code = CodeSection::new();
    for (i, body) in reader.into_iter().enumerate() {
        let body = body.map_err(invalid)?;
        let func = cx.imported_funcs + i;
        let params = cx
            .func_types
            .get(func)
            .and_then(|&t| cx.type_params.get(t as usize))
            .copied()
            .ok_or_else(|| ModuleError::Invalid(format!("function {func} has no type")))?;
        code.function(&rewrite_body(cx, &body, params)?);
    }
    Ok(code)
}

fn rewrite_body(
    cx: &Context<'_>,
    body: &FunctionBody<'_>,
    params: usize,
) -> Result<Function, ModuleError> {
    let invalid = |e: wasmparser::BinaryReaderError| ModuleError::Invalid(e.to_string());
    let mut rt = RoundtripReencoder;
    let mut locals = Vec::new();
    let mut count: u64 = params as u64;
    for pair in body.get_locals_reader().map_err(invalid)? {
        let (n, ty) = pair.map_err(invalid)?;
        count += u64::from(n);
        let ty = rt
            .val_type(ty)
            .map_err(|e| ModuleError::Invalid(e.to_string()))?;
        locals.push((n, ty));
    }
    // Two scratch locals at the end: one f32, one f64.
    let t32 =
        u32::try_from(count).map_err(|_| ModuleError::Invalid("too many locals".to_string()))?;
    let t64 = t32 + 1;
    locals.push((1, wasm_encoder::ValType::F32));
    locals.push((1, wasm_encoder::ValType::F64));
    let mut f = Function::new(locals);
    let mut ops = body.get_operators_reader().map_err(invalid)?;
    while !ops.eof() {
        let op = ops.read().map_err(invalid)?;
        match &op {
            Operator::F32Store { .. } | Operator::I32ReinterpretF32 | Operator::F32Copysign => {
                canon_f32(&mut f, t32)
            }
            Operator::F64Store { .. } | Operator::I64ReinterpretF64 | Operator::F64Copysign => {
                canon_f64(&mut f, t64)
            }
            Operator::GlobalSet { global_index } => {
                match cx.float_globals.get(*global_index as usize) {
                    Some(Some(false)) => canon_f32(&mut f, t32),
                    Some(Some(true)) => canon_f64(&mut f, t64),
                    _ => {}
                }
            }
            _ => {}
        }
        let ins = rt
            .instruction(op)
            .map_err(|e| ModuleError::Invalid(e.to_string()))?;
        f.instruction(&ins);
    }
    Ok(f)
}

/// Replaces the f32 on top of the stack by the canonical NaN if it is a NaN.
///
/// A branch instead of `select` measured the same on n-body (2.05 s either
/// way, against 1.37 s with no canonicalisation and 6.0 s with Cranelift's):
/// the cost is the compare at every store, not the data dependency.
fn canon_f32(f: &mut Function, t: u32) {
    f.instruction(&Instruction::LocalSet(t))
        .instruction(&Instruction::F32Const(Ieee32::new(CANONICAL_F32)))
        .instruction(&Instruction::LocalGet(t))
        .instruction(&Instruction::LocalGet(t))
        .instruction(&Instruction::LocalGet(t))
        .instruction(&Instruction::F32Ne)
        .instruction(&Instruction::Select);
}

/// Replaces the f64 on top of the stack by the canonical NaN if it is a NaN.
fn canon_f64(f: &mut Function, t: u32) {
    f.instruction(&Instruction::LocalSet(t))
        .instruction(&Instruction::F64Const(Ieee64::new(CANONICAL_F64)))
        .instruction(&Instruction::LocalGet(t))
        .instruction(&Instruction::LocalGet(t))
        .instruction(&Instruction::LocalGet(t))
        .instruction(&Instruction::F64Ne)
        .instruction(&Instruction::Select);
}

/// Whether a value type is a float, and which.
pub(crate) fn float_kind(ty: ValType) -> Option<bool> {
    match ty {
        ValType::F32 => Some(false),
        ValType::F64 => Some(true),
        _ => None,
    }
}
