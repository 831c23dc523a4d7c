//! Module rejection through `Engine::load`: each kind of bad module gets
//! its own error variant and a message that names the problem. And the
//! capture of globals a module keeps private.

mod support;

use baton_task::module::{ModuleError, Shape, MAX_MODULE_BYTES};
use baton_task::state::GlobalValue;
use baton_task::{Program, StepOutcome, Task, TaskConfig, TaskError};
use support::{engine, example_bytes, restore, Capture};

/// Loads `bytes`, which must be rejected as a module; returns the module
/// error and the message.
fn rejected(bytes: &[u8]) -> (ModuleError, String) {
    match engine().load(bytes) {
        Ok(_) => panic!("module was accepted"),
        Err(TaskError::Module(e)) => {
            let msg = e.to_string();
            (e, msg)
        }
        Err(other) => panic!("expected a module error, got {other:?}: {other}"),
    }
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("bad WAT in test: {e}"))
}

fn load_wat(text: &str) -> Program {
    engine()
        .load(&wat(text))
        .unwrap_or_else(|e| panic!("module rejected: {e}"))
}

/// A minimal valid step task, with `extra` spliced in.
fn step_module(extra: &str) -> String {
    format!(
        r#"(module
             {extra}
             (memory (export "memory") 1)
             (func (export "baton_step") (result i32) i32.const 0))"#
    )
}

#[test]
fn valid_modules_load() {
    let p = load_wat(&step_module(""));
    assert_eq!(
        p.shape(),
        Shape::Step {
            has_initialize: false
        }
    );
    let p = load_wat(&step_module(r#"(func (export "_initialize"))"#));
    assert_eq!(
        p.shape(),
        Shape::Step {
            has_initialize: true
        }
    );
    let p = load_wat(r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    assert_eq!(p.shape(), Shape::Command);
    // baton_step wins over _start.
    let p = load_wat(&step_module(r#"(func (export "_start"))"#));
    assert!(matches!(p.shape(), Shape::Step { .. }));
    for name in ["pi", "render", "nbody", "bigstate", "countdown"] {
        assert_eq!(
            support::program(name).shape(),
            Shape::Step {
                has_initialize: true
            },
            "{name}"
        );
    }
    assert_eq!(support::program("hello").shape(), Shape::Command);
    // The content address is the digest of the bytes given.
    let bytes = example_bytes("pi");
    assert_eq!(
        support::program("pi").digest(),
        baton_task::Digest::of(&bytes)
    );
}

#[test]
fn not_wasm() {
    let mut random = vec![0u8; 1000];
    let mut x = 0x1234_5678u32;
    for b in &mut random {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    assert_ne!(&random[..4], b"\0asm");
    let text = b"#!/bin/sh\necho this is a shell script, not a module\n".to_vec();
    let readme = std::fs::read(format!("{}README.md", support::EXAMPLES)).unwrap();
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    for (what, bytes) in [
        ("random bytes", random),
        ("an empty file", Vec::new()),
        ("a text file", text),
        ("a markdown file", readme),
        ("an ELF header", elf),
        ("three bytes of the magic", b"\0as".to_vec()),
    ] {
        let (e, msg) = rejected(&bytes);
        assert!(matches!(e, ModuleError::NotWasm), "{what}: {e:?}");
        assert!(msg.contains("not a WebAssembly module"), "{what}: {msg}");
    }
}

/// The sections of a module as (start, end) byte ranges, contents included.
fn section_ranges(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Some((_, range)) = payload.unwrap().as_section() {
            out.push((range.start, range.end));
        }
    }
    out
}

#[test]
fn truncated_modules() {
    let bytes = example_bytes("pi");
    let sections = section_ranges(&bytes);
    assert!(sections.len() >= 5, "pi has its sections");
    let mut cuts = vec![bytes.len() - 1, bytes.len() / 2, 9, 10];
    for &(start, end) in &sections {
        // Strictly inside each section's contents.
        if end - start >= 2 {
            cuts.push(start + 1);
            cuts.push((start + end) / 2);
            cuts.push(end - 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let (e, msg) = rejected(&bytes[..cut]);
        assert!(matches!(e, ModuleError::Invalid(_)), "cut at {cut}: {e:?}");
        assert!(msg.starts_with("invalid module"), "cut at {cut}: {msg}");
        let lower = msg.to_lowercase();
        assert!(
            lower.contains("end")
                || lower.contains("eof")
                || lower.contains("out of bounds")
                || lower.contains("unexpected"),
            "cut at {cut}: the message should say the module ends early: {msg}"
        );
    }
    // Cut inside the 8-byte header: not even the magic and version.
    for cut in [0, 3, 4, 7] {
        let (e, _) = rejected(&bytes[..cut]);
        assert!(matches!(e, ModuleError::NotWasm), "cut at {cut}: {e:?}");
    }
}

#[test]
fn import_baton_does_not_provide() {
    let (e, msg) = rejected(&wat(&step_module(r#"(import "env" "foo" (func))"#)));
    match &e {
        ModuleError::UnsupportedImport { module, name } => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "foo"));
        }
        other => panic!("{other:?}"),
    }
    assert!(msg.contains("env::foo"), "{msg}");

    let (e, msg) = rejected(&wat(&step_module(
        r#"(import "wasi_snapshot_preview1" "no_such_function" (func (param i32) (result i32)))"#,
    )));
    assert!(matches!(e, ModuleError::UnsupportedImport { .. }), "{e:?}");
    assert!(
        msg.contains("wasi_snapshot_preview1::no_such_function"),
        "{msg}"
    );

    // Preview 2 / other versions are not provided either.
    let (e, msg) = rejected(&wat(&step_module(
        r#"(import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
    )));
    assert!(matches!(e, ModuleError::UnsupportedImport { .. }), "{e:?}");
    assert!(msg.contains("wasi_unstable::fd_write"), "{msg}");

    // Only functions are imported: no memories, globals or tables.
    let (e, msg) = rejected(&wat(r#"(module
        (import "wasi_snapshot_preview1" "memory" (memory 1))
        (export "memory" (memory 0))
        (func (export "baton_step") (result i32) i32.const 0))"#));
    assert!(matches!(e, ModuleError::UnsupportedImport { .. }), "{e:?}");
    assert!(msg.contains("wasi_snapshot_preview1::memory"), "{msg}");
    let (e, _) = rejected(&wat(&step_module(
        r#"(import "env" "g" (global (mut i32)))"#,
    )));
    assert!(matches!(e, ModuleError::UnsupportedImport { .. }), "{e:?}");
}

/// Every function the examples import is provided (sanity for the list).
#[test]
fn the_wasi_functions_of_the_issue_are_provided() {
    let names = [
        ("args_get", "(param i32 i32) (result i32)"),
        ("args_sizes_get", "(param i32 i32) (result i32)"),
        ("environ_get", "(param i32 i32) (result i32)"),
        ("environ_sizes_get", "(param i32 i32) (result i32)"),
        ("clock_res_get", "(param i32 i32) (result i32)"),
        ("clock_time_get", "(param i32 i64 i32) (result i32)"),
        ("random_get", "(param i32 i32) (result i32)"),
        ("fd_write", "(param i32 i32 i32 i32) (result i32)"),
        ("fd_read", "(param i32 i32 i32 i32) (result i32)"),
        ("fd_seek", "(param i32 i64 i32 i32) (result i32)"),
        ("fd_tell", "(param i32 i32) (result i32)"),
        ("fd_close", "(param i32) (result i32)"),
        ("fd_fdstat_get", "(param i32 i32) (result i32)"),
        ("fd_filestat_get", "(param i32 i32) (result i32)"),
        ("fd_prestat_get", "(param i32 i32) (result i32)"),
        ("fd_prestat_dir_name", "(param i32 i32 i32) (result i32)"),
        ("fd_readdir", "(param i32 i32 i32 i64 i32) (result i32)"),
        (
            "path_open",
            "(param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)",
        ),
        (
            "path_filestat_get",
            "(param i32 i32 i32 i32 i32) (result i32)",
        ),
        ("path_create_directory", "(param i32 i32 i32) (result i32)"),
        ("path_remove_directory", "(param i32 i32 i32) (result i32)"),
        ("path_unlink_file", "(param i32 i32 i32) (result i32)"),
        (
            "path_rename",
            "(param i32 i32 i32 i32 i32 i32) (result i32)",
        ),
        ("sched_yield", "(result i32)"),
        ("poll_oneoff", "(param i32 i32 i32 i32) (result i32)"),
        ("proc_exit", "(param i32)"),
        // Not provided as such, but registered (ENOSYS) so that every
        // preview1 module links.
        ("sock_accept", "(param i32 i32 i32) (result i32)"),
        ("proc_raise", "(param i32) (result i32)"),
    ];
    let mut imports = String::new();
    for (name, ty) in names {
        imports.push_str(&format!(
            "(import \"wasi_snapshot_preview1\" \"{name}\" (func {ty}))\n"
        ));
    }
    let program = load_wat(&step_module(&imports));
    // And it instantiates: the types match the host's.
    Task::create(
        engine(),
        &program,
        TaskConfig::new("imports"),
        Capture::new().sink(),
    )
    .unwrap_or_else(|e| panic!("a module importing all of preview1 instantiates: {e}"));
}

/// A real WASI function imported with the wrong type is an error that names
/// it: ideally at load, at the latest when the task is created.
#[test]
fn wasi_function_with_the_wrong_type() {
    let bytes = wat(&step_module(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32)))"#,
    ));
    // Rejected when loaded, not later when a task is created.
    let err = match engine().load(&bytes) {
        Err(e) => e,
        Ok(_) => panic!("a mistyped fd_write import was accepted at load"),
    };
    assert!(
        matches!(err, TaskError::Module(ModuleError::ImportType(_))),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("fd_write"), "{err:?}: {msg}");
}

#[test]
fn no_exported_memory() {
    for text in [
        r#"(module (func (export "baton_step") (result i32) i32.const 0))"#,
        r#"(module (memory 1) (func (export "baton_step") (result i32) i32.const 0))"#,
        r#"(module (memory (export "mem") 1) (func (export "baton_step") (result i32) i32.const 0))"#,
        r#"(module (memory 1) (func (export "_start")))"#,
    ] {
        let (e, msg) = rejected(&wat(text));
        assert!(matches!(e, ModuleError::NoMemory), "{text}: {e:?}");
        assert!(msg.contains("memory"), "{msg}");
    }
}

#[test]
fn baton_step_of_the_wrong_type() {
    for (sig, shown) in [
        ("(param i32) (result i32)", "[i32] -> [i32]"),
        ("", "[] -> []"),
        ("(result i64)", "[] -> [i64]"),
        ("(result i32 i32)", "[] -> [i32, i32]"),
    ] {
        let text = format!(
            r#"(module (memory (export "memory") 1)
                 (func (export "baton_step") {sig} unreachable))"#
        );
        let (e, msg) = rejected(&wat(&text));
        match &e {
            ModuleError::BadStepType { found } => assert_eq!(found, shown),
            other => panic!("{sig}: {other:?}"),
        }
        assert!(
            msg.contains("baton_step") && msg.contains(shown) && msg.contains("[] -> [i32]"),
            "{msg}"
        );
    }
    // `baton_step` that is not a function at all.
    let (e, msg) = rejected(&wat(
        r#"(module (memory (export "memory") 1) (global (export "baton_step") i32 (i32.const 1)))"#,
    ));
    assert!(
        matches!(e, ModuleError::NoEntry | ModuleError::BadStepType { .. }),
        "{e:?}: {msg}"
    );
}

#[test]
fn initialize_and_start_of_the_wrong_type() {
    let (e, msg) = rejected(&wat(&step_module(
        r#"(func (export "_initialize") (param i32))"#,
    )));
    assert!(
        matches!(
            e,
            ModuleError::BadEntryType {
                name: "_initialize",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("_initialize") && msg.contains("[i32] -> []"),
        "{msg}"
    );
    let (e, msg) = rejected(&wat(
        r#"(module (memory (export "memory") 1) (func (export "_start") (result i32) i32.const 0))"#,
    ));
    assert!(
        matches!(e, ModuleError::BadEntryType { name: "_start", .. }),
        "{e:?}"
    );
    assert!(msg.contains("_start"), "{msg}");
}

#[test]
fn neither_baton_step_nor_start() {
    for text in [
        r#"(module (memory (export "memory") 1))"#,
        r#"(module (memory (export "memory") 1) (func (export "main") (result i32) i32.const 0))"#,
        r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#,
    ] {
        let (e, msg) = rejected(&wat(text));
        assert!(matches!(e, ModuleError::NoEntry), "{text}: {e:?}");
        assert!(
            msg.contains("baton_step") && msg.contains("_start"),
            "{msg}"
        );
    }
}

#[test]
fn component_binary() {
    // The preamble of a component: magic, version 0x0d, layer 1.
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    let (e, msg) = rejected(&bytes);
    assert!(matches!(e, ModuleError::Component), "{e:?}");
    assert!(msg.contains("component"), "{msg}");
    bytes.extend_from_slice(&[0; 16]);
    let (e, _) = rejected(&bytes);
    assert!(matches!(e, ModuleError::Component), "{e:?}");
    // Another binary version is not a module baton reads.
    let (e, msg) = rejected(b"\0asm\x02\x00\x00\x00");
    assert!(matches!(e, ModuleError::Invalid(_)), "{e:?}");
    assert!(msg.contains("version"), "{msg}");
}

#[test]
fn start_section() {
    let (e, msg) = rejected(&wat(&step_module(r#"(func $s) (start $s)"#)));
    assert!(matches!(e, ModuleError::Unsupported(_)), "{e:?}");
    assert!(msg.contains("start section"), "{msg}");
}

#[test]
fn mutable_tables() {
    for (op, body) in [
        ("table.set", "(table.set $t (i32.const 0) (ref.null func))"),
        (
            "table.grow",
            "(drop (table.grow $t (ref.null func) (i32.const 1)))",
        ),
        (
            "table.fill",
            "(table.fill $t (i32.const 0) (ref.null func) (i32.const 1))",
        ),
        (
            "table.copy",
            "(table.copy $t $t (i32.const 0) (i32.const 0) (i32.const 1))",
        ),
        (
            "table.init",
            "(table.init $t $e (i32.const 0) (i32.const 0) (i32.const 0))",
        ),
        ("elem.drop", "(elem.drop $e)"),
    ] {
        let text = format!(
            r#"(module (memory (export "memory") 1)
                 (table $t 2 funcref)
                 (elem $e func $f)
                 (func $f (export "baton_step") (result i32) {body} i32.const 0))"#
        );
        let (e, msg) = rejected(&wat(&text));
        assert!(matches!(e, ModuleError::Unsupported(_)), "{op}: {e:?}");
        assert!(msg.contains(op), "{op}: {msg}");
    }
    // data.drop too: whether a passive segment was dropped is state.
    let (e, msg) = rejected(&wat(&step_module(r#"(data $d "x") (func (data.drop $d))"#)));
    assert!(matches!(e, ModuleError::Unsupported(_)), "{e:?}");
    assert!(msg.contains("data.drop"), "{msg}");
    // An immutable table (call_indirect only) is fine.
    load_wat(
        r#"(module (memory (export "memory") 1)
             (table 1 funcref) (elem (i32.const 0) $f)
             (type $t (func (result i32)))
             (func $f (result i32) i32.const 0)
             (func (export "baton_step") (result i32) (call_indirect (type $t) (i32.const 0))))"#,
    );
}

#[test]
fn features_baton_cannot_capture() {
    // Shared memory (threads), several memories, 64-bit memory.
    for (what, text) in [
        (
            "shared memory",
            r#"(module (memory (export "memory") 1 1 shared) (func (export "baton_step") (result i32) i32.const 0))"#,
        ),
        (
            "two memories",
            r#"(module (memory (export "memory") 1) (memory 1) (func (export "baton_step") (result i32) i32.const 0))"#,
        ),
        (
            "memory64",
            r#"(module (memory (export "memory") i64 1) (func (export "baton_step") (result i32) i32.const 0))"#,
        ),
    ] {
        let (e, msg) = rejected(&wat(text));
        assert!(
            matches!(
                e,
                ModuleError::Invalid(_)
                    | ModuleError::ManyMemories(_)
                    | ModuleError::Unsupported(_)
            ),
            "{what}: {e:?}"
        );
        assert!(!msg.is_empty());
    }
    // The reserved export prefix.
    let (e, msg) = rejected(&wat(&step_module(
        r#"(global (export "__baton_global_0") i32 (i32.const 0))"#,
    )));
    assert!(matches!(e, ModuleError::Unsupported(_)), "{e:?}");
    assert!(msg.contains("__baton_global_0"), "{msg}");
}

#[test]
fn too_large() {
    let bytes = vec![0u8; MAX_MODULE_BYTES + 1];
    let (e, msg) = rejected(&bytes);
    assert!(
        matches!(e, ModuleError::TooLarge { size, max } if size == MAX_MODULE_BYTES + 1 && max == MAX_MODULE_BYTES),
        "{e:?}"
    );
    assert!(msg.contains(&MAX_MODULE_BYTES.to_string()), "{msg}");
}

/// Globals the module does not export, of several types, next to an
/// exported one and an immutable one: each step changes them; they are
/// captured in the state and restored, so a task restored at any point
/// finishes at the same point with the same values.
const PRIVATE_GLOBALS: &str = r#"
(module
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 100))
  (global $k i32 (i32.const 7))
  (global $h (mut i64) (i64.const -5))
  (global $f (export "visible") (mut f64) (f64.const 0.5))
  (func (export "baton_step") (result i32)
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (global.set $h (i64.sub (global.get $h) (i64.const 3)))
    (global.set $f (f64.mul (global.get $f) (f64.const 2)))
    (i32.store (i32.const 0) (i32.add (global.get $g) (global.get $k)))
    (i32.ne (global.get $g) (i32.const 110))))
"#;

fn global_values(task: &mut Task) -> (i32, i64, f64) {
    let g = task.state().unwrap().globals;
    assert_eq!(
        g.len(),
        3,
        "the three mutable globals, not the immutable one: {g:?}"
    );
    (
        g[0].bits as u32 as i32,
        g[1].bits as u64 as i64,
        f64::from_bits(g[2].bits as u64),
    )
}

#[test]
fn private_mutable_globals_are_captured_and_restored() {
    let program = load_wat(PRIVATE_GLOBALS);
    let out = Capture::new();
    let mut task =
        Task::create(engine(), &program, TaskConfig::new("globals"), out.sink()).unwrap();
    let mut states = vec![task.state().unwrap()];
    let mut digests = vec![task.digest().unwrap()];
    assert_eq!(global_values(&mut task), (100, -5, 0.5));
    for k in 1..=10u64 {
        let outcome = task.step().unwrap();
        assert_eq!(outcome == StepOutcome::Continue, k < 10, "step {k}");
        let (g, h, f) = global_values(&mut task);
        assert_eq!(g, 100 + k as i32);
        assert_eq!(h, -5 - 3 * k as i64);
        assert_eq!(f, 0.5 * f64::from(1u32 << k));
        states.push(task.state().unwrap());
        digests.push(task.digest().unwrap());
    }
    assert_eq!(task.finished(), Some(0));
    for (k, at_k) in states.iter().enumerate().take(10) {
        // Through a full checkpoint's bytes.
        let cp = baton_task::checkpoint::encode_full(at_k).unwrap();
        let state = support::decode_full(&cp.bytes);
        let out = Capture::new();
        let mut restored = restore(&program, &state, &out);
        assert_eq!(global_values(&mut restored).0, 100 + k as i32);
        for (p, digest) in digests.iter().enumerate().skip(k + 1) {
            let outcome = restored.step().unwrap();
            assert_eq!(
                restored.digest().unwrap(),
                *digest,
                "restored at {k}: digest at {p}"
            );
            assert_eq!(
                restored.state().unwrap().memory()[..4],
                (107 + p as i32).to_le_bytes(),
                "the step saw the restored global"
            );
            if p == 10 {
                assert_eq!(
                    outcome,
                    StepOutcome::Finished(0),
                    "restored at {k}: finishes at point 10"
                );
            } else {
                assert_eq!(
                    outcome,
                    StepOutcome::Continue,
                    "restored at {k}: continues at {p}"
                );
            }
        }
    }
    // The instance really runs with the restored value: a state whose
    // private counter says 105 finishes after five more steps.
    let mut state = states[0].clone();
    state.globals[0] = GlobalValue {
        kind: state.globals[0].kind,
        bits: 105,
    };
    let out = Capture::new();
    let mut restored = restore(&program, &state, &out);
    let mut steps = 0;
    while restored.finished().is_none() && steps < 20 {
        restored.step().unwrap();
        steps += 1;
    }
    assert_eq!(steps, 5);
}

/// clang's `__stack_pointer` in the examples is one captured global.
#[test]
fn examples_capture_the_stack_pointer() {
    let out = Capture::new();
    let mut task = Task::create(
        engine(),
        &support::program("countdown"),
        support::config("countdown", &["2"], 0),
        out.sink(),
    )
    .unwrap();
    let g = task.state().unwrap().globals;
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0].kind, baton_task::module::GlobalKind::I32);
    assert!(
        g[0].bits > 0 && g[0].bits <= 65536 * 2,
        "stack pointer inside memory: {}",
        g[0].bits
    );
}

/// A trap in `_initialize` is reported at creation.
#[test]
fn trap_in_initialize() {
    let program = load_wat(&step_module(
        r#"(func $boom (export "_initialize") unreachable)"#,
    ));
    match Task::create(
        engine(),
        &program,
        TaskConfig::new("x"),
        Capture::new().sink(),
    ) {
        Err(TaskError::Trap {
            point,
            message,
            backtrace,
        }) => {
            assert_eq!(point, 0);
            assert!(message.contains("unreachable"), "{message}");
            assert!(
                backtrace.iter().any(|f| f.contains("boom")),
                "{backtrace:?}"
            );
        }
        Err(other) => panic!("expected a trap, got {other:?}"),
        Ok(_) => panic!("expected a trap"),
    }
}
