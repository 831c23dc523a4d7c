//! The transform's refusals and limits, on small hand-written modules.
//! (What it does to real programs is tested through the task API in
//! `tests/suspend.rs`.)

use crate::module::{prepare, Points};
use crate::wasi::PROVIDED;

fn points(wat: &str) -> Points {
    let bytes = wat::parse_str(wat).expect("valid wat");
    prepare(&bytes, PROVIDED)
        .expect("the module is accepted")
        .points()
        .clone()
}

const HEAD: &str = r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)"#;

#[test]
fn a_command_with_a_loop_gets_points() {
    let p = points(&format!(
        r#"(module {HEAD}
            (func (export "_start") (local i32)
              (loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get 0) (i32.const 10))))))"#
    ));
    assert!(
        matches!(p, Points::Anywhere { sites, .. } if sites >= 1),
        "{p:?}"
    );
}

#[test]
fn tail_calls_are_refused_when_the_module_is_read() {
    // Tail calls are not among the features baton accepts, so the transform
    // (which would have to refuse them) never sees one.
    let bytes = wat::parse_str(format!(
        r#"(module {HEAD}
            (func $f (param i32) (result i32) (local.get 0))
            (func $g (result i32) (return_call $f (i32.const 1)))
            (func (export "_start") (drop (call $g))))"#
    ))
    .expect("valid wat");
    let err = prepare(&bytes, PROVIDED).expect_err("tail calls are refused");
    assert!(err.to_string().contains("tail calls"), "{err}");
}

#[test]
fn blocks_with_parameters_run_as_one_step() {
    let p = points(&format!(
        r#"(module {HEAD}
            (func (export "_start")
              (i32.const 1)
              (block (param i32) (drop))
              (loop $l (br_if $l (i32.const 0)))))"#
    ));
    assert!(
        matches!(&p, Points::OneStep(why) if why.contains("parameters")),
        "{p:?}"
    );
}

#[test]
fn reference_typed_locals_run_as_one_step() {
    let p = points(&format!(
        r#"(module {HEAD}
            (func (export "_start") (local funcref)
              (loop $l (br_if $l (i32.const 0)))))"#
    ));
    assert!(
        matches!(&p, Points::OneStep(why) if why.contains("reference")),
        "{p:?}"
    );
}

#[test]
fn the_names_baton_adds_are_reserved() {
    let bytes = wat::parse_str(format!(
        r#"(module {HEAD}
            (global (export "__baton_state") (mut i32) (i32.const 0))
            (func (export "_start")))"#
    ))
    .expect("valid wat");
    let err = prepare(&bytes, PROVIDED).expect_err("a reserved export name is refused");
    assert!(err.to_string().contains("__baton_"), "{err}");
}

#[test]
fn nesting_beyond_the_limit_runs_as_one_step() {
    let depth = 5000;
    let mut body = String::new();
    for _ in 0..depth {
        body.push_str("(block ");
    }
    body.push_str("(loop $l (br_if $l (i32.const 0)))");
    for _ in 0..depth {
        body.push(')');
    }
    let p = points(&format!(
        r#"(module {HEAD} (func (export "_start") {body}))"#
    ));
    assert!(
        matches!(&p, Points::OneStep(why) if why.contains("nested")),
        "{p:?}"
    );
}
