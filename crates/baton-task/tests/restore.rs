//! Restore equivalence: stopping a task at any point, encoding its state,
//! decoding it and continuing in a fresh instance gives the same digest at
//! every later point, the same output bytes, the same exit status and the
//! same written files as the uninterrupted run. Also through deltas (full
//! checkpoint at a, delta at b > a), through chains of rebased deltas, from
//! a restored task's own deltas, and in a fresh process.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use baton_task::checkpoint::{self, Kind};
use baton_task::state::{GlobalValue, WASM_PAGE_SIZE};
use baton_task::wasi::{HostError, Preopen};
use baton_task::{Limits, State, Task, TaskConfig, TaskError};
use support::{
    config, decode_delta, decode_full, engine, lossy, preopen, program, restore, run_to_end,
    virtual_clock, written_files, Capture, Trace,
};

/// One example run: which module, how, and what it left behind.
struct Case {
    name: &'static str,
    config: TaskConfig,
    preopens: usize,
    /// Keeps the preopened directories alive.
    _dirs: Vec<tempfile::TempDir>,
}

impl Case {
    fn new(name: &'static str, args: &[&str], seed: u64) -> Case {
        Case {
            name,
            config: config(name, args, seed),
            preopens: 0,
            _dirs: Vec::new(),
        }
    }

    /// Preopens a fresh, empty directory as `guest`.
    fn with_dir(mut self, guest: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        preopen(&mut self.config, dir.path(), guest);
        self._dirs.push(dir);
        self.preopens += 1;
        self
    }

    /// Restores `state` into a fresh instance under this case's limits.
    fn restore(&self, state: &State, out: &Capture) -> Task {
        Task::restore(
            engine(),
            &program(self.name),
            state,
            virtual_clock(),
            self.config.limits,
            out.sink(),
        )
        .unwrap_or_else(|e| panic!("restore {} at point {}: {e}", self.name, state.point))
    }

    fn create(&self, out: &Capture) -> Task {
        Task::create(
            engine(),
            &program(self.name),
            self.config.clone(),
            out.sink(),
        )
        .unwrap_or_else(|e| panic!("create {}: {e}", self.name))
    }
}

/// The uninterrupted run and the files it wrote.
struct Reference {
    trace: Trace,
    files: Vec<BTreeMap<PathBuf, Vec<u8>>>,
}

fn reference(case: &Case) -> Reference {
    let out = Capture::new();
    let mut task = case.create(&out);
    assert_eq!(task.point(), 0);
    let trace = run_to_end(&mut task, &out);
    let files = written_files(&task, case.preopens);
    Reference { trace, files }
}

/// Checks that `task`, restored at point `k`, continues exactly like the
/// reference: digests at every later point, output step by step, status,
/// files.
fn continue_and_compare(case: &Case, r: &Reference, mut task: Task, out: &Capture, how: &str) {
    let k = task.point();
    let reference = &r.trace;
    let ctx = format!("{} restored at point {k} ({how})", case.name);
    assert_eq!(
        task.digest().unwrap(),
        reference.digest(k),
        "{ctx}: digest right after restore"
    );
    assert_eq!(
        task.host().stdout_len(),
        reference.stdout_at[k as usize] as u64,
        "{ctx}: stdout count in the state"
    );
    assert_eq!(
        task.host().stderr_len(),
        reference.stderr_at[k as usize] as u64,
        "{ctx}: stderr count in the state"
    );
    let t = run_to_end(&mut task, out);
    assert_eq!(t.start, k);
    assert_eq!(
        t.last(),
        reference.last(),
        "{ctx}: finishes at the same point"
    );
    for (i, d) in t.digests.iter().enumerate() {
        let p = k + i as u64;
        assert_eq!(*d, reference.digest(p), "{ctx}: digest at point {p}");
    }
    // Output: what the uninterrupted run wrote before k, then what the
    // restored run wrote, is everything; and it came step by step alike.
    let (o, e) = (
        reference.stdout_at[k as usize],
        reference.stderr_at[k as usize],
    );
    let mut stdout = reference.stdout[..o].to_vec();
    stdout.extend_from_slice(&t.stdout);
    assert!(
        stdout == reference.stdout,
        "{ctx}: stdout differs\n--- uninterrupted ---\n{}\n--- before {k} + restored ---\n{}",
        lossy(&reference.stdout),
        lossy(&stdout)
    );
    let mut stderr = reference.stderr[..e].to_vec();
    stderr.extend_from_slice(&t.stderr);
    assert!(stderr == reference.stderr, "{ctx}: stderr differs");
    for (i, (so, se)) in t.stdout_at.iter().zip(&t.stderr_at).enumerate() {
        let p = k as usize + i;
        assert_eq!(
            *so,
            reference.stdout_at[p] - o,
            "{ctx}: stdout by point {p}"
        );
        assert_eq!(
            *se,
            reference.stderr_at[p] - e,
            "{ctx}: stderr by point {p}"
        );
    }
    assert_eq!(t.status, reference.status, "{ctx}: exit status");
    assert_eq!(task.finished(), Some(reference.status), "{ctx}: finished");
    let files = written_files(&task, case.preopens);
    assert!(files == r.files, "{ctx}: written files differ");
}

/// For every point k: a full checkpoint at k (taken from a second,
/// checkpointing run, which must itself match the first), encoded, decoded
/// and restored into a fresh instance, continues like the uninterrupted run.
fn restore_at_every_point(case: &Case) -> Reference {
    let r = reference(case);
    let last = r.trace.last();
    let out = Capture::new();
    let mut task = case.create(&out);
    for k in 0..=last {
        assert_eq!(task.point(), k);
        let cp = task.checkpoint().unwrap();
        assert_eq!(cp.point, k);
        assert_eq!(cp.kind, Kind::Full);
        assert_eq!(
            cp.digest,
            r.trace.digest(k),
            "{}: same seed, same digest at {k}",
            case.name
        );
        let state = decode_full(&cp.bytes);
        assert_eq!(state.point, k);
        assert_eq!(state.module, program(case.name).digest());
        assert_eq!(state.digest().unwrap(), cp.digest);
        // The decoded state is the state the task holds.
        assert!(
            state == task.state().unwrap(),
            "{}: decoded state at {k}",
            case.name
        );
        let out2 = Capture::new();
        let mut restored = case.restore(&state, &out2);
        assert_eq!(restored.point(), k);
        assert_eq!(restored.memory_size(), state.memory().len());
        // Both sides encode a point to the same bytes.
        assert!(
            restored.checkpoint().unwrap().bytes == cp.bytes,
            "{}: the restored task's checkpoint at {k} differs",
            case.name
        );
        continue_and_compare(case, &r, restored, &out2, "full checkpoint");
        if k < last {
            task.step().unwrap();
        }
    }
    assert_eq!(
        out.stdout(),
        r.trace.stdout,
        "{}: checkpointing does not change output",
        case.name
    );
    r
}

/// Full checkpoint at `a`, then a delta at every b > a against it: decoded,
/// applied to the decoded base, it is the state at b, and restoring it
/// continues like the uninterrupted run.
fn restore_from_deltas(case: &Case, r: &Reference, a: u64) {
    let last = r.trace.last();
    let out = Capture::new();
    let mut task = case.create(&out);
    for _ in 0..a {
        task.step().unwrap();
    }
    let full = task.checkpoint().unwrap();
    assert_eq!(task.base(), Some(full.digest));
    let base = decode_full(&full.bytes);
    for b in a + 1..=last {
        task.step().unwrap();
        let delta = task.delta().unwrap();
        assert_eq!(delta.point, b);
        assert_eq!(delta.digest, r.trace.digest(b));
        assert_eq!(delta.kind, Kind::Delta { base: full.digest });
        let d = decode_delta(&delta.bytes);
        assert_eq!(d.base(), r.trace.digest(a));
        assert_eq!(d.point(), b);
        assert_eq!(d.digest(), r.trace.digest(b));
        let mut state = base.clone();
        d.apply(&mut state)
            .unwrap_or_else(|e| panic!("{}: apply delta {a}->{b}: {e}", case.name));
        assert_eq!(state.point, b);
        assert_eq!(state.digest().unwrap(), r.trace.digest(b));
        assert!(
            state == task.state().unwrap(),
            "{}: base {a} + delta {b}",
            case.name
        );
        let out2 = Capture::new();
        let restored = case.restore(&state, &out2);
        continue_and_compare(case, r, restored, &out2, &format!("full at {a} + delta"));
    }
}

fn check(case: Case) {
    let r = restore_at_every_point(&case);
    let last = r.trace.last();
    assert!(last >= 1, "{}: at least one step", case.name);
    restore_from_deltas(&case, &r, 0);
    if last >= 3 {
        restore_from_deltas(&case, &r, last / 2);
    }
}

#[test]
fn pi() {
    let case = Case::new("pi", &["12", "2000"], 7);
    check(case);
}

#[test]
fn nbody() {
    check(Case::new("nbody", &["10", "300"], 0));
}

#[test]
fn countdown_with_exit_status() {
    let case = Case::new("countdown", &["5", "7"], 0);
    let r = reference(&case);
    assert_eq!(r.trace.status, 7);
    assert_eq!(r.trace.last(), 5);
    assert_eq!(
        lossy(&r.trace.stdout),
        "countdown: 5\ncountdown: 4\ncountdown: 3\ncountdown: 2\ncountdown: 1\n\
         countdown: liftoff, exit status 7\n"
    );
    check(case);
}

#[test]
fn bigstate() {
    let case = Case::new("bigstate", &["8", "12", "64"], 3);
    let r = reference(&case);
    assert!(lossy(&r.trace.stdout).ends_with("bigstate: done\n"));
    check(case);
}

/// Memory grows from step to step: deltas carry the new pages.
#[test]
fn membomb_memory_grows_between_points() {
    let mut case = Case::new("hostile/membomb", &["4"], 0);
    case.config.limits.max_memory = 24 * 1024 * 1024;
    let r = reference(&case);
    assert_eq!(r.trace.status, 0);
    assert!(r.trace.last() >= 4, "several steps: {}", r.trace.last());
    assert!(lossy(&r.trace.stdout).contains("membomb: step 2: 8 MiB so far\n"));
    check(case);
}

#[test]
fn render_writes_identical_files() {
    let case = Case::new("render", &["40", "30", "6"], 0).with_dir("/out");
    let r = reference(&case);
    assert_eq!(r.trace.status, 0, "stderr: {}", lossy(&r.trace.stderr));
    let ppm = r.files[0]
        .get(&PathBuf::from("render.ppm"))
        .expect("render.ppm written back");
    let header = b"P6\n40 30\n255\n";
    assert!(ppm.starts_with(header), "a P6 header");
    assert_eq!(ppm.len(), header.len() + 40 * 30 * 3);
    check(case);
}

/// A restored state does not know where its preopens live on this machine:
/// `write_back` says so until `set_host_dirs`; then it writes the same file.
#[test]
fn render_write_back_after_restore_needs_host_dirs() {
    let case = Case::new("render", &["16", "8", "4"], 0).with_dir("/out");
    let r = reference(&case);
    let out = Capture::new();
    let mut task = case.create(&out);
    task.step().unwrap();
    let state = decode_full(&task.checkpoint().unwrap().bytes);
    let out2 = Capture::new();
    let mut restored = restore(&program("render"), &state, &out2);
    run_to_end(&mut restored, &out2);
    let mut host = restored.host().clone();
    assert!(matches!(
        host.write_back(),
        Err(HostError::NoHostDir { index: 0 })
    ));
    let dir = tempfile::tempdir().unwrap();
    host.set_host_dirs(&[Preopen {
        host: dir.path().to_path_buf(),
        guest: "/out".to_string(),
    }]);
    let report = host.write_back().unwrap();
    assert_eq!(report.files_written, vec![dir.path().join("render.ppm")]);
    assert_eq!(support::read_tree(dir.path()), r.files[0]);
    // The original task writes into the directory it was created with.
    run_to_end(&mut task, &out);
    task.host().write_back().unwrap();
    assert_eq!(support::read_tree(case._dirs[0].path()), r.files[0]);
}

#[test]
fn hello_command() {
    let mut case = Case::new("hello", &["a", "b c"], 11);
    case.config.host.env = vec![("NAME".to_string(), "you".to_string())];
    case.config.host.stdin = b"hi\n".to_vec();
    let r = reference(&case);
    assert_eq!(r.trace.last(), 1, "a command is one step");
    assert!(lossy(&r.trace.stdout).contains("stdin: 1 lines, 3 bytes, fnv1a64 33734a193006ba70"));
    check(case);
}

#[test]
fn hello_command_exit_status() {
    let case = Case::new("hello", &["exit", "3"], 0);
    let r = reference(&case);
    assert_eq!(r.trace.status, 3);
    check(case);
}

/// Deltas against a base that moves: full at 0, delta at 2 applied, rebase,
/// delta at 4 against 2, and so on; and a restored task's own deltas are
/// relative to the state it was restored from.
#[test]
fn chained_and_restored_deltas() {
    let case = Case::new("pi", &["9", "1000"], 5);
    let r = reference(&case);
    let out = Capture::new();
    let mut task = case.create(&out);
    let mut state = decode_full(&task.checkpoint().unwrap().bytes);
    while task.finished().is_none() {
        for _ in 0..2 {
            if task.finished().is_none() {
                task.step().unwrap();
            }
        }
        let delta = task.delta().unwrap();
        assert_eq!(
            delta.kind,
            Kind::Delta {
                base: state.digest().unwrap()
            }
        );
        decode_delta(&delta.bytes).apply(&mut state).unwrap();
        assert_eq!(state.digest().unwrap(), r.trace.digest(task.point()));
        assert_eq!(task.rebase().unwrap(), delta.digest);
        assert_eq!(task.base(), Some(delta.digest));
    }

    // A restored task can send deltas against the state it came from.
    let out = Capture::new();
    let mut task = case.create(&out);
    for _ in 0..3 {
        task.step().unwrap();
    }
    let at3 = decode_full(&task.checkpoint().unwrap().bytes);
    let out2 = Capture::new();
    let mut restored = restore(&program("pi"), &at3, &out2);
    assert_eq!(restored.base(), Some(r.trace.digest(3)));
    restored.step().unwrap();
    let delta = restored.delta().unwrap();
    let mut state = at3.clone();
    decode_delta(&delta.bytes).apply(&mut state).unwrap();
    assert_eq!(state.point, 4);
    assert_eq!(state.digest().unwrap(), r.trace.digest(4));
    let out3 = Capture::new();
    let again = restore(&program("pi"), &state, &out3);
    continue_and_compare(&case, &r, again, &out3, "restored delta");
}

/// A delta with nothing changed since its base (asked twice at one point,
/// or right after the full checkpoint) is still valid.
#[test]
fn empty_delta() {
    let out = Capture::new();
    let mut task = Task::create(
        engine(),
        &program("countdown"),
        config("countdown", &["3"], 0),
        out.sink(),
    )
    .unwrap();
    task.step().unwrap();
    let full = task.checkpoint().unwrap();
    let delta = task.delta().unwrap();
    assert_eq!(delta.digest, full.digest);
    let d = decode_delta(&delta.bytes);
    assert_eq!(d.page_count(), 0);
    let mut state = decode_full(&full.bytes);
    let before = state.clone();
    d.apply(&mut state).unwrap();
    assert_eq!(state, before);
    assert_eq!(
        task.delta().unwrap().bytes,
        delta.bytes,
        "deterministic encoding"
    );
}

#[test]
fn delta_without_base_is_an_error() {
    let out = Capture::new();
    let mut task = Task::create(
        engine(),
        &program("countdown"),
        config("countdown", &["3"], 0),
        out.sink(),
    )
    .unwrap();
    assert!(matches!(task.delta(), Err(TaskError::NoBase)));
    assert_eq!(task.base(), None);
}

/// States that do not belong to the program, or do not fit it or the limits,
/// are refused with the matching error.
#[test]
fn restore_rejects_states_that_do_not_fit() {
    let out = Capture::new();
    let mut task = Task::create(
        engine(),
        &program("countdown"),
        config("countdown", &["3"], 0),
        out.sink(),
    )
    .unwrap();
    task.step().unwrap();
    let state = task.state().unwrap();
    let try_restore = |program: &baton_task::Program, state: &State, limits: Limits| {
        Task::restore(
            engine(),
            program,
            state,
            virtual_clock(),
            limits,
            Capture::new().sink(),
        )
        .err()
    };

    match try_restore(&program("nbody"), &state, Limits::default()) {
        Some(TaskError::ModuleMismatch { expected, found }) => {
            assert_eq!(expected, program("nbody").digest());
            assert_eq!(found, program("countdown").digest());
        }
        other => panic!("expected ModuleMismatch, got {other:?}"),
    }

    let small = Limits {
        max_memory: WASM_PAGE_SIZE as u64,
        max_step_time: None,
        point_every: baton_task::DEFAULT_POINT_EVERY,
    };
    match try_restore(&program("countdown"), &state, small) {
        Some(TaskError::MemoryLimit { needed, limit }) => {
            assert_eq!(needed, state.memory().len() as u64);
            assert_eq!(limit, WASM_PAGE_SIZE as u64);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }

    let mut no_globals = state.clone();
    no_globals.globals.clear();
    let e = try_restore(&program("countdown"), &no_globals, Limits::default());
    assert!(matches!(e, Some(TaskError::BadState(_))), "{e:?}");

    let mut wrong_kind = state.clone();
    wrong_kind.globals = vec![GlobalValue {
        kind: baton_task::module::GlobalKind::I64,
        bits: 0,
    }];
    let e = try_restore(&program("countdown"), &wrong_kind, Limits::default());
    assert!(matches!(e, Some(TaskError::BadState(_))), "{e:?}");

    let tiny = State::new(
        state.module,
        state.point,
        None,
        Vec::new(),
        state.globals.clone(),
        state.host.clone(),
    )
    .unwrap();
    let e = try_restore(&program("countdown"), &tiny, Limits::default());
    assert!(matches!(e, Some(TaskError::BadState(_))), "{e:?}");

    // And a good one still restores.
    assert!(try_restore(&program("countdown"), &state, Limits::default()).is_none());
}

/// A restored finished task stays finished.
#[test]
fn restore_of_a_finished_task() {
    let out = Capture::new();
    let mut task = Task::create(
        engine(),
        &program("countdown"),
        config("countdown", &["1", "4"], 0),
        out.sink(),
    )
    .unwrap();
    assert_eq!(task.step().unwrap(), baton_task::StepOutcome::Finished(4));
    let state = decode_full(&task.checkpoint().unwrap().bytes);
    assert_eq!(state.finished, Some(4));
    let out2 = Capture::new();
    let mut restored = restore(&program("countdown"), &state, &out2);
    assert_eq!(restored.finished(), Some(4));
    assert!(matches!(
        restored.step(),
        Err(TaskError::AlreadyFinished(4))
    ));
    assert!(out2.stdout().is_empty());
}

const CHILD_CHECKPOINT: &str = "BATON_TEST_CHILD_CHECKPOINT";
const CHILD_OUT: &str = "BATON_TEST_CHILD_OUT";

/// The child half of `restore_in_a_fresh_process`: does nothing unless the
/// parent set the environment. It restores the checkpoint in this process
/// (its own engine, its own compilation) and writes the digests of every
/// later point, then the output.
#[test]
fn fresh_process_child() {
    let (Some(cp), Some(out_path)) = (
        std::env::var_os(CHILD_CHECKPOINT),
        std::env::var_os(CHILD_OUT),
    ) else {
        return;
    };
    let state = decode_full(&std::fs::read(cp).unwrap());
    let out = Capture::new();
    let mut task = restore(&program("pi"), &state, &out);
    let t = run_to_end(&mut task, &out);
    let mut report = String::new();
    for d in &t.digests {
        report.push_str(&format!("{d}\n"));
    }
    report.push_str(&format!("status {}\n--\n", t.status));
    report.push_str(&lossy(&t.stdout));
    std::fs::write(out_path, report).unwrap();
}

#[test]
fn restore_in_a_fresh_process() {
    let case = Case::new("pi", &["10", "1000"], 9);
    let r = reference(&case);
    let out = Capture::new();
    let mut task = case.create(&out);
    for _ in 0..4 {
        task.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cp_path = dir.path().join("pi.ckpt");
    let out_path = dir.path().join("report");
    std::fs::write(&cp_path, task.checkpoint().unwrap().bytes).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fresh_process_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_CHECKPOINT, &cp_path)
        .env(CHILD_OUT, &out_path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "child test failed: {status}");
    let report = std::fs::read_to_string(&out_path).expect("the child wrote its report");
    let mut expected = String::new();
    for k in 4..=r.trace.last() {
        expected.push_str(&format!("{}\n", r.trace.digest(k)));
    }
    expected.push_str(&format!("status {}\n--\n", r.trace.status));
    expected.push_str(&lossy(&r.trace.stdout[r.trace.stdout_at[4]..]));
    assert_eq!(report, expected);
}

/// Checkpoints are deterministic bytes: the same state encodes the same.
#[test]
fn checkpoint_bytes_are_deterministic() {
    let case = Case::new("nbody", &["4", "100"], 0);
    let run = || {
        let out = Capture::new();
        let mut task = case.create(&out);
        let mut all = Vec::new();
        while task.finished().is_none() {
            all.push(task.checkpoint().unwrap().bytes);
            task.step().unwrap();
        }
        all.push(task.checkpoint().unwrap().bytes);
        all
    };
    let a = run();
    assert_eq!(a, run());
    let state = decode_full(&a[2]);
    assert_eq!(checkpoint::encode_full(&state).unwrap().bytes, a[2]);
}
