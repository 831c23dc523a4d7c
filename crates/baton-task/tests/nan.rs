//! NaN canonicalisation: whatever NaN a float operation produces on this
//! CPU, what reaches state (memory, globals) or integer bits is the one
//! canonical NaN, and nothing else changes. See `src/nan.rs`.

mod support;

use baton_task::module::{self, GlobalKind};
use baton_task::{StepOutcome, Task, TaskConfig};
use support::{engine, Capture};

const CANON_F64: u64 = 0x7ff8_0000_0000_0000;
const CANON_F32: u32 = 0x7fc0_0000;

/// One step that stores, at fixed addresses, the results listed in the
/// comments; returns 0.
const MODULE: &str = r#"(module
  (memory (export "memory") 1)
  (global $g64 (mut f64) (f64.const 0))
  (global $g32 (mut f32) (f32.const 0))
  (func $zero64 (result f64) f64.const 0)
  (func (export "baton_step") (result i32)
    ;; 0: 0/0 (a NaN whose sign and payload depend on the CPU)
    (f64.store (i32.const 0) (f64.div (call $zero64) (call $zero64)))
    ;; 8: a NaN with a payload, through arithmetic
    (f64.store (i32.const 8) (f64.add (f64.const nan:0x12345) (f64.const 1)))
    ;; 16: negative NaN, negated: its bits as an integer
    (i64.store (i32.const 16) (i64.reinterpret_f64 (f64.neg (f64.const -nan:0x1))))
    ;; 24: copysign from a negative NaN
    (f64.store (i32.const 24) (f64.copysign (f64.const 2) (f64.const -nan)))
    ;; 32: f32 sqrt(-1)
    (f32.store (i32.const 32) (f32.sqrt (f32.const -1)))
    ;; 36: f32 reinterpret of a payload NaN
    (i32.store (i32.const 36) (i32.reinterpret_f32 (f32.const nan:0x7)))
    ;; 40, 48: ordinary values pass unchanged
    (f64.store (i32.const 40) (f64.const -0))
    (f64.store (i32.const 48) (f64.div (f64.const 1) (call $zero64)))
    ;; globals
    (global.set $g64 (f64.sub (f64.const -nan:0x99) (f64.const 0)))
    (global.set $g32 (f32.mul (f32.const nan:0x5) (f32.const 3)))
    i32.const 0))"#;

fn u64_at(mem: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(mem[at..at + 8].try_into().unwrap())
}

fn u32_at(mem: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(mem[at..at + 4].try_into().unwrap())
}

#[test]
fn observable_nans_are_canonical() {
    let bytes = wat::parse_str(MODULE).unwrap();
    assert!(!module::prepare(&bytes, baton_task::wasi::PROVIDED)
        .unwrap()
        .full_nan_canonicalisation());
    let program = engine().load(&bytes).unwrap();
    let mut task = Task::create(
        engine(),
        &program,
        TaskConfig::new("nan"),
        Capture::new().sink(),
    )
    .unwrap();
    assert_eq!(task.step().unwrap(), StepOutcome::Finished(0));
    let state = task.state().unwrap();
    let mem = state.memory();
    assert_eq!(u64_at(mem, 0), CANON_F64, "0/0");
    assert_eq!(u64_at(mem, 8), CANON_F64, "payload through add");
    assert_eq!(u64_at(mem, 16), CANON_F64, "reinterpret");
    assert_eq!(
        f64::from_bits(u64_at(mem, 24)),
        2.0,
        "copysign from a negative NaN"
    );
    assert_eq!(u32_at(mem, 32), CANON_F32, "f32 sqrt(-1)");
    assert_eq!(u32_at(mem, 36), CANON_F32, "f32 reinterpret");
    assert_eq!(u64_at(mem, 40), (-0.0f64).to_bits(), "-0 unchanged");
    assert_eq!(
        f64::from_bits(u64_at(mem, 48)),
        f64::INFINITY,
        "inf unchanged"
    );
    let globals: Vec<_> = state.globals.iter().map(|g| (g.kind, g.bits)).collect();
    assert!(
        globals.contains(&(GlobalKind::F64, u128::from(CANON_F64))),
        "{globals:x?}"
    );
    assert!(
        globals.contains(&(GlobalKind::F32, u128::from(CANON_F32))),
        "{globals:x?}"
    );
}

#[test]
fn simd_float_modules_run_with_full_canonicalisation() {
    let bytes = wat::parse_str(
        r#"(module
          (memory (export "memory") 1)
          (func (export "baton_step") (result i32)
            (v128.store (i32.const 0)
              (f32x4.div (v128.const f32x4 0 1 -1 0) (v128.const f32x4 0 0 0 0)))
            i32.const 0))"#,
    )
    .unwrap();
    let prepared = module::prepare(&bytes, baton_task::wasi::PROVIDED).unwrap();
    assert!(prepared.full_nan_canonicalisation());
    let program = engine().load(&bytes).unwrap();
    let mut task = Task::create(
        engine(),
        &program,
        TaskConfig::new("simd"),
        Capture::new().sink(),
    )
    .unwrap();
    task.step().unwrap();
    let state = task.state().unwrap();
    let mem = state.memory();
    assert_eq!(u32_at(mem, 0), CANON_F32, "0/0 lane");
    assert_eq!(f32::from_bits(u32_at(mem, 4)), f32::INFINITY);
    assert_eq!(f32::from_bits(u32_at(mem, 8)), f32::NEG_INFINITY);
    assert_eq!(u32_at(mem, 12), CANON_F32, "0/0 lane");
}

/// The rewrite keeps every function's behaviour: the examples' documented
/// outputs are checked elsewhere; here, a function with parameters and
/// locals of every type still computes the same thing.
#[test]
fn rewrite_keeps_params_and_locals() {
    let bytes = wat::parse_str(
        r#"(module
          (memory (export "memory") 1)
          (func $f (param i32 f64) (result f64) (local i64 f32 f64)
            (local.set 4 (f64.mul (local.get 1) (f64.const 2)))
            (f64.store (local.get 0) (local.get 4))
            (f64.load (local.get 0)))
          (func (export "baton_step") (result i32)
            (f64.store (i32.const 64) (call $f (i32.const 8) (f64.const 1.5)))
            i32.const 0))"#,
    )
    .unwrap();
    let program = engine().load(&bytes).unwrap();
    let mut task = Task::create(
        engine(),
        &program,
        TaskConfig::new("f"),
        Capture::new().sink(),
    )
    .unwrap();
    task.step().unwrap();
    let state = task.state().unwrap();
    assert_eq!(f64::from_bits(u64_at(state.memory(), 8)), 3.0);
    assert_eq!(f64::from_bits(u64_at(state.memory(), 64)), 3.0);
}

/// Native NaNs: the code is left as it is, so the CPU's own NaN (on x86,
/// 0/0 gives a negative one) reaches memory; and a program prepared either
/// way runs from the other's states (the state does not depend on it).
#[test]
fn native_nans_are_the_cpus_and_states_cross_between_the_two() {
    let bytes = wat::parse_str(MODULE).unwrap();
    let native = engine()
        .load_as(&bytes, true, baton_task::Nans::Native)
        .unwrap();
    let canonical = engine().load(&bytes).unwrap();
    assert_eq!(native.digest(), canonical.digest());
    let mut task = Task::create(
        engine(),
        &native,
        TaskConfig::new("nan"),
        Capture::new().sink(),
    )
    .unwrap();
    assert_eq!(task.step().unwrap(), StepOutcome::Finished(0));
    let state = task.state().unwrap();
    let mem = state.memory();
    // Whatever the CPU makes, it is a NaN; with the payload operand, the
    // payload survives where the canonical rewrite would drop it.
    assert!(f64::from_bits(u64_at(mem, 0)).is_nan());
    assert_ne!(u64_at(mem, 8), CANON_F64, "payload kept natively");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(u64_at(mem, 0), 0xfff8_0000_0000_0000, "x86's default NaN");
    let mut restored = Task::restore(
        engine(),
        &canonical,
        &state,
        support::virtual_clock(),
        Default::default(),
        Capture::new().sink(),
    )
    .unwrap();
    assert_eq!(restored.finished(), Some(0));
    assert_eq!(restored.digest().unwrap(), task.digest().unwrap());
}
