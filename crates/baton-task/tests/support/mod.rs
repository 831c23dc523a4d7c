//! Shared helpers for the integration tests of `baton-task`: one engine per
//! test binary, programs loaded once per example, a capturing output sink,
//! and a recorder that runs a task to its end noting the digest and the
//! output length at every point.
//!
//! Each test binary includes this module with `mod support;` and uses only
//! part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use baton_task::checkpoint::{self, Decoded};
use baton_task::wasi::{ClockMode, OutStream, OutputSink, Preopen};
use baton_task::{Digest, Engine, Limits, Program, State, StepOutcome, Task, TaskConfig};

/// No test task needs more steps than this; every loop is bounded by it.
pub const MAX_STEPS: u64 = 10_000;

/// The directory holding the example modules.
pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");

/// The engine shared by every test of this binary (creating one is costly).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("the engine starts"))
}

/// The bytes of `examples/<name>.wasm` (`name` may be `hostile/spin`).
pub fn example_bytes(name: &str) -> Vec<u8> {
    let path = format!("{EXAMPLES}{name}.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The compiled program of `examples/<name>.wasm`, loaded once per binary.
pub fn program(name: &str) -> Program {
    static PROGRAMS: OnceLock<Mutex<HashMap<String, Program>>> = OnceLock::new();
    let cache = PROGRAMS.get_or_init(Default::default);
    if let Some(p) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
    {
        return p.clone();
    }
    // Compile outside the lock so that tests loading different examples do
    // not wait for each other; a rare duplicate compilation is harmless.
    let p = engine()
        .load(&example_bytes(name))
        .unwrap_or_else(|e| panic!("examples/{name}.wasm does not load: {e}"));
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_string())
        .or_insert(p)
        .clone()
}

/// A task configuration with `argv = [name.wasm, args...]` and `seed`.
pub fn config(name: &str, args: &[&str], seed: u64) -> TaskConfig {
    let base = name.rsplit('/').next().unwrap_or(name);
    let mut c = TaskConfig::new(&format!("{base}.wasm"));
    c.host.args.extend(args.iter().map(|a| a.to_string()));
    c.host.seed = seed;
    c
}

/// Adds a preopen of `dir` as `guest`.
pub fn preopen(config: &mut TaskConfig, dir: &Path, guest: &str) {
    config.host.preopens.push(Preopen {
        host: dir.to_path_buf(),
        guest: guest.to_string(),
    });
}

/// An [`OutputSink`] that keeps everything written, shared between clones.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Capture {
    pub fn new() -> Capture {
        Capture::default()
    }

    /// A boxed clone to hand to a task.
    pub fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(self.clone())
    }

    pub fn stdout(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stdout
            .clone()
    }

    pub fn stderr(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stderr
            .clone()
    }

    pub fn stdout_string(&self) -> String {
        String::from_utf8(self.stdout()).expect("stdout is UTF-8")
    }

    pub fn stderr_string(&self) -> String {
        String::from_utf8(self.stderr()).expect("stderr is UTF-8")
    }

    fn lens(&self) -> (usize, usize) {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (g.stdout.len(), g.stderr.len())
    }
}

impl OutputSink for Capture {
    fn write(&mut self, stream: OutStream, bytes: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match stream {
            OutStream::Stdout => g.stdout.extend_from_slice(bytes),
            OutStream::Stderr => g.stderr.extend_from_slice(bytes),
        }
    }
}

/// What a run from some point to the end of a task produced.
#[derive(Debug)]
pub struct Trace {
    /// The point the run started from.
    pub start: u64,
    /// `digests[i]` is the digest at point `start + i`, up to the last point.
    pub digests: Vec<Digest>,
    /// Bytes of stdout written (by this run) when point `start + i` was reached.
    pub stdout_at: Vec<usize>,
    /// Same for stderr.
    pub stderr_at: Vec<usize>,
    /// All stdout this run wrote.
    pub stdout: Vec<u8>,
    /// All stderr this run wrote.
    pub stderr: Vec<u8>,
    /// Exit status.
    pub status: i32,
}

impl Trace {
    /// The last point (where the task finished).
    pub fn last(&self) -> u64 {
        self.start + self.digests.len() as u64 - 1
    }

    /// The digest at point `k`.
    pub fn digest(&self, k: u64) -> Digest {
        self.digests[(k - self.start) as usize]
    }
}

/// Steps `task` to its end, recording the digest and output lengths at each
/// point, starting with the point it is at now. `out` must be the capture
/// the task writes to (and should be empty when called).
pub fn run_to_end(task: &mut Task, out: &Capture) -> Trace {
    let start = task.point();
    let mut digests = vec![task.digest().expect("digest at the start")];
    let (o, e) = out.lens();
    let (mut stdout_at, mut stderr_at) = (vec![o], vec![e]);
    let status = loop {
        if let Some(status) = task.finished() {
            break status;
        }
        assert!(
            task.point() - start < MAX_STEPS,
            "task did not finish within {MAX_STEPS} steps"
        );
        let before = task.point();
        let outcome = task
            .step()
            .unwrap_or_else(|e| panic!("step after point {before}: {e}"));
        assert_eq!(task.point(), before + 1, "a step advances the point by one");
        digests.push(task.digest().expect("digest"));
        let (o, e) = out.lens();
        stdout_at.push(o);
        stderr_at.push(e);
        match outcome {
            StepOutcome::Continue => assert_eq!(task.finished(), None),
            StepOutcome::Finished(s) => assert_eq!(task.finished(), Some(s)),
        }
    };
    Trace {
        start,
        digests,
        stdout_at,
        stderr_at,
        stdout: out.stdout(),
        stderr: out.stderr(),
        status,
    }
}

/// Creates a task of example `name` with `config` and runs it to the end.
pub fn reference(name: &str, config: TaskConfig) -> Trace {
    let out = Capture::new();
    let mut task = Task::create(engine(), &program(name), config, out.sink())
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    run_to_end(&mut task, &out)
}

/// Decodes a full checkpoint.
pub fn decode_full(bytes: &[u8]) -> State {
    match checkpoint::decode(bytes, &Default::default()).expect("checkpoint decodes") {
        Decoded::Full(s) => s,
        Decoded::Delta(_) => panic!("expected a full checkpoint, got a delta"),
    }
}

/// Decodes a delta checkpoint.
pub fn decode_delta(bytes: &[u8]) -> checkpoint::Delta {
    match checkpoint::decode(bytes, &Default::default()).expect("checkpoint decodes") {
        Decoded::Delta(d) => d,
        Decoded::Full(_) => panic!("expected a delta, got a full checkpoint"),
    }
}

/// The virtual clock mode the tests use (its start time only matters at
/// creation).
pub fn virtual_clock() -> ClockMode {
    ClockMode::Virtual {
        start_realtime_ns: 0,
    }
}

/// Restores `state` into a fresh instance of `program` writing to `out`.
pub fn restore(program: &Program, state: &State, out: &Capture) -> Task {
    Task::restore(
        engine(),
        program,
        state,
        virtual_clock(),
        Limits::default(),
        out.sink(),
    )
    .unwrap_or_else(|e| panic!("restore at point {}: {e}", state.point))
}

/// Every regular file under `dir`, by path relative to it.
pub fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes back what `task` put in its preopens to fresh temporary
/// directories (one per preopen, same order) and returns their contents.
pub fn written_files(task: &Task, preopens: usize) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
    let dirs: Vec<tempfile::TempDir> = (0..preopens)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let targets: Vec<Preopen> = dirs
        .iter()
        .map(|d| Preopen {
            host: d.path().to_path_buf(),
            guest: String::new(),
        })
        .collect();
    task.host()
        .write_back_to(&targets)
        .unwrap_or_else(|e| panic!("write back: {e}"));
    dirs.iter().map(|d| read_tree(d.path())).collect()
}

/// `text` as a string, for messages.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
