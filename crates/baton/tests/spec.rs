//! End-to-end tests of the task spec (`crates/baton/src/spec.rs`): the one
//! typed description of a task (module, arguments, environment, seed,
//! clock, limits, policies) that is journaled in `task.json`, sent to the
//! agent and rebuilt by `baton resume`.
//!
//! Every test runs `examples/probe.wasm`, which prints at every step what
//! it sees of its spec: its arguments and environment (asked of the host at
//! every step), 8 random bytes, the real-time clock, and whether a 1 MiB
//! and a 16 MiB malloc succeed under `--max-memory 8MiB`. So a spec part
//! that is lost or changed on the way shows up in the output. Covered:
//!
//! - kill -9 of a journaled local run, then `baton resume`: the output adds
//!   up to one uninterrupted run's, byte for byte, and every line after the
//!   resume shows the same arguments, environment, random bytes, clock and
//!   allocation results (the memory limit, which is not part of the state,
//!   held);
//! - `baton run --remote` (`--migrate start`): the agent's output is the
//!   local run's, byte for byte;
//! - `baton resume ID --remote`: a task started locally and killed mid-run
//!   is extended onto an agent and finishes there with the rest of the
//!   output; a later `baton resume ID` says it already finished;
//! - `baton resume ID --local`: a task running on an agent (responsible
//!   remote) whose client was killed is brought back and finishes here;
//! - journals of the release before, and hostile `task.json` files (not
//!   JSON, too large, a policy word that does not parse), are refused with
//!   one `baton: error:` line and exit status 125, printing nothing.
//!
//! Everything runs on loopback; every wait is bounded; agents stop when
//! their handle is dropped and every `baton` child is waited for.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::remote::*;
use support::*;

const EXIT_ERROR: i32 = 125;

/// Bound on waiting for any one event of a run.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The spec options every probe run here uses (besides the arguments).
const SPEC_OPTS: &[&str] = &[
    "--seed",
    "42",
    "--env",
    "ALPHA=one",
    "--env",
    "BETA=two words",
    "--clock-start",
    "1000000",
    "--max-memory",
    "8MiB",
];

/// What probe must print for its environment at every step.
const WANT_ENV: &str = r#"["ALPHA=one","BETA=two words"]"#;

/// probe's allocations: 1 MiB fits under `--max-memory 8MiB`, 16 MiB does not.
const SIZES: &str = "1048576,16777216";

/// What probe must print for its allocations at every step.
const WANT_ALLOC: &str = "[1048576:ok,16777216:fail]";

/// Rounds of probe's mixing loop per step (about 10 ms).
const WORK: &str = "3000000";

/// A probe configuration: its number of steps.
struct Probe {
    /// Index into the cache of reference runs.
    slot: usize,
    /// Steps (the final point).
    steps: u64,
}

/// About 1 s of work.
const SHORT: Probe = Probe { slot: 0, steps: 80 };

/// About 6 s of work: still running on the agent well after a kill.
const LONG: Probe = Probe {
    slot: 1,
    steps: 600,
};

impl Probe {
    /// probe's arguments (after `--`).
    fn args(&self) -> Vec<String> {
        vec![self.steps.to_string(), SIZES.to_string(), WORK.to_string()]
    }

    /// What probe must print for its arguments at every step.
    fn want_argv(&self) -> String {
        format!(r#"["probe.wasm","{}","{SIZES}","{WORK}"]"#, self.steps)
    }

    /// `OPTIONS... probe.wasm -- ARGS...` for `baton run`.
    fn run_tail(&self) -> Vec<String> {
        let mut v: Vec<String> = SPEC_OPTS.iter().map(|o| o.to_string()).collect();
        v.push(s(&example("probe.wasm")).to_string());
        v.push("--".to_string());
        v.extend(self.args());
        v
    }
}

/// One step's line of probe's output, split into its fields.
#[derive(Debug, PartialEq)]
struct Line {
    step: u64,
    argv: String,
    env: String,
    rng: String,
    clock: String,
    alloc: String,
    work: String,
}

/// The fields of a step line, in order.
const KEYS: [&str; 6] = ["argv", "env", "rng", "clock", "alloc", "work"];

/// Parses `probe: step K/N argv=[..] env=[..] rng=.. clock=.. alloc=[..]
/// work=..`; `None` for probe's other lines.
fn parse_line(line: &str) -> Option<Line> {
    let rest = line.strip_prefix("probe: step ")?;
    let (step, rest) = rest.split_once('/')?;
    let mut rest = &rest[rest.find(" argv=")?..];
    let mut vals = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        rest = rest
            .strip_prefix(&format!(" {key}="))
            .unwrap_or_else(|| panic!("probe line without {key}: {line}"));
        let end = match KEYS.get(i + 1) {
            Some(next) => rest
                .find(&format!(" {next}="))
                .unwrap_or_else(|| panic!("probe line without {next}: {line}")),
            None => rest.len(),
        };
        vals.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    let [argv, env, rng, clock, alloc, work] = <[String; 6]>::try_from(vals).ok()?;
    Some(Line {
        step: step
            .parse()
            .unwrap_or_else(|_| panic!("bad step in: {line}")),
        argv,
        env,
        rng,
        clock,
        alloc,
        work,
    })
}

/// An uninterrupted local run of a probe configuration.
struct Reference {
    stdout: String,
    digest: String,
    lines: Vec<Line>,
}

/// The uninterrupted local run of `p` (no journal), made once per test
/// process, after checking that every line shows the spec it was given.
fn reference(p: &Probe) -> &'static Reference {
    static REFS: [OnceLock<Reference>; 2] = [OnceLock::new(), OnceLock::new()];
    REFS[p.slot].get_or_init(|| {
        let tmp = tempdir();
        let ev = tmp.path().join("ref.jsonl");
        let mut args = vec!["run".to_string(), "--events".into(), s(&ev).into()];
        args.extend(p.run_tail());
        let o = baton_run(&args);
        o.assert_code(0);
        let stdout = o.out();
        assert!(
            stdout.ends_with(&format!("probe: done after {} steps\n", p.steps)),
            "{stdout}"
        );
        let lines: Vec<Line> = stdout.lines().filter_map(parse_line).collect();
        assert_eq!(
            lines.iter().map(|l| l.step).collect::<Vec<_>>(),
            (1..=p.steps).collect::<Vec<_>>(),
            "probe's step lines"
        );
        for l in &lines {
            assert_eq!(l.argv, p.want_argv(), "{l:?}");
            assert_eq!(l.env, WANT_ENV, "{l:?}");
            assert_eq!(l.alloc, WANT_ALLOC, "the memory limit: {l:?}");
            assert!(l.clock.starts_with("1000000."), "--clock-start: {l:?}");
            assert_eq!(l.rng.len(), 16, "{l:?}");
        }
        // The random bytes are a stream, not one value repeated.
        assert_ne!(lines[0].rng, lines[1].rng);
        // And they are the seed's: another seed gives other bytes.
        let other = baton_run(["run", "--seed", "43", s(&example("probe.wasm")), "--", "1"]);
        other.assert_code(0);
        let first_other = other.out().lines().find_map(parse_line).expect("a line");
        assert_ne!(first_other.rng, lines[0].rng, "--seed has no effect");
        let events = read_events(&ev);
        let fin = only_event(&events, "finished");
        assert_eq!(fin["points"].as_u64(), Some(p.steps));
        Reference {
            stdout,
            digest: fin["digest"].as_str().expect("digest").to_string(),
            lines,
        }
    })
}

/// Checks every step line of `piece` (output shown after a resume or by
/// an agent) field by field against the uninterrupted run's line of the
/// same step, and returns how many there were.
#[track_caller]
fn assert_lines_match(p: &Probe, piece: &str, what: &str) -> usize {
    let r = reference(p);
    let mut n = 0;
    for line in piece.lines().filter_map(parse_line) {
        let want = &r.lines[usize::try_from(line.step).expect("step") - 1];
        assert_eq!(line.argv, p.want_argv(), "{what}: arguments changed");
        assert_eq!(line.env, WANT_ENV, "{what}: environment changed");
        assert_eq!(line.alloc, WANT_ALLOC, "{what}: the memory limit changed");
        assert_eq!(line.rng, want.rng, "{what}: random stream changed");
        assert_eq!(line.clock, want.clock, "{what}: clock changed");
        assert_eq!(&line, want, "{what}: step {} differs", line.step);
        n += 1;
    }
    n
}

/// Asserts `got` is the reference's output, byte for byte.
#[track_caller]
fn assert_whole(p: &Probe, got: &str, what: &str) {
    let want = &reference(p).stdout;
    assert!(
        got == want,
        "{what}: output differs from the uninterrupted run\n--- want:\n{want}\n--- got:\n{got}"
    );
}

/// The step number of the last step line in `out` (0 if none).
fn last_step(out: &str) -> u64 {
    out.lines()
        .filter_map(parse_line)
        .map(|l| l.step)
        .max()
        .unwrap_or(0)
}

/// Starts a journaled local probe run (`--state-dir`, `--name`, `--events`).
fn start_local(
    cmd: std::process::Command,
    p: &Probe,
    state: &Path,
    id: &str,
    ev: &Path,
) -> Running {
    let mut cmd = cmd;
    cmd.args([
        "run",
        "--state-dir",
        s(state),
        "--name",
        id,
        "--events",
        s(ev),
    ])
    .args(p.run_tail());
    Running::spawn(cmd, ev)
}

/// Kills a run (SIGKILL), checks that it was the kill that ended it and
/// that it had not finished, and returns its stdout.
fn kill9_mid_run(r: Running) -> String {
    let events = r.events.clone();
    let (status, out) = r.kill9_status();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not killed: {status:?}"
    );
    assert!(
        whole_events(&events)
            .iter()
            .all(|e| e["event"] != "finished"),
        "the run finished before the kill:\n{}",
        events_text(&events)
    );
    String::from_utf8(out).expect("stdout is not UTF-8")
}

/// The spec `task.json` records (a readable JSON object).
fn journaled_spec(state: &Path, id: &str) -> Value {
    let path = state.join(id).join("task.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// the spec holds across kill -9 and resume, locally and on the agent
// ---------------------------------------------------------------------------

#[test]
fn the_spec_holds_across_kill_9_and_resume() {
    let p = &SHORT;
    let r = reference(p);
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let ev1 = tmp.path().join("run.jsonl");
    let ev2 = tmp.path().join("resume.jsonl");
    let mut run1 = start_local(baton(Vec::<&str>::new()), p, &state, "probe-kill", &ev1);
    wait_for_points(&mut run1.child, &ev1, 20, EVENT_WAIT);
    let first = kill9_mid_run(run1);
    assert!(
        r.stdout.starts_with(&first),
        "the killed run's output is not a prefix of the uninterrupted run's:\n{first}"
    );

    // What the journal holds is the spec given on the command line.
    let spec = journaled_spec(&state, "probe-kill");
    assert_eq!(spec["seed"], 42, "{spec}");
    assert_eq!(spec["limits"]["max_memory"], 8 << 20, "{spec}");

    let o = baton_run([
        "resume",
        "probe-kill",
        "--state-dir",
        s(&state),
        "--events",
        s(&ev2),
    ]);
    o.assert_code(0);
    let events = read_events(&ev2);
    let from = only_event(&events, "started")["resumed_from"]
        .as_u64()
        .unwrap_or_else(|| panic!("no resumed_from:\n{}", pretty(&events)));
    assert!(
        from >= 20,
        "resumed from point {from}, after 20 were logged"
    );
    let resumed = o.out();
    // The journal records which points' output was shown: nothing twice,
    // nothing lost.
    assert_whole(p, &format!("{first}{resumed}"), "killed run + resume");
    let n = assert_lines_match(p, &resumed, "after the resume");
    assert_eq!(
        n as u64,
        p.steps - last_step(&first),
        "step lines shown by the resume"
    );
    let fin = only_event(&events, "finished");
    assert_eq!(
        fin["digest"].as_str(),
        Some(r.digest.as_str()),
        "final digest"
    );
    assert_eq!(fin["where"], "local");
}

#[test]
fn the_spec_holds_on_the_agent() {
    let p = &SHORT;
    let r = reference(p);
    let agent = TestAgent::start();
    let home = ClientHome::new();
    let ev = home.path("events.jsonl");
    let args = p.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(home.remote_run(
        &agent.addr_text(),
        &agent.fingerprint,
        &ev,
        &[SPEC_OPTS, &["--migrate", "start", "--name", "probe-remote"]].concat(),
        "probe.wasm",
        &args,
    ));
    o.assert_code(0);
    let events = read_events(&ev);
    let m = only_event(&events, "migrated");
    assert_eq!(m["to"], "remote", "{}", pretty(&events));
    assert_eq!(m["point"], 0, "{}", pretty(&events));
    assert!(
        named(&events, "point")
            .iter()
            .all(|e| e["where"] == "remote"),
        "a point ran here although the task migrated at start:\n{}",
        pretty(&events)
    );
    let fin = assert_finished(&events, "remote");
    assert_eq!(
        fin["digest"].as_str(),
        Some(r.digest.as_str()),
        "final digest"
    );
    let out = o.out();
    assert_eq!(assert_lines_match(p, &out, "on the agent") as u64, p.steps);
    assert_whole(p, &out, "run on the agent");
    agent.stop();
}

// ---------------------------------------------------------------------------
// resume --remote and resume --local
// ---------------------------------------------------------------------------

#[test]
fn resume_remote_extends_a_locally_started_task() {
    let p = &SHORT;
    let r = reference(p);
    let agent = TestAgent::start();
    let home = ClientHome::new();
    let state = home.path("journal");
    let ev1 = home.path("run.jsonl");
    let ev2 = home.path("resume.jsonl");
    let mut run1 = start_local(home.baton(Vec::<&str>::new()), p, &state, "probe-out", &ev1);
    wait_for_points(&mut run1.child, &ev1, 20, EVENT_WAIT);
    let first = kill9_mid_run(run1);
    assert!(
        r.stdout.starts_with(&first),
        "the killed run's output is not a prefix of the uninterrupted run's:\n{first}"
    );

    let o = run(home.baton([
        "resume",
        "probe-out",
        "--state-dir",
        s(&state),
        "--remote",
        &agent.addr_text(),
        "--agent-fingerprint",
        &agent.fingerprint,
        "--events",
        s(&ev2),
    ]));
    let events = read_events(&ev2);
    assert_eq!(
        o.code(),
        0,
        "resume --remote failed\n--- stderr:\n{}\n--- events:\n{}",
        o.stderr,
        pretty(&events)
    );
    let resumed = o.out();
    assert!(
        resumed == r.stdout[first.len()..],
        "the resume's output is not exactly the rest of the run\n--- want:\n{}\n--- got:\n{resumed}\n--- stderr:\n{}",
        &r.stdout[first.len()..],
        o.stderr
    );
    assert!(assert_lines_match(p, &resumed, "after resume --remote") > 0);
    let m = events
        .iter()
        .find(|e| e["event"] == "migrated" && e["to"] == "remote")
        .unwrap_or_else(|| panic!("no migration to the agent:\n{}", pretty(&events)));
    assert_eq!(m["from"], "local", "{m}");
    // It moves as soon as the link is up: at the point it resumed from or
    // a little later; every point after the move ran on the agent.
    let from = only_event(&events, "started")["resumed_from"]
        .as_u64()
        .unwrap_or_else(|| panic!("no resumed_from:\n{}", pretty(&events)));
    let moved = m["point"].as_u64().expect("point");
    assert!(moved >= from, "moved at {moved}, before {from}");
    assert!(
        named(&events, "point")
            .iter()
            .filter(|e| e["n"].as_u64().is_some_and(|n| n > moved))
            .all(|e| e["where"] == "remote"),
        "points after the move ran here:\n{}",
        pretty(&events)
    );
    let fin = assert_finished(&events, "remote");
    assert_eq!(
        fin["digest"].as_str(),
        Some(r.digest.as_str()),
        "final digest"
    );
    // The journal now names the agent (later resumes go there).
    let spec = journaled_spec(&state, "probe-out");
    assert_eq!(spec["remote"]["agent"], agent.addr_text(), "{spec}");

    let again = run(home.baton(["resume", "probe-out", "--state-dir", s(&state)]));
    again.assert_code(0);
    assert!(
        again.stdout.is_empty(),
        "output shown again:\n{}",
        again.out()
    );
    assert!(
        again.stderr.contains("already finished"),
        "a second resume should say the task finished:\n{}",
        again.stderr
    );
    agent.stop();
}

#[test]
fn resume_local_brings_a_task_back_from_the_agent() {
    let p = &LONG;
    let r = reference(p);
    let agent = TestAgent::start();
    let home = ClientHome::new();
    let state = home.path("journal");
    let ev1 = home.path("run.jsonl");
    let ev2 = home.path("resume.jsonl");
    let args = p.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let opts = [
        SPEC_OPTS,
        &[
            "--name",
            "probe-back",
            "--state-dir",
            s(&state),
            "--responsible",
            "remote",
        ],
    ]
    .concat();
    let cmd = home.remote_run(
        &agent.addr_text(),
        &agent.fingerprint,
        &ev1,
        &opts,
        "probe.wasm",
        &args,
    );
    let mut run1 = Running::spawn(cmd, &ev1);
    run1.wait_event("migration to the agent", EVENT_WAIT, |e| {
        e["event"] == "migrated" && e["to"] == "remote"
    });
    run1.wait_event("a remote point >= 20", EVENT_WAIT, |e| {
        e["event"] == "point" && e["where"] == "remote" && e["n"].as_u64().is_some_and(|n| n >= 20)
    });
    let first = kill9_mid_run(run1);

    let o = run(home.baton([
        "resume",
        "probe-back",
        "--state-dir",
        s(&state),
        "--local",
        "--events",
        s(&ev2),
    ]));
    let events = read_events(&ev2);
    assert_eq!(
        o.code(),
        0,
        "resume --local failed\n--- stderr:\n{}\n--- events:\n{}",
        o.stderr,
        pretty(&events)
    );
    let resumed = o.out();
    assert_lines_match(p, &resumed, "after resume --local");
    // A crash may show the last chunk again (documented); nothing is lost.
    assert_pieces_add_up(
        &[first.clone().into_bytes(), resumed.clone().into_bytes()],
        r.stdout.as_bytes(),
    );
    eprintln!(
        "killed run: {} step lines, resume: {}; stderr of the resume:\n{}\nevents of the resume:\n{}",
        last_step(&first),
        resumed.lines().filter_map(parse_line).count(),
        o.stderr,
        pretty(&events)
    );
    let fin = assert_finished(&events, "local");
    assert_eq!(
        fin["digest"].as_str(),
        Some(r.digest.as_str()),
        "final digest"
    );
    // It was still running on the agent: it came back by a migration.
    let back = events
        .iter()
        .find(|e| e["event"] == "migrated" && e["to"] == "local")
        .unwrap_or_else(|| panic!("no migration back here:\n{}", pretty(&events)));
    assert_eq!(back["from"], "remote", "{back}");
    // Points after the hand-back ran here.
    let back_at = back["point"].as_u64().expect("point");
    assert!(
        named(&events, "point")
            .iter()
            .filter(|e| e["n"].as_u64().is_some_and(|n| n > back_at))
            .all(|e| e["where"] == "local"),
        "points after the hand-back ran elsewhere:\n{}",
        pretty(&events)
    );
    // Brought back for good: this side is responsible too, so a later loss
    // of the agent cannot stall the task until a takeover.
    let last = named(&events, "responsibility")
        .last()
        .copied()
        .unwrap_or_else(|| panic!("no responsibility event:\n{}", pretty(&events)));
    assert_eq!(last["holder"], "local", "{last}");
    assert_eq!(last["executor"], "local", "{last}");
    agent.stop();
}

// ---------------------------------------------------------------------------
// journals baton cannot read
// ---------------------------------------------------------------------------

#[test]
fn a_journal_of_the_release_before_is_refused_clearly() {
    let tmp = tempdir();
    let dir = tmp.path().join("old");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("task.json"),
        br#"{"version":1,"id":"old","module_path":"x.wasm","module_digest":"00","dirs":[],"max_memory":4294967296,"max_step_time_ms":null,"wall_clock":false}"#,
    )
    .expect("write task.json");
    std::fs::write(dir.join("base.ckpt"), b"BATONCKP\x01\x00\x00\x00some bytes").expect("write");
    std::fs::write(dir.join("points.log"), b"\x07\x00\x00\x00more bytes").expect("write");
    let o = baton_run(["resume", "old", "--state-dir", s(tmp.path())]);
    o.assert_code(EXIT_ERROR);
    assert!(o.stdout.is_empty(), "stdout: {}", o.out());
    let line = o.single_error_line();
    assert!(
        line.contains("format 1"),
        "does not name the format: {line}"
    );
    assert!(
        line.contains("run it again") || line.contains("baton that started it"),
        "does not say what to do: {line}"
    );
    // Nothing was changed or removed.
    assert!(dir.join("base.ckpt").is_file() && dir.join("points.log").is_file());
}

/// A finished probe journal under `state/hostile` whose `task.json` is
/// then replaced by `tamper(task.json)`: `baton resume hostile` must exit
/// 125 printing nothing on stdout and one `baton: error:` line, which is
/// returned.
fn refused_spec(what: &str, tamper: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let id = "hostile";
    let o = baton_run([
        "run",
        "--state-dir",
        s(&state),
        "--name",
        id,
        s(&example("probe.wasm")),
        "--",
        "2",
    ]);
    o.assert_code(0);
    // The untouched journal resumes (as already finished): the refusal
    // below is the tampering's doing.
    baton_run(["resume", id, "--state-dir", s(&state)]).assert_code(0);
    let path = state.join(id).join("task.json");
    let good = std::fs::read(&path).expect("task.json");
    std::fs::write(&path, tamper(&good)).expect("write task.json");
    let o = baton_run(["resume", id, "--state-dir", s(&state)]);
    assert_eq!(
        o.status.code(),
        Some(EXIT_ERROR),
        "{what}: want exit 125\n--- stdout:\n{}\n--- stderr:\n{}",
        o.out(),
        o.stderr
    );
    assert!(o.stdout.is_empty(), "{what}: stdout: {}", o.out());
    o.single_error_line().to_string()
}

#[test]
fn hostile_specs_are_refused_with_one_error_line() {
    let line = refused_spec("not JSON", |_| b"this is { not JSON".to_vec());
    assert!(line.contains("task.json"), "does not name the file: {line}");

    let line = refused_spec("over 64 KiB", |_| {
        format!(
            r#"{{"version":2,"id":"hostile","junk":"{}"}}"#,
            "x".repeat(70 * 1024)
        )
        .into_bytes()
    });
    assert!(line.contains("too large"), "does not say why: {line}");
    assert!(line.len() < 1000, "the error line repeats the junk: {line}");

    // A real spec of this release with one policy word that does not parse.
    let line = refused_spec("a policy word that does not parse", |good| {
        let mut v: Value = serde_json::from_slice(good).expect("task.json is JSON");
        assert_eq!(v["version"], 2, "{v}");
        assert!(v["policy"]["migrate"].is_string(), "{v}");
        v["policy"]["migrate"] = Value::from("sometimes");
        serde_json::to_vec_pretty(&v).expect("encode")
    });
    assert!(
        line.contains("sometimes") || line.contains("migrat"),
        "does not say what is wrong: {line}"
    );
}
