//! End-to-end tests of ordinary WASI commands (`_start` programs that baton
//! rewrites at load time so that they reach points of their own accord):
//! the real interpreters CPython (`python.wasm`) and QuickJS
//! (`quickjs.wasm`), fetched by `scripts/fetch-programs` (see
//! scripts/PROGRAMS.md), and the C commands in `examples/` (`tally`,
//! `recurse`, `frames`), which are committed and always run.
//!
//! Each test starts the real `baton` binary (and, where a remote side is
//! needed, a real `baton agent` on loopback, through baton-net's
//! fault-injecting relay where the link must fail) and checks what a user
//! would see: stdout, stderr, exit status, written files and events. Every
//! run must give exactly what an uninterrupted local run of the same
//! command gives, whatever happened in between (a `kill -9`, a migration,
//! a link cut for good). No timing is asserted; every wait is bounded.
//!
//! Without the interpreters (no network, no pip) the interpreter tests say
//! loudly on stderr that they were skipped, unless `CI` is set: then they
//! fail, so that CI never skips them silently.

mod support;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::remote::{pretty, runtime, whole_events, ClientHome, TestAgent};
use support::{baton, example, only_event, read_events, s, signal, tempdir, Output};

/// Longest any one baton process may run here. Generous: the first run of
/// python.wasm on a machine compiles 26 MB of wasm (tens of seconds on a
/// loaded machine, and the agent compiles it once more for itself).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Bound on waiting for one event or one piece of output of a run.
const WAIT_LIMIT: Duration = Duration::from_secs(240);

/// The Python script's arguments: 10 rounds (about 2.5 s of CPython work,
/// about 17 points at the default `--point-every`), exit status 5.
const PY_ARGS: &[&str] = &["/app/rounds.py", "10", "5"];
const PY_STATUS: i32 = 5;

/// The JS script's arguments (`qjs --std FILE ARGS`): 10 rounds (about 2 s),
/// exit status 4.
const JS_ARGS: &[&str] = &["--std", "/app/rounds.js", "10", "4"];
const JS_STATUS: i32 = 4;

// ---------------------------------------------------------------------------
// the interpreters
// ---------------------------------------------------------------------------

/// The repository's root directory.
fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The directory holding python.wasm and quickjs.wasm, fetched (once, into
/// a cache; idempotent) by `python3 scripts/fetch-programs`, which prints it
/// as its last stdout line. `None` (with a loud message on stderr) when they
/// cannot be had; under `CI` that is a failure instead.
fn programs_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let got = DIR.get_or_init(|| {
        let script = repo_root().join("scripts/fetch-programs");
        let out = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run python3 {}: {e}", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!(
                "python3 {} failed ({}):\n{stderr}",
                script.display(),
                out.status
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
        for name in ["python.wasm", "quickjs.wasm"] {
            if !dir.join(name).is_file() {
                return Err(format!(
                    "fetch-programs printed {:?}, which has no {name}; stderr:\n{stderr}",
                    dir.display()
                ));
            }
        }
        Ok(dir)
    });
    match got {
        Ok(dir) => Some(dir.clone()),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the interpreter test programs are needed under CI: {why}")
        }
        Err(why) => {
            eprintln!(
                "\n!!!!! SKIPPED: the real-program tests (python.wasm, quickjs.wasm) did not run: {why}\n\
                 !!!!! (run scripts/fetch-programs by hand to see why; under CI this fails)\n"
            );
            None
        }
    }
}

/// A fresh directory holding the test scripts (`rounds.py`, `rounds.js`),
/// to be given to a task as `/app` (a copy, so that nothing a task might
/// write back lands in the repository).
fn app_dir(parent: &Path) -> PathBuf {
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs"));
    let dir = parent.join("app");
    std::fs::create_dir_all(&dir).expect("mkdir app");
    for name in ["rounds.py", "rounds.js"] {
        std::fs::copy(src.join(name), dir.join(name))
            .unwrap_or_else(|e| panic!("cannot copy {name}: {e}"));
    }
    dir
}

/// `HOST::GUEST` for `--dir`.
fn dir_opt(host: &Path, guest: &str) -> String {
    format!("{}::{guest}", s(host))
}

/// An uninterrupted local run: its output (stdout, stderr, status).
struct Reference {
    stdout: Vec<u8>,
    stderr: String,
    status: i32,
}

/// The uninterrupted local run of `module ARGS` with the scripts at `/app`.
fn reference_run(module: &Path, args: &[&str]) -> Reference {
    let tmp = tempdir();
    let app = app_dir(tmp.path());
    let mut cmd = baton(["run", "--dir", &dir_opt(&app, "/app")]);
    cmd.arg(module).arg("--").args(args);
    let name = module
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let o = run_bounded(cmd, &format!("{name} reference run"));
    let status = o.code();
    assert!(
        !o.stderr.contains("baton: "),
        "baton said something on stderr in the reference run of {}:\n{}",
        module.display(),
        o.stderr
    );
    Reference {
        stdout: o.stdout,
        stderr: o.stderr,
        status,
    }
}

/// The reference run of `rounds.py` under python.wasm, made once per test
/// process (it also fills the compiled-code cache for the runs after it).
/// It must print what the host's own CPython prints for the same script.
fn python_reference(programs: &Path) -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let r = reference_run(&programs.join("python.wasm"), PY_ARGS);
        assert_eq!(r.status, PY_STATUS, "stderr:\n{}", r.stderr);
        assert_rounds(&r.stdout, "rounds.py", 10);
        // The same script under the host's CPython (python3 is there: it
        // ran fetch-programs).
        let tmp = tempdir();
        let app = app_dir(tmp.path());
        let native = Command::new("python3")
            .arg(app.join("rounds.py"))
            .args(&PY_ARGS[1..])
            .stdin(Stdio::null())
            .output()
            .expect("python3");
        assert_eq!(native.status.code(), Some(PY_STATUS));
        assert!(
            native.stdout == r.stdout,
            "python.wasm under baton and the host's python3 print different things:\n--- baton:\n{}\n--- python3:\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&native.stdout)
        );
        r
    })
}

/// The reference run of `rounds.js` under quickjs.wasm, made once.
fn js_reference(programs: &Path) -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let r = reference_run(&programs.join("quickjs.wasm"), JS_ARGS);
        assert_eq!(r.status, JS_STATUS, "stderr:\n{}", r.stderr);
        assert_rounds(&r.stdout, "rounds.js", 10);
        r
    })
}

/// Checks the shape of a rounds script's output: a header, `round r/n`
/// lines for r = 1..=n, and `done`.
#[track_caller]
fn assert_rounds(stdout: &[u8], script: &str, n: usize) {
    let text = String::from_utf8_lossy(stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n + 2, "{script} output:\n{text}");
    assert!(
        lines[0].starts_with(&format!("{script}: {n} rounds")),
        "{text}"
    );
    for (r, line) in lines[1..=n].iter().enumerate() {
        assert!(
            line.starts_with(&format!("round {}/{n}: ", r + 1)),
            "{text}"
        );
    }
    assert!(
        lines[n + 1].starts_with(&format!("{script}: done")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// processes: bounded, output in named files that can be read while they run
// ---------------------------------------------------------------------------

/// A running `baton` whose stdout and stderr go to files in a directory of
/// the test (readable while it runs; kept when it is killed).
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    what: String,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `dir/<tag>.out`, `.err`.
    fn spawn(mut cmd: Command, dir: &Path, tag: &str) -> Proc {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        cmd.stdout(Stdio::from(File::create(&out).expect("create stdout file")))
            .stderr(Stdio::from(File::create(&err).expect("create stderr file")));
        let what = format!("{cmd:?}");
        let child = cmd.spawn().expect("cannot start baton");
        Proc {
            child,
            out,
            err,
            what,
        }
    }

    fn stdout_now(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.stdout_now(),
            stderr: self.stderr_now(),
        }
    }

    /// Kills the process and fails the test with `why` and what it printed.
    fn fail(&mut self, why: String) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{why}\n--- command: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            String::from_utf8_lossy(&self.stdout_now()),
            self.stderr_now()
        );
    }

    /// Fails the test if the process has ended.
    fn check_alive(&mut self, waiting_for: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.fail(format!("baton ended ({status:?}) before {waiting_for}"));
        }
    }

    /// Waits (bounded) until stdout holds at least `n` whole lines.
    fn wait_lines(&mut self, n: usize) {
        let start = Instant::now();
        loop {
            if self.stdout_now().iter().filter(|&&b| b == b'\n').count() >= n {
                return;
            }
            self.check_alive(&format!("{n} lines of output"));
            if start.elapsed() > WAIT_LIMIT {
                self.fail(format!("no {n} lines of output within {WAIT_LIMIT:?}"));
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) for an event in `events` satisfying `pred`.
    fn wait_event(&mut self, events: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(e) = whole_events(events).into_iter().find(|e| pred(e)) {
                return e;
            }
            self.check_alive(what);
            if start.elapsed() > WAIT_LIMIT {
                let text = std::fs::read_to_string(events).unwrap_or_default();
                self.fail(format!("no {what} within {WAIT_LIMIT:?}; events:\n{text}"));
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded by [`RUN_LIMIT`]) for the end.
    fn finish(mut self) -> Output {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return self.output(status);
            }
            if start.elapsed() > RUN_LIMIT {
                self.fail(format!("baton did not end within {RUN_LIMIT:?}"));
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    fn kill9(mut self) -> Output {
        signal(&self.child, libc::SIGKILL);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "baton ended ({status:?}) before the kill took"
                );
                return self.output(status);
            }
            if start.elapsed() > Duration::from_secs(30) {
                self.fail("a killed baton did not go away".to_string());
            }
            sleep(Duration::from_millis(5));
        }
    }
}

/// Runs `cmd` to the end (bounded) and returns its output.
fn run_bounded(cmd: Command, what: &str) -> Output {
    let tmp = tempdir();
    let p = Proc::spawn(cmd, tmp.path(), "run");
    let t = Instant::now();
    let o = p.finish();
    eprintln!("{what}: {:?}", t.elapsed());
    o
}

// ---------------------------------------------------------------------------
// checks
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str, stderr: &str) {
    assert!(
        got == want,
        "{what} differs from the uninterrupted local run\n--- want:\n{}\n--- got:\n{}\n--- baton's stderr:\n{stderr}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(got)
    );
}

/// The task's own stderr lines: everything but baton's (`baton: ...`).
fn task_stderr(stderr: &str) -> String {
    stderr
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("baton: "))
        .collect()
}

/// The stdout of a run killed with `kill -9` (`first`) and of its resume
/// (`resumed`) must add up to `want`, the uninterrupted run's stdout: the
/// killed run showed a prefix, the resume shows the rest, nothing is lost
/// and nothing shown twice. The one documented exception (README, "Resume
/// and output"): a kill while a step's output was being shown, before it was
/// noted as shown, shows that step's output again from its start; here a
/// step's output is at most `step_lines` lines, so the resume may start at
/// most that many whole lines before the end of `first`. That case is
/// reported loudly on stderr.
#[track_caller]
fn assert_resumed_output(first: &[u8], resumed: &[u8], want: &[u8], step_lines: usize) {
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        want.starts_with(first),
        "the killed run's stdout is not a prefix of the uninterrupted run's\n--- killed run:\n{}\n--- want:\n{}",
        show(first),
        show(want)
    );
    assert!(
        want.ends_with(resumed) && resumed.len() <= want.len(),
        "the resumed run's stdout is not the end of the uninterrupted run's\n--- killed run:\n{}\n--- resumed:\n{}\n--- want:\n{}",
        show(first),
        show(resumed),
        show(want)
    );
    let start = want.len() - resumed.len();
    if start == first.len() {
        return; // exact: first ++ resumed == want
    }
    assert!(
        start < first.len(),
        "output lost at the kill: the resume starts at byte {start}, the killed run showed {} bytes\n--- killed run:\n{}\n--- resumed:\n{}",
        first.len(),
        show(first),
        show(resumed)
    );
    // A repeat: it must be whole lines, at most one step's.
    let repeated = &first[start..];
    let lines = repeated.iter().filter(|&&b| b == b'\n').count();
    assert!(
        (start == 0 || first[start - 1] == b'\n')
            && repeated.ends_with(b"\n")
            && lines <= step_lines,
        "the resume repeats more than the documented last step's output ({step_lines} lines at most):\n--- repeated:\n{}\n--- killed run:\n{}\n--- resumed:\n{}",
        show(repeated),
        show(first),
        show(resumed)
    );
    eprintln!(
        "NOTE: the resume showed again the {lines} line(s) shown just before the kill (the documented race):\n{}",
        show(repeated)
    );
}

fn is(e: &Value, name: &str) -> bool {
    e["event"] == name
}

// ---------------------------------------------------------------------------
// 1. CPython: kill -9, then resume
// ---------------------------------------------------------------------------

#[test]
fn python_killed_mid_script_and_resumed_gives_the_same_output() {
    let Some(programs) = programs_dir() else {
        return;
    };
    let want = python_reference(&programs);
    let tmp = tempdir();
    let app = app_dir(tmp.path());
    let state = tmp.path().join("state");
    let mut cmd = baton([
        "run",
        "--state-dir",
        s(&state),
        "--name",
        "py",
        "--dir",
        &dir_opt(&app, "/app"),
    ]);
    cmd.arg(programs.join("python.wasm"))
        .arg("--")
        .args(PY_ARGS);
    let t = Instant::now();
    let mut p = Proc::spawn(cmd, tmp.path(), "first");
    // The header and three rounds: well into the script, far from its end.
    p.wait_lines(4);
    let first = p.kill9();
    eprintln!("python.wasm killed after {:?}", t.elapsed());
    assert!(
        first.stdout.len() < want.stdout.len(),
        "the script finished before the kill:\n{}",
        first.out()
    );

    let ev = tmp.path().join("resume.jsonl");
    let o = run_bounded(
        baton(["resume", "py", "--state-dir", s(&state), "--events", s(&ev)]),
        "python.wasm resume",
    );
    o.assert_code(want.status);
    let events = read_events(&ev);
    let started = only_event(&events, "started");
    let from = started["resumed_from"]
        .as_u64()
        .unwrap_or_else(|| panic!("no resumed_from: {started}"));
    assert!(
        from > 0,
        "resumed from point 0: no point of the killed run was journaled\n{}",
        pretty(&events)
    );
    assert!(
        o.stderr.contains(&format!("from point {from}")),
        "the resume does not say where it continues:\n{}",
        o.stderr
    );
    assert_eq!(only_event(&events, "finished")["exit_status"], PY_STATUS);
    // One line per round, each round longer than a step: a step's output
    // is at most one line.
    assert_resumed_output(&first.stdout, &o.stdout, &want.stdout, 1);
    assert_eq!(
        task_stderr(&o.stderr),
        want.stderr,
        "the task's stderr differs"
    );
}

// ---------------------------------------------------------------------------
// 2. QuickJS: migrated to an agent mid-script
// ---------------------------------------------------------------------------

#[test]
fn quickjs_migrated_mid_script_gives_the_same_output() {
    let Some(programs) = programs_dir() else {
        return;
    };
    let want = js_reference(&programs);
    let agent = TestAgent::start();
    let home = ClientHome::new();
    let app = app_dir(&home.path("work"));
    let ev = home.path("events.jsonl");
    let mut cmd = home.baton([
        "run",
        "--remote",
        &agent.addr_text(),
        "--agent-fingerprint",
        &agent.fingerprint,
        "--migrate",
        "after:500ms",
        "--events",
        s(&ev),
        "--dir",
        &dir_opt(&app, "/app"),
    ]);
    cmd.arg(programs.join("quickjs.wasm"))
        .arg("--")
        .args(JS_ARGS);
    let o = run_bounded(cmd, "quickjs.wasm --remote --migrate after:500ms");
    let events = read_events(&ev);
    eprintln!("events:\n{}", pretty(&events));
    o.assert_code(want.status);
    assert_same_bytes(&o.stdout, &want.stdout, "stdout", &o.stderr);
    assert_eq!(
        task_stderr(&o.stderr),
        want.stderr,
        "the task's stderr differs"
    );
    let m = only_event(&events, "migrated");
    assert_eq!(m["from"], "local", "{}", pretty(&events));
    assert_eq!(m["to"], "remote", "{}", pretty(&events));
    let at = m["point"].as_u64().expect("migrated.point");
    assert!(
        at > 0,
        "migrated at point 0, not mid-script:\n{}",
        pretty(&events)
    );
    let fin = only_event(&events, "finished");
    assert_eq!(fin["where"], "remote", "{}", pretty(&events));
    assert_eq!(fin["exit_status"], JS_STATUS, "{}", pretty(&events));
    assert!(
        fin["points"].as_u64().is_some_and(|n| n > at),
        "the agent reached no point of its own:\n{}",
        pretty(&events)
    );
    for p in events.iter().filter(|e| is(e, "point")) {
        let n = p["n"].as_u64().expect("point.n");
        let side = if n <= at { "local" } else { "remote" };
        assert_eq!(
            p["where"],
            side,
            "point {n} ran on the wrong side:\n{}",
            pretty(&events)
        );
    }
    agent.stop();
}

// ---------------------------------------------------------------------------
// 3. CPython extended onto an agent, the link cut for good, this side
//    responsible: it finishes here
// ---------------------------------------------------------------------------

#[test]
fn python_link_cut_for_good_finishes_here_with_the_same_output() {
    let Some(programs) = programs_dir() else {
        return;
    };
    let want = python_reference(&programs);
    let rt = runtime();
    let agent = TestAgent::start();
    let relay = agent.relay(&rt);
    let home = ClientHome::new();
    let app = app_dir(&home.path("work"));
    let ev = home.path("events.jsonl");
    let mut cmd = home.baton([
        "run",
        "--remote",
        &relay.client_side_addr().to_string(),
        "--agent-fingerprint",
        &agent.fingerprint,
        "--responsible",
        "local",
        "--mode",
        "sync",
        "--migrate",
        "after:300ms",
        "--disconnect-after",
        "500ms",
        "--events",
        s(&ev),
        "--dir",
        &dir_opt(&app, "/app"),
    ]);
    cmd.arg(programs.join("python.wasm"))
        .arg("--")
        .args(PY_ARGS);
    let t = Instant::now();
    let mut p = Proc::spawn(cmd, &home.path("work"), "run");
    let m = p.wait_event(&ev, "the migration to the agent", |e| {
        is(e, "migrated") && e["to"] == "remote"
    });
    let at = m["point"].as_u64().expect("migrated.point");
    // Three steps on the agent and some of its output here, then the cut.
    p.wait_event(&ev, "three points on the agent", |e| {
        is(e, "point") && e["where"] == "remote" && e["n"].as_u64().is_some_and(|n| n >= at + 3)
    });
    p.wait_lines(3);
    let before_cut = p.stdout_now();
    relay.cut();
    let o = p.finish();
    eprintln!("python.wasm with the link cut: {:?}", t.elapsed());
    let events = read_events(&ev);
    eprintln!("events:\n{}", pretty(&events));
    assert!(
        before_cut.len() < want.stdout.len(),
        "the script had finished before the cut"
    );
    o.assert_code(want.status);
    assert_same_bytes(&o.stdout, &want.stdout, "stdout", &o.stderr);
    assert_eq!(
        task_stderr(&o.stderr),
        want.stderr,
        "the task's stderr differs"
    );

    let fin = only_event(&events, "finished");
    assert_eq!(fin["where"], "local", "{}", pretty(&events));
    assert_eq!(fin["exit_status"], PY_STATUS, "{}", pretty(&events));
    let d = events
        .iter()
        .find(|e| is(e, "disconnected"))
        .unwrap_or_else(|| panic!("no `disconnected` event:\n{}", pretty(&events)));
    assert_eq!(d["holder"], "local", "{}", pretty(&events));
    let dp = d["point"].as_u64().expect("disconnected.point");
    assert!(
        dp > at,
        "disconnected at point {dp}, not after the agent's steps (migrated at {at}):\n{}",
        pretty(&events)
    );
    let r = only_event(&events, "resumed");
    assert_eq!(r["where"], "local", "{}", pretty(&events));
    let rp = r["point"].as_u64().expect("resumed.point");
    let lost = r["lost_steps"].as_u64().expect("resumed.lost_steps");
    assert!(
        rp > 0,
        "resumed here from point 0, not mid-script:\n{}",
        pretty(&events)
    );
    // Sync mode: at most the step in flight at the cut is done again.
    assert!(
        lost <= 1 && rp + lost == dp,
        "sync mode: the local side must resume from the newest point it holds:\n{}",
        pretty(&events)
    );
    assert!(
        fin["points"].as_u64().is_some_and(|n| n > rp),
        "no step ran here after the cut:\n{}",
        pretty(&events)
    );
    assert!(
        events
            .iter()
            .filter(|e| is(e, "point") && e["n"].as_u64().is_some_and(|n| n > rp))
            .all(|e| e["where"] == "local"),
        "a point after the cut ran on the agent:\n{}",
        pretty(&events)
    );
    agent.stop();
}

// ---------------------------------------------------------------------------
// 4. a C main writing a file into --dir, migrated to an agent mid-run
// ---------------------------------------------------------------------------

#[test]
fn tally_migrated_mid_run_writes_the_same_file_back() {
    let args = ["10", "4000000", "--out", "result.txt", "--exit", "3"];
    let tally = example("tally.wasm");
    let tmp = tempdir();

    // The reference: here, uninterrupted.
    let ref_out = tmp.path().join("ref-out");
    std::fs::create_dir(&ref_out).expect("mkdir");
    let mut cmd = baton(["run", "--dir", &dir_opt(&ref_out, "/out")]);
    cmd.arg(&tally).arg("--").args(args);
    let want = run_bounded(cmd, "tally reference");
    want.assert_code(3);
    assert!(
        !want.stderr.contains("baton: "),
        "baton spoke in the reference run:\n{}",
        want.stderr
    );
    assert!(
        want.out().contains("tally: wrote /out/result.txt\n"),
        "{}",
        want.out()
    );
    let want_file = std::fs::read(ref_out.join("result.txt")).expect("reference result.txt");
    assert!(want_file.starts_with(b"tally result "), "{want_file:?}");

    // Extended onto an agent, moved there at point 2.
    let agent = TestAgent::start();
    let home = ClientHome::new();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let ev = home.path("events.jsonl");
    let mut cmd = home.baton([
        "run",
        "--remote",
        &agent.addr_text(),
        "--agent-fingerprint",
        &agent.fingerprint,
        "--migrate",
        "point:2",
        "--events",
        s(&ev),
        "--dir",
        &dir_opt(&out, "/out"),
    ]);
    cmd.arg(&tally).arg("--").args(args);
    let o = run_bounded(cmd, "tally --remote --migrate point:2");
    let events = read_events(&ev);
    eprintln!("events:\n{}", pretty(&events));
    o.assert_code(3);
    assert_same_bytes(&o.stdout, &want.stdout, "stdout", &o.stderr);
    assert_eq!(
        task_stderr(&o.stderr),
        want.stderr,
        "the task's stderr differs"
    );
    let m = only_event(&events, "migrated");
    assert_eq!(m["to"], "remote", "{}", pretty(&events));
    assert_eq!(m["point"], 2, "{}", pretty(&events));
    let fin = only_event(&events, "finished");
    assert_eq!(fin["where"], "remote", "{}", pretty(&events));
    assert_eq!(fin["exit_status"], 3, "{}", pretty(&events));
    assert!(
        fin["points"].as_u64().is_some_and(|n| n > 2),
        "nothing ran on the agent:\n{}",
        pretty(&events)
    );
    let got_file = std::fs::read(out.join("result.txt"))
        .unwrap_or_else(|e| panic!("result.txt not written back: {e}\n{}", pretty(&events)));
    assert!(
        got_file == want_file,
        "result.txt differs from the local run's:\n--- want:\n{}\n--- got:\n{}",
        String::from_utf8_lossy(&want_file),
        String::from_utf8_lossy(&got_file)
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["result.txt"],
        "only the task's file in the host dir"
    );
    agent.stop();
}

// ---------------------------------------------------------------------------
// 5. deep recursion and large frames: kill -9, then resume
// ---------------------------------------------------------------------------

/// Runs `module ARGS` uninterrupted, then journaled until `lines` lines of
/// output and `points` points have appeared, kills it (SIGKILL), resumes
/// it and checks that the output adds up to the uninterrupted run's.
fn kill_and_resume_c(module: &str, args: &[&str], lines: usize, points: usize) {
    let wasm = example(module);
    let mut cmd = baton(["run"]);
    cmd.arg(&wasm).arg("--").args(args);
    let want = run_bounded(cmd, &format!("{module} reference"));
    want.assert_code(0);
    assert!(want.stderr.is_empty(), "{}", want.stderr);

    let tmp = tempdir();
    let state = tmp.path().join("state");
    let ev1 = tmp.path().join("run.jsonl");
    let mut cmd = baton([
        "run",
        "--state-dir",
        s(&state),
        "--name",
        "c",
        "--events",
        s(&ev1),
    ]);
    cmd.arg(&wasm).arg("--").args(args);
    let mut p = Proc::spawn(cmd, tmp.path(), "first");
    p.wait_lines(lines);
    p.wait_event(&ev1, &format!("point {points}"), |e| {
        is(e, "point") && e["n"].as_u64().is_some_and(|n| n >= points as u64)
    });
    let first = p.kill9();
    assert!(
        first.stdout.len() < want.stdout.len(),
        "{module} finished before the kill"
    );
    let last_logged = whole_events(&ev1)
        .iter()
        .filter(|e| is(e, "point"))
        .filter_map(|e| e["n"].as_u64())
        .max()
        .expect("points were logged");

    let ev2 = tmp.path().join("resume.jsonl");
    let o = run_bounded(
        baton(["resume", "c", "--state-dir", s(&state), "--events", s(&ev2)]),
        &format!("{module} resume"),
    );
    o.assert_code(0);
    let events = read_events(&ev2);
    let from = only_event(&events, "started")["resumed_from"]
        .as_u64()
        .expect("resumed_from");
    // The journal is written before a point's event: it holds at least the
    // last point logged, and at most the one after it.
    assert!(
        (last_logged..=last_logged + 1).contains(&from),
        "{module}: resumed from point {from}, the last point logged was {last_logged}"
    );
    assert_eq!(only_event(&events, "finished")["exit_status"], 0);
    // Every print is a pair of lines (the deepest frame's, then the top's),
    // which may fall in one step.
    assert_resumed_output(&first.stdout, &o.stdout, &want.stdout, 2);
    assert_eq!(task_stderr(&o.stderr), "", "{module}: stderr");
}

#[test]
fn recurse_killed_and_resumed_gives_the_same_output() {
    // 4000 frames deep, 20 000 rounds (about 1.5 s, about 30 points), a pair
    // of lines every 2000 rounds.
    kill_and_resume_c("recurse.wasm", &["4000", "20000", "2000"], 3, 6);
}

#[test]
fn frames_killed_and_resumed_gives_the_same_output() {
    // 12 000 rounds of four large frames (about 1.2 s, about 20 points), a
    // pair of lines every 1200 rounds.
    kill_and_resume_c("frames.wasm", &["12000", "1200"], 3, 5);
}
