//! A bare wasmtime step loop: the reference for the execution-overhead
//! benchmark (`benches/exec.sh`, BENCHMARKS.md).
//!
//! It runs an *unmodified* step-task module (nbody.wasm) the plainest way
//! wasmtime allows: its own `wasmtime::Engine` with the DEFAULT
//! configuration (so no NaN canonicalisation and no epoch interruption), a
//! `Linker<Host>` with baton's WASI host, `_initialize` once, then
//! `baton_step` until it returns 0. No module preparation, no limits, no
//! checkpoints, no digests. Output goes straight to this process's stdout
//! and stderr.
//!
//! ```sh
//! cargo run --release -p baton-task --example bare_loop -- examples/nbody.wasm 1000 50000
//! ```
//!
//! For attributing baton's overhead only, two environment variables turn on
//! one of baton's engine settings each (the benchmark itself sets neither):
//! `BARE_NAN_CANON=1` (Cranelift NaN canonicalisation) and `BARE_EPOCH=1`
//! (epoch interruption, with a deadline that never arrives).
//! `BARE_CWASM=FILE` also writes the compiled module (an ELF object, for
//! `objdump -d`) to FILE, to read the machine code that a profile points at.

use std::io::Write;
use std::process::ExitCode;

use baton_task::wasi::{add_to_linker, ClockMode, Host, HostConfig, HostState, OutStream};
use wasmtime::{Config, Engine, Linker, Module, Store};

fn main() -> ExitCode {
    match run() {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            eprintln!("bare_loop: error: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn run() -> wasmtime::Result<i32> {
    let mut argv = std::env::args().skip(1);
    let path = argv
        .next()
        .ok_or_else(|| wasmtime::format_err!("usage: bare_loop MODULE.wasm [task arguments...]"))?;
    let name = std::path::Path::new(&path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task".to_string());
    let clock = ClockMode::Virtual {
        start_realtime_ns: 0,
    };
    let config = HostConfig {
        args: std::iter::once(name).chain(argv).collect(),
        env: Vec::new(),
        seed: 0,
        stdin: Vec::new(),
        preopens: Vec::new(),
        clock,
        max_fs_bytes: 1 << 30,
    };

    let engine = if knob("BARE_NAN_CANON") || knob("BARE_EPOCH") {
        let mut config = Config::new();
        config.cranelift_nan_canonicalization(knob("BARE_NAN_CANON"));
        config.epoch_interruption(knob("BARE_EPOCH"));
        Engine::new(&config)?
    } else {
        Engine::default()
    };
    let wasm = std::fs::read(&path)?;
    if let Some(out) = std::env::var_os("BARE_CWASM") {
        std::fs::write(out, engine.precompile_module(&wasm)?)?;
    }
    let module = Module::new(&engine, &wasm)?;
    let mut linker: Linker<Host> = Linker::new(&engine);
    add_to_linker(&mut linker, |h: &mut Host| h)?;

    let sink = |stream: OutStream, bytes: &[u8]| {
        // Output errors (a closed pipe) are not this benchmark's concern.
        let _ = match stream {
            OutStream::Stdout => std::io::stdout().lock().write_all(bytes),
            OutStream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    };
    let host = Host::new(HostState::new(&config)?, Box::new(sink), clock);
    let mut store = Store::new(&engine, host);
    if knob("BARE_EPOCH") {
        store.set_epoch_deadline(u64::MAX / 2);
    }
    let instance = linker.instantiate(&mut store, &module)?;

    let exited = |e: &wasmtime::Error| e.downcast_ref::<baton_task::wasi::ProcExit>().map(|p| p.0);
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        if let Err(e) = init.call(&mut store, ()) {
            return exited(&e).ok_or(e);
        }
    }
    let step = instance.get_typed_func::<(), i32>(&mut store, "baton_step")?;
    loop {
        match step.call(&mut store, ()) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return exited(&e).ok_or(e),
        }
    }
    Ok(store.data().state.exit_status().unwrap_or(0))
}

/// Whether the environment variable `name` is set to `1`.
fn knob(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}
