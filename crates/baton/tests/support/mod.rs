//! Helpers for the end-to-end tests of the `baton` binary: a command builder
//! around the built binary, bounded waits, captured output, event logs.
//!
//! Every wait here is bounded in time; a process that outlives its bound is
//! killed and the test fails saying so.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod remote;

/// Longest any single baton process may run in these tests.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of an example module, e.g. `example("pi.wasm")` or
/// `example("hostile/spin.wasm")`.
pub fn example(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/")).join(name);
    assert!(p.is_file(), "example {} is missing", p.display());
    p
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("baton-cli-test-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// A `baton` command with `args`, stdin empty (`/dev/null`) and no
/// `BATON_LOG` from the environment.
pub fn baton<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
    cmd.args(args)
        .env_remove("BATON_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything on its stdout.
    pub stdout: Vec<u8>,
    /// Everything on its stderr, as text.
    pub stderr: String,
}

impl Output {
    /// The exit code; fails the test if a signal ended the process.
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(c) => c,
            None => panic!(
                "baton was ended by a signal ({:?}); stderr:\n{}",
                self.status, self.stderr
            ),
        }
    }

    /// stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is not UTF-8")
    }

    /// Asserts the exit code, showing the output if it differs.
    #[track_caller]
    pub fn assert_code(&self, want: i32) -> &Output {
        assert_eq!(
            self.status.code(),
            Some(want),
            "exit status {:?}, want {want}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }

    /// Asserts that stderr is exactly one line, starting `baton: error:`,
    /// and returns it.
    #[track_caller]
    pub fn single_error_line(&self) -> &str {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1
                && lines[0].starts_with("baton: error: ")
                && self.stderr.ends_with('\n'),
            "stderr must be exactly one line starting `baton: error: `, got:\n{}",
            self.stderr
        );
        lines[0]
    }

    /// The lines of stderr starting `baton: error:`; asserts there is exactly one.
    #[track_caller]
    pub fn the_error_line(&self) -> &str {
        let errs: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("baton: error: "))
            .collect();
        assert_eq!(
            errs.len(),
            1,
            "want exactly one `baton: error:` line on stderr, got:\n{}",
            self.stderr
        );
        errs[0]
    }
}

/// Captures a child's stdout and stderr in anonymous temporary files (no
/// pipes, so nothing can block and a killed process's output is kept).
pub struct Capture {
    out: File,
    err: File,
}

impl Capture {
    /// Fresh capture files.
    pub fn new() -> Capture {
        Capture {
            out: tempfile::tempfile().expect("temp file"),
            err: tempfile::tempfile().expect("temp file"),
        }
    }

    /// Points `cmd`'s stdout and stderr at the capture files.
    pub fn attach(&self, cmd: &mut Command) {
        cmd.stdout(Stdio::from(self.out.try_clone().expect("dup")))
            .stderr(Stdio::from(self.err.try_clone().expect("dup")));
    }

    /// Everything written so far.
    pub fn read(&mut self, status: ExitStatus) -> Output {
        fn all(f: &mut File) -> Vec<u8> {
            let mut v = Vec::new();
            f.seek(SeekFrom::Start(0)).expect("seek");
            f.read_to_end(&mut v).expect("read capture");
            v
        }
        Output {
            status,
            stdout: all(&mut self.out),
            stderr: String::from_utf8_lossy(&all(&mut self.err)).into_owned(),
        }
    }
}

impl Default for Capture {
    fn default() -> Capture {
        Capture::new()
    }
}

/// Waits for `child` at most `limit`; kills it and fails the test when it
/// takes longer.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}; killed it");
        }
        sleep(Duration::from_millis(5));
    }
}

/// Runs `cmd` to the end (bounded) and captures its output.
pub fn run(mut cmd: Command) -> Output {
    let mut cap = Capture::new();
    cap.attach(&mut cmd);
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("cannot start baton");
    let status = wait_bounded(&mut child, PROCESS_TIMEOUT, &what);
    cap.read(status)
}

/// Runs baton with `args` to the end.
pub fn baton_run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(baton(args))
}

/// Runs `cmd` with `input` on stdin.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut f = tempfile::tempfile().expect("temp file");
    std::io::Write::write_all(&mut f, input).expect("write stdin file");
    f.seek(SeekFrom::Start(0)).expect("seek");
    cmd.stdin(Stdio::from(f));
    run(cmd)
}

/// The events in a `--events` file; every line must be a JSON object with
/// a non-negative integer `t_ms` and a string `event`.
#[track_caller]
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_events(&text)
}

/// Parses JSON Lines events, checking `t_ms` and `event` on each.
#[track_caller]
pub fn parse_events(text: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "events file does not end at a line boundary:\n{text}"
    );
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {line}"));
            assert!(v.is_object(), "event is not an object: {line}");
            assert!(v["t_ms"].is_u64(), "event without integer t_ms: {line}");
            assert!(v["event"].is_string(), "event without `event`: {line}");
            v
        })
        .collect()
}

/// Number of `point` events in the file so far (0 if it does not exist);
/// only whole lines count.
pub fn count_points(path: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    whole
        .lines()
        .filter(|l| l.contains("\"event\":\"point\""))
        .count()
}

/// Polls until `events` holds at least `n` point events, at most `limit`.
/// Fails the test if `child` ends first or the time runs out.
pub fn wait_for_points(child: &mut Child, events: &Path, n: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        if count_points(events) >= n {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "baton ended ({status:?}) before {n} point events appeared in {}",
                events.display()
            );
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no {n} point events in {} within {limit:?}",
                events.display()
            );
        }
        sleep(Duration::from_millis(2));
    }
}

/// baton's exit status after Ctrl-C stopped the task at a point.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Waits for `points` point events in `events`, presses Ctrl-C (SIGINT),
/// waits for `child` to stop and returns what it printed, checking that it
/// exited with 130 (stopped at a point).
pub fn interrupt_after_points(
    child: &mut Child,
    cap: &mut Capture,
    events: &Path,
    points: usize,
) -> Output {
    wait_for_points(child, events, points, Duration::from_secs(60));
    signal(child, libc::SIGINT);
    let status = wait_bounded(child, Duration::from_secs(30), "interrupted baton");
    let o = cap.read(status);
    o.assert_code(EXIT_INTERRUPTED);
    o
}

/// Sends `sig` to the child.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// The single event named `name`; fails unless there is exactly one.
#[track_caller]
pub fn only_event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(
        found.len(),
        1,
        "want exactly one `{name}` event, got {}: {events:#?}",
        found.len()
    );
    found[0]
}

/// The `digest` of the finished record in a task's journal.
#[track_caller]
pub fn journal_finished(state_dir: &Path, id: &str) -> Value {
    let path = state_dir.join(id).join("finished.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Flips every bit of the byte in the middle of `path`.
pub fn flip_middle_byte(path: &Path) {
    let mut bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A path as a `&str` for command lines.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("non-UTF-8 temporary path")
}
