//! Helpers for the end-to-end tests of `baton run --remote`: a `baton
//! agent` child process, a client-side configuration directory, a running
//! `baton run` whose events can be waited on, and the output of the same
//! task run locally (the reference every remote run must match).
//!
//! Every wait is bounded; agents are stopped (SIGTERM, then SIGKILL after a
//! bound) when their handle is dropped, so a failing test leaves nothing
//! behind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// How long an agent may take to print its address.
const AGENT_READY: Duration = Duration::from_secs(15);

/// How long a stopped agent may take to exit after SIGTERM.
const AGENT_STOP: Duration = Duration::from_secs(10);

/// A `baton agent` child process on a loopback port.
pub struct TestAgent {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `sha256:<hex>`, as it printed it.
    pub fingerprint: String,
    dir: tempfile::TempDir,
    stopped: bool,
}

impl TestAgent {
    /// Starts an agent admitting any client, with a short drain timeout.
    pub fn start() -> TestAgent {
        TestAgent::start_with(&["--allow-any-client"])
    }

    /// Starts an agent with these options besides `--listen`, `--data-dir`
    /// and `--drain-timeout` (which `extra` may override), and waits
    /// (bounded) until it prints its fingerprint and address.
    pub fn start_with(extra: &[&str]) -> TestAgent {
        TestAgent::start_in(tempdir(), "127.0.0.1:0", extra)
    }

    /// Kills the agent (SIGKILL) and starts a new one on the same address
    /// and data dir, with the same options, as a machine restarting would.
    pub fn kill9_and_restart(self, extra: &[&str]) -> TestAgent {
        let mut me = self;
        me.kill9();
        me.restart_killed(extra)
    }

    /// Starts a new agent on the address and data dir of this killed one.
    pub fn restart_killed(self, extra: &[&str]) -> TestAgent {
        let me = self;
        let addr = me.addr.to_string();
        let dir = tempfile::TempDir::new_in(std::env::temp_dir()).expect("tempdir");
        // Move the data dir over (the old handle's directory goes away).
        let data = me.dir.path().join("data");
        std::fs::rename(&data, dir.path().join("data")).expect("move the data dir");
        let fresh = TestAgent::start_in(dir, &addr, extra);
        assert_eq!(
            fresh.fingerprint, me.fingerprint,
            "the restarted agent has another identity"
        );
        fresh
    }

    fn start_in(dir: tempfile::TempDir, listen: &str, extra: &[&str]) -> TestAgent {
        let data = dir.path().join("data");
        let out = dir.path().join("agent.out");
        let err = dir.path().join("agent.err");
        let mut cmd = baton(["agent", "--listen", listen, "--data-dir", s(&data)]);
        if !extra.contains(&"--drain-timeout") {
            cmd.args(["--drain-timeout", "1s"]);
        }
        cmd.args(extra)
            .stdout(Stdio::from(std::fs::File::create(&out).expect("agent.out")))
            .stderr(Stdio::from(std::fs::File::create(&err).expect("agent.err")));
        let mut child = cmd.spawn().expect("cannot start baton agent");
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let fp = text
                .lines()
                .find_map(|l| l.strip_prefix("fingerprint "))
                .map(str::to_string);
            let addr = text
                .lines()
                .find_map(|l| l.strip_prefix("listening on "))
                .map(|a| a.parse::<SocketAddr>().expect("agent address"));
            if let (Some(fingerprint), Some(addr)) = (fp, addr) {
                assert!(
                    fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 64,
                    "agent fingerprint line: {fingerprint}"
                );
                assert!(addr.ip().is_loopback(), "agent listens on {addr}");
                return TestAgent {
                    child,
                    addr,
                    fingerprint,
                    dir,
                    stopped: false,
                };
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "baton agent exited ({status:?}) before it listened; stdout:\n{text}\nstderr:\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            if start.elapsed() > AGENT_READY {
                let _ = child.kill();
                let _ = child.wait();
                panic!("baton agent did not print its address within {AGENT_READY:?}");
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// A fault-injecting relay in front of the agent, running on `rt`.
    pub fn relay(&self, rt: &tokio::runtime::Runtime) -> baton_net::relay::Relay {
        let _g = rt.enter();
        baton_net::relay::Relay::start(self.addr).expect("relay")
    }

    /// The agent's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The agent's address as `HOST:PORT`.
    pub fn addr_text(&self) -> String {
        self.addr.to_string()
    }

    /// Everything the agent wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.err")).unwrap_or_default()
    }

    /// Whether the agent process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Kills the agent at once (SIGKILL), as a crash would.
    pub fn kill9(&mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = wait_bounded(&mut self.child, AGENT_STOP, "killed agent");
        self.stopped = true;
    }

    /// Like [`Self::stop`], and hands over its directory (data dir under
    /// `data/`) for a look afterwards.
    pub fn stop_keeping_dir(self) -> tempfile::TempDir {
        let mut me = self;
        me.stop_in_place();
        let dir = tempfile::TempDir::new_in(std::env::temp_dir()).expect("tempdir");
        std::fs::rename(me.dir.path().join("data"), dir.path().join("data"))
            .expect("move the data dir");
        dir
    }

    /// Stops the agent with SIGTERM and waits (bounded) for it to exit;
    /// fails the test if it was already gone or does not exit in time.
    pub fn stop(mut self) {
        self.stop_in_place();
    }

    fn stop_in_place(&mut self) {
        assert!(
            self.is_alive(),
            "the agent died during the test; stderr:\n{}",
            self.stderr()
        );
        signal(&self.child, libc::SIGTERM);
        self.stopped = true;
        let status = wait_bounded(&mut self.child, AGENT_STOP, "agent after SIGTERM");
        assert!(
            status.success(),
            "the agent exited with {status:?} after SIGTERM; stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // Never panic here (we may be unwinding): SIGTERM, bounded wait,
        // then SIGKILL.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let start = Instant::now();
        while start.elapsed() < AGENT_STOP {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client side of one test: a configuration directory (known agents,
/// default identity) and a place for events files.
pub struct ClientHome {
    dir: tempfile::TempDir,
}

impl ClientHome {
    /// A fresh, empty client home.
    pub fn new() -> ClientHome {
        let dir = tempdir();
        std::fs::create_dir_all(dir.path().join("config")).expect("config dir");
        ClientHome { dir }
    }

    /// The `BATON_CONFIG_DIR` of this client.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// A path inside the home (for events files, identities, lists).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `baton` command with `BATON_CONFIG_DIR` set to this home.
    pub fn baton<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = baton(args);
        cmd.env("BATON_CONFIG_DIR", self.config())
            .env("XDG_STATE_HOME", self.path("state"));
        cmd
    }

    /// `baton run --remote ADDR --agent-fingerprint FP --events EVENTS
    /// OPTIONS MODULE -- ARGS`.
    pub fn remote_run(
        &self,
        agent: &str,
        fingerprint: &str,
        events: &Path,
        options: &[&str],
        module: &str,
        args: &[&str],
    ) -> Command {
        let mut cmd = self.baton(["run", "--remote", agent, "--agent-fingerprint", fingerprint]);
        cmd.args(["--events", s(events)]).args(options);
        cmd.arg(example(module));
        if !args.is_empty() {
            cmd.arg("--").args(args);
        }
        cmd
    }

    /// The fingerprint `baton identity --identity DIR` prints.
    pub fn identity(&self, dir: &Path) -> String {
        let o = run(self.baton(["identity", "--identity", s(dir)]));
        o.assert_code(0);
        let text = o.out();
        let fp = text
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint "))
            .unwrap_or_else(|| panic!("no fingerprint line from `baton identity`:\n{text}"));
        assert!(fp.starts_with("sha256:"), "{fp}");
        fp.to_string()
    }
}

impl Default for ClientHome {
    fn default() -> ClientHome {
        ClientHome::new()
    }
}

/// stdout of `baton run MODULE -- ARGS` without `--remote` (exit status 0
/// required); computed once per module and arguments.
pub fn local_output(module: &str, args: &[&str]) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let key = format!("{module} {args:?}");
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(out) = cache.lock().expect("cache").get(&key) {
        return out.clone();
    }
    let mut cmd = baton(["run"]);
    cmd.arg(example(module));
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let o = run(cmd);
    o.assert_code(0);
    assert!(!o.stdout.is_empty(), "the local run printed nothing");
    cache.lock().expect("cache").insert(key, o.stdout.clone());
    o.stdout
}

/// Asserts that `got` is byte-identical to the local run's output.
#[track_caller]
pub fn assert_same_output(got: &Output, module: &str, args: &[&str]) {
    let want = local_output(module, args);
    assert!(
        got.stdout == want,
        "stdout differs from an uninterrupted local run of {module} {args:?}\n--- want:\n{}\n--- got:\n{}\n--- stderr:\n{}",
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(&got.stdout),
        got.stderr
    );
}

/// A `baton run` child whose stdout and stderr are captured and whose
/// events file can be watched.
pub struct Running {
    /// The process.
    pub child: Child,
    cap: Capture,
    /// Its `--events` file.
    pub events: PathBuf,
}

impl Running {
    /// Starts `cmd`, which must write its events to `events`.
    pub fn spawn(mut cmd: Command, events: &Path) -> Running {
        let cap = Capture::new();
        cap.attach(&mut cmd);
        let child = cmd.spawn().expect("cannot start baton run");
        Running {
            child,
            cap,
            events: events.to_path_buf(),
        }
    }

    /// The whole events written so far.
    pub fn events_so_far(&self) -> Vec<Value> {
        whole_events(&self.events)
    }

    /// Waits (at most `limit`) for an event satisfying `pred` and returns
    /// it; fails the test (killing the run) if the run ends first or time
    /// runs out.
    #[track_caller]
    pub fn wait_event(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            if let Some(e) = whole_events(&self.events).into_iter().find(|e| pred(e)) {
                return e;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // One more look: the event may have come just before the end.
                if let Some(e) = whole_events(&self.events).into_iter().find(|e| pred(e)) {
                    return e;
                }
                let o = self.cap.read(status);
                panic!(
                    "baton run ended ({status:?}) before {what}; events:\n{}\n--- stderr:\n{}",
                    events_text(&self.events),
                    o.stderr
                );
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "no {what} within {limit:?}; events:\n{}",
                    events_text(&self.events)
                );
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded by [`PROCESS_TIMEOUT`]) for the run to end and
    /// returns its output and all its events.
    /// Kills the run at once (SIGKILL), as a crash would, and returns what
    /// it had written to stdout by then.
    pub fn kill9(mut self) -> Vec<u8> {
        signal(&self.child, libc::SIGKILL);
        let status = wait_bounded(&mut self.child, PROCESS_TIMEOUT, "killed baton run");
        self.cap.read(status).stdout
    }

    pub fn finish(mut self) -> (Output, Vec<Value>) {
        let status = wait_bounded(&mut self.child, PROCESS_TIMEOUT, "baton run --remote");
        let o = self.cap.read(status);
        let events = read_events(&self.events);
        (o, events)
    }
}

/// The events in `path` that are whole lines so far (none if it is missing).
pub fn whole_events(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    parse_events(whole)
}

/// The events file's text, for failure messages.
pub fn events_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The events named `name`.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// The first event named `name`; fails if there is none.
#[track_caller]
pub fn first<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no `{name}` event in:\n{}", pretty(events)))
}

/// The events as JSON lines, for failure messages.
pub fn pretty(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the `finished` event: exactly one, exit status 0, at `at`.
#[track_caller]
pub fn assert_finished(events: &[Value], at: &str) -> Value {
    let fin = only_event(events, "finished");
    assert_eq!(fin["exit_status"], 0, "{}", pretty(events));
    assert_eq!(
        fin["where"],
        at,
        "finished where? events:\n{}",
        pretty(events)
    );
    fin.clone()
}

/// A multi-threaded tokio runtime for the relay and the fake clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Checks that the output of a run's pieces (a run killed, its resumes)
/// adds up to `want`: each piece continues where the last one stopped, and
/// may repeat at most the last line shown before a crash (shown, then the
/// crash came before it was noted as shown: documented).
pub fn assert_pieces_add_up(pieces: &[Vec<u8>], want: &[u8]) {
    let mut at = 0usize; // how much of `want` has been shown
    for (i, piece) in pieces.iter().enumerate() {
        // Where the last line shown so far starts: a piece may start there
        // (repeating it) or right at `at`.
        let last_line = match want[..at].strip_suffix(b"\n") {
            Some(before) => before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1),
            None => want[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1),
        };
        let start = (last_line..=at)
            .rev()
            .find(|&s| want[s..].starts_with(piece))
            .unwrap_or_else(|| {
                panic!(
                    "piece {i} does not continue the output at byte {at}:\n--- piece ---\n{}\n--- expected from there ---\n{}",
                    String::from_utf8_lossy(piece),
                    String::from_utf8_lossy(&want[at..])
                )
            });
        at = at.max(start + piece.len());
    }
    assert_eq!(
        at,
        want.len(),
        "the pieces end before the output does; missing:\n{}",
        String::from_utf8_lossy(&want[at..])
    );
}

impl Running {
    /// Kills the run at once (SIGKILL) and returns how it ended and what
    /// it had written to stdout by then.
    pub fn kill9_status(mut self) -> (std::process::ExitStatus, Vec<u8>) {
        signal(&self.child, libc::SIGKILL);
        let status = wait_bounded(&mut self.child, PROCESS_TIMEOUT, "killed baton run");
        (status, self.cap.read(status).stdout)
    }
}
