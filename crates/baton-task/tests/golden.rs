//! Golden fixtures of the checkpoint encoding (DESIGN §5: "golden fixtures
//! guard every encoding").
//!
//! `tests/fixtures/golden/` holds, for each case below, checkpoints written
//! by an earlier build of this crate: `<case>.full.ckp` (a full checkpoint),
//! `<case>.delta.ckp` (a delta against it) and `<case>.txt`, what they must
//! decode to and what the task does from there (module, points, digests,
//! exit status, the stdout written after the full checkpoint). Each test
//! decodes both with today's decoder, applies the delta, restores a task
//! from each state and runs it to the end, and re-encodes the decoded
//! states, which must give the fixture's bytes exactly.
//!
//! So any change to the encoding fails here, including a new field in the
//! host state (postcard has no field names: an old journal would stop
//! decoding). That is the point: bump `checkpoint::VERSION` and keep a
//! decoder for the old version (then add fixtures for the new one beside the
//! old), or, if breaking old checkpoints is really intended, regenerate the
//! fixtures deliberately:
//!
//! ```text
//! BATON_BLESS=1 cargo test --release -p baton-task --test golden
//! ```
//!
//! which rewrites every file of `tests/fixtures/golden/` from a fresh run
//! (twice, checking the two runs encode identically) and then checks them
//! as usual. Review the diff and say why in the commit message.
//!
//! The tasks are example modules compiled into this test (`include_bytes!`),
//! so rebuilding `examples/*.wasm` changes their module digest and also
//! calls for regenerating.

mod support;

use std::path::PathBuf;

use baton_task::checkpoint::{self, Kind};
use baton_task::wasi::{ClockMode, Preopen};
use baton_task::{Digest, Program, State, StepOutcome, Task, TaskConfig};
use support::{engine, lossy, restore, run_to_end, Capture, Trace, MAX_STEPS};

/// One small, deterministic task and the points its fixtures are taken at.
struct Case {
    /// File name stem under `tests/fixtures/golden/`.
    name: &'static str,
    module: &'static [u8],
    /// Arguments after `argv[0]`.
    args: &'static [&'static str],
    /// Files of a directory preopened as `/out`, if the task wants one.
    out_dir: Option<&'static [(&'static str, &'static [u8])]>,
    /// The point of the full checkpoint.
    full_at: u64,
    /// The point of the delta (against the full checkpoint).
    delta_at: u64,
}

/// pi: random numbers, environment and stdin in the host state; 128 KiB of
/// memory.
const PI: Case = Case {
    name: "pi",
    module: include_bytes!("../../../examples/pi.wasm"),
    args: &["8", "100"],
    out_dir: None,
    full_at: 3,
    delta_at: 5,
};

/// render: a preopened directory, a loaded file and a file open for
/// writing across steps, so the virtual file system and the descriptor
/// table are in the host state.
const RENDER: Case = Case {
    name: "render",
    module: include_bytes!("../../../examples/render.wasm"),
    args: &["8", "6", "2"],
    out_dir: Some(&[("note.txt", b"golden fixture input\n")]),
    full_at: 1,
    delta_at: 2,
};

const HOW_TO_FIX: &str = "the checkpoint encoding changed: bump checkpoint::VERSION and keep a \
     decoder for the old version (old journals must still resume), or regenerate the fixtures \
     deliberately with BATON_BLESS=1 (see tests/golden.rs)";

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden"
    ))
}

fn program(case: &Case) -> Program {
    engine()
        .load(case.module)
        .unwrap_or_else(|e| panic!("{}: the module does not load: {e}", case.name))
}

/// The configuration the fixtures were made with. The preopen's host path
/// is not part of the state, so a fresh temporary directory is fine.
fn config(case: &Case, out_dir: Option<&tempfile::TempDir>) -> TaskConfig {
    let mut c = TaskConfig::new(&format!("{}.wasm", case.name));
    c.host.args.extend(case.args.iter().map(|a| a.to_string()));
    c.host.env = vec![("BATON_GOLDEN".to_string(), "1".to_string())];
    c.host.stdin = b"golden stdin\n".to_vec();
    c.host.seed = 7;
    c.host.clock = ClockMode::Virtual {
        start_realtime_ns: 1_700_000_000_000_000_000,
    };
    if let Some(d) = out_dir {
        c.host.preopens.push(Preopen {
            host: d.path().to_path_buf(),
            guest: "/out".to_string(),
        });
    }
    c
}

/// What [`make`] produced: the fixture files' contents.
#[derive(PartialEq)]
struct Made {
    full: Vec<u8>,
    delta: Vec<u8>,
    expected: String,
}

/// Runs `case` from creation: a full checkpoint at `full_at`, a delta at
/// `delta_at`, then on to the end, recording what the run did.
fn make(case: &Case) -> Made {
    let tmp = case.out_dir.map(|files| {
        let d = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(d.path().join(name), bytes).unwrap();
        }
        d
    });
    let program = program(case);
    let out = Capture::new();
    let mut task =
        Task::create(engine(), &program, config(case, tmp.as_ref()), out.sink()).unwrap();
    let step_to = |task: &mut Task, point: u64| {
        while task.point() < point {
            assert_eq!(task.step().unwrap(), StepOutcome::Continue);
        }
    };
    step_to(&mut task, case.full_at);
    let stdout_before = out.stdout().len();
    let full = task.checkpoint().unwrap();
    step_to(&mut task, case.delta_at);
    let delta = task.delta().unwrap();
    assert_eq!(delta.kind, Kind::Delta { base: full.digest });
    while task.finished().is_none() {
        assert!(task.point() < MAX_STEPS);
        task.step().unwrap();
    }
    let status = task.finished().unwrap();
    assert!(
        out.stderr().is_empty(),
        "{}: stderr: {}",
        case.name,
        lossy(&out.stderr())
    );
    let stdout = &out.stdout()[stdout_before..];
    let expected = format!(
        "# Golden checkpoint fixture, written by tests/golden.rs (BATON_BLESS=1):\n\
         # what {name}.full.ckp and {name}.delta.ckp decode to, and the run from there.\n\
         # module <digest> | full <point> <digest> | delta <point> <base> <digest>\n\
         # end <last point> <exit status> <digest> | stdout <written after the full point>\n\
         module {}\nfull {} {}\ndelta {} {} {}\nend {} {status} {}\nstdout {:?}\n",
        program.digest(),
        full.point,
        full.digest,
        delta.point,
        full.digest,
        delta.digest,
        task.point(),
        task.digest().unwrap(),
        lossy(stdout),
        name = case.name,
    );
    Made {
        full: full.bytes,
        delta: delta.bytes,
        expected,
    }
}

/// Rewrites `case`'s fixtures from two fresh runs that must agree.
fn bless(case: &Case) {
    let made = make(case);
    assert!(
        make(case) == made,
        "{}: two runs encode differently; the encoding is not deterministic",
        case.name
    );
    std::fs::create_dir_all(dir()).unwrap();
    std::fs::write(dir().join(format!("{}.full.ckp", case.name)), &made.full).unwrap();
    std::fs::write(dir().join(format!("{}.delta.ckp", case.name)), &made.delta).unwrap();
    std::fs::write(dir().join(format!("{}.txt", case.name)), &made.expected).unwrap();
}

/// The facts recorded in `<case>.txt`.
struct Expected {
    module: Digest,
    full: (u64, Digest),
    /// Point, base, digest.
    delta: (u64, Digest, Digest),
    /// Point, exit status, digest.
    end: (u64, i32, Digest),
    /// `{:?}` of the stdout written after the full checkpoint's point.
    stdout: String,
}

fn read_expected(case: &Case) -> Expected {
    let path = dir().join(format!("{}.txt", case.name));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (BATON_BLESS=1 makes it)", path.display()));
    let line = |key: &str| -> Vec<&str> {
        let rest = text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{}: no `{key}` line", path.display()));
        rest.split(' ').collect()
    };
    let digest = |s: &str| s.parse::<Digest>().unwrap();
    let (full, delta, end) = (line("full"), line("delta"), line("end"));
    Expected {
        module: digest(line("module")[0]),
        full: (full[0].parse().unwrap(), digest(full[1])),
        delta: (
            delta[0].parse().unwrap(),
            digest(delta[1]),
            digest(delta[2]),
        ),
        end: (
            end[0].parse().unwrap(),
            end[1].parse().unwrap(),
            digest(end[2]),
        ),
        stdout: line("stdout").join(" "),
    }
}

fn read_fixture(case: &Case, kind: &str) -> Vec<u8> {
    let path = dir().join(format!("{}.{kind}.ckp", case.name));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Restores `state` and runs it to the end; checks it ends as recorded.
fn finish(case: &Case, program: &Program, state: &State, want: &Expected) -> Trace {
    let out = Capture::new();
    let mut task = restore(program, state, &out);
    let trace = run_to_end(&mut task, &out);
    let (point, status, digest) = want.end;
    let ctx = format!("{} restored at point {}", case.name, state.point);
    assert_eq!(trace.last(), point, "{ctx}: last point");
    assert_eq!(trace.status, status, "{ctx}: exit status");
    assert_eq!(trace.digest(point), digest, "{ctx}: digest at the end");
    if state.point <= want.delta.0 {
        assert_eq!(
            trace.digest(want.delta.0),
            want.delta.2,
            "{ctx}: digest at the delta's point"
        );
    }
    assert!(
        trace.stderr.is_empty(),
        "{ctx}: stderr: {}",
        lossy(&trace.stderr)
    );
    trace
}

fn check(case: &Case) {
    if std::env::var_os("BATON_BLESS").is_some_and(|v| v == "1") {
        bless(case);
    }
    let want = read_expected(case);
    let program = program(case);
    assert_eq!(
        program.digest(),
        want.module,
        "{}: the example module is not the one the fixtures were made with; regenerate them \
         deliberately with BATON_BLESS=1 (see tests/golden.rs)",
        case.name
    );
    let (full_bytes, delta_bytes) = (read_fixture(case, "full"), read_fixture(case, "delta"));

    // Today's decoder reads the old bytes into the recorded states.
    let summary = checkpoint::summarize(&full_bytes)
        .unwrap_or_else(|e| panic!("{}: {e}; {HOW_TO_FIX}", case.name));
    assert_eq!(summary.kind, Kind::Full);
    let full = match checkpoint::decode(&full_bytes, &Default::default()) {
        Ok(checkpoint::Decoded::Full(s)) => s,
        Ok(checkpoint::Decoded::Delta(_)) => {
            panic!("{}: the full fixture decodes to a delta", case.name)
        }
        Err(e) => panic!(
            "{}: the full fixture does not decode: {e}; {HOW_TO_FIX}",
            case.name
        ),
    };
    assert_eq!(
        (full.point, full.digest().unwrap()),
        want.full,
        "{}: full checkpoint",
        case.name
    );
    assert_eq!(full.module, want.module);
    let delta = match checkpoint::decode(&delta_bytes, &Default::default()) {
        Ok(checkpoint::Decoded::Delta(d)) => d,
        Ok(checkpoint::Decoded::Full(_)) => {
            panic!("{}: the delta fixture decodes to a full state", case.name)
        }
        Err(e) => panic!(
            "{}: the delta fixture does not decode: {e}; {HOW_TO_FIX}",
            case.name
        ),
    };
    assert_eq!(
        (delta.point(), delta.base(), delta.digest()),
        want.delta,
        "{}: delta",
        case.name
    );
    let mut later = full.clone();
    delta
        .apply(&mut later)
        .unwrap_or_else(|e| panic!("{}: the delta does not apply: {e}", case.name));
    assert_eq!(
        (later.point, later.digest().unwrap()),
        (want.delta.0, want.delta.2)
    );

    // Both states continue to the recorded end, writing the recorded output.
    let from_full = finish(case, &program, &full, &want);
    assert_eq!(
        format!("{:?}", lossy(&from_full.stdout)),
        want.stdout,
        "{}: stdout after the full checkpoint",
        case.name
    );
    let from_delta = finish(case, &program, &later, &want);
    let at_delta = from_full.stdout_at[(want.delta.0 - want.full.0) as usize];
    assert!(
        from_full.stdout[at_delta..] == from_delta.stdout,
        "{}: stdout after the delta",
        case.name
    );

    // Today's encoder writes the very same bytes, every time.
    let again = checkpoint::encode_full(&full).unwrap();
    assert!(
        again.bytes == full_bytes,
        "{}: re-encoding the full state gives other bytes; {HOW_TO_FIX}",
        case.name
    );
    assert!(
        checkpoint::encode_full(&full).unwrap().bytes == again.bytes,
        "{}: encoding is not deterministic",
        case.name
    );
    let again = checkpoint::encode_delta(&full, &later).unwrap();
    assert!(
        again.bytes == delta_bytes,
        "{}: re-encoding the delta gives other bytes; {HOW_TO_FIX}",
        case.name
    );
    assert_eq!(again.kind, Kind::Delta { base: want.full.1 });
}

#[test]
fn pi_fixtures_decode_restore_and_reencode_identically() {
    check(&PI);
}

#[test]
fn render_fixtures_decode_restore_and_reencode_identically() {
    check(&RENDER);
}
