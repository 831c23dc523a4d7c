//! End-to-end tests of the `baton` command line (DESIGN §12, issue 2 items
//! 6–7): every test starts the real binary and checks what a user or a
//! script would see — stdout, stderr, exit status, files, events, journals.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const EXIT_TRAP: i32 = 134;
const EXIT_LIMIT: i32 = 124;
const EXIT_ERROR: i32 = 125;

// ---------------------------------------------------------------------------
// help
// ---------------------------------------------------------------------------

#[test]
fn help_exits_zero_and_lists_commands_and_options() {
    let top = baton_run(["--help"]);
    top.assert_code(0);
    let text = top.out();
    for cmd in ["run", "resume", "inspect", "demo"] {
        assert!(
            text.contains(cmd),
            "`baton --help` does not mention `{cmd}`:\n{text}"
        );
    }

    let run = baton_run(["run", "--help"]);
    run.assert_code(0);
    let text = run.out();
    for opt in [
        "--seed",
        "--env",
        "--dir",
        "--max-memory",
        "--max-step-time",
        "--state-dir",
        "--name",
        "--events",
    ] {
        assert!(
            text.contains(opt),
            "`baton run --help` does not mention {opt}:\n{text}"
        );
    }

    for sub in ["resume", "inspect", "demo"] {
        let o = baton_run([sub, "--help"]);
        o.assert_code(0);
        assert!(!o.stdout.is_empty(), "`baton {sub} --help` printed nothing");
    }
    let resume = baton_run(["resume", "--help"]);
    assert!(resume.out().contains("--state-dir"), "{}", resume.out());
}

// ---------------------------------------------------------------------------
// baton run: output and exit status of each example
// ---------------------------------------------------------------------------

#[test]
fn countdown_output_is_exact_and_status_passes_through() {
    let o = baton_run(["run", s(&example("countdown.wasm")), "--", "3", "7"]);
    o.assert_code(7);
    assert_eq!(
        o.out(),
        "countdown: 3\ncountdown: 2\ncountdown: 1\ncountdown: liftoff, exit status 7\n"
    );
    assert_eq!(o.stderr, "", "nothing of baton's on stderr for a clean run");

    let o = baton_run(["run", s(&example("countdown.wasm")), "--", "0"]);
    o.assert_code(0);
    assert_eq!(o.out(), "countdown: liftoff, exit status 0\n");
}

/// The lines hello prints, with its random line checked for shape and
/// returned separately.
fn hello_lines(out: &str) -> (Vec<String>, String) {
    let mut lines: Vec<String> = out.lines().map(String::from).collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("random: "))
        .unwrap_or_else(|| panic!("no random line in hello's output:\n{out}"));
    let random = lines.remove(i);
    let words: Vec<&str> = random["random: ".len()..].split(' ').collect();
    assert!(
        words.len() == 3
            && words
                .iter()
                .all(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit())),
        "bad random line: {random}"
    );
    lines.insert(i, "random: *".to_string());
    (lines, random)
}

#[test]
fn hello_sees_args_env_stdin_and_exit_status_only() {
    let mut cmd = baton([
        "run",
        s(&example("hello.wasm")),
        "--seed",
        "7",
        "--env",
        "NAME=you",
        "--env",
        "EMPTY=",
        "--",
        "exit",
        "3",
    ]);
    // Set in baton's own environment: the task must not see it.
    cmd.env("BATON_TEST_SECRET", "must-not-leak");
    let o = run_with_stdin(cmd, b"hi\n");
    o.assert_code(3);
    assert_eq!(o.stderr, "");
    let text = o.out();
    assert!(
        !text.contains("must-not-leak") && !text.contains("BATON_TEST_SECRET"),
        "environment leaked:\n{text}"
    );
    let (lines, _) = hello_lines(&text);
    assert_eq!(
        lines,
        [
            "hello from a WASI command",
            "argv[0] = hello.wasm",
            "argv[1] = exit",
            "argv[2] = 3",
            "env NAME=you",
            "env EMPTY=",
            "random: *",
            "stdin: 1 lines, 3 bytes, fnv1a64 33734a193006ba70",
            "exit status 3",
        ],
        "full output:\n{text}"
    );
}

#[test]
fn hello_with_empty_stdin_and_no_env() {
    let mut cmd = baton(["run", s(&example("hello.wasm"))]);
    cmd.env("BATON_TEST_SECRET", "must-not-leak");
    let o = run(cmd);
    o.assert_code(0);
    let (lines, _) = hello_lines(&o.out());
    assert_eq!(
        lines,
        [
            "hello from a WASI command",
            "argv[0] = hello.wasm",
            "random: *",
            "stdin: 0 lines, 0 bytes, fnv1a64 cbf29ce484222325",
            "exit status 0",
        ]
    );
}

#[test]
fn seed_determines_random_output_across_processes() {
    let pi = |seed: &str| {
        let o = baton_run([
            "run",
            s(&example("pi.wasm")),
            "--seed",
            seed,
            "--",
            "20",
            "2000",
        ]);
        o.assert_code(0);
        o.out()
    };
    let a = pi("7");
    let b = pi("7");
    let c = pi("8");
    assert_eq!(a, b, "same seed, different output");
    assert_ne!(a, c, "different seeds, same pi output");
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines.first(), Some(&"pi: 20 steps x 2000 samples"), "{a}");
    assert_eq!(lines.len(), 3, "header, step 10/20, result:\n{a}");
    assert!(
        lines[1].starts_with("step 10/20: 20000 samples, pi ~ 3."),
        "{a}"
    );
    assert!(
        lines[2].starts_with("pi ~ ") && lines[2].contains("after 40000 samples"),
        "{a}"
    );

    let hello = |seed: &str| {
        let o = baton_run(["run", s(&example("hello.wasm")), "--seed", seed]);
        o.assert_code(0);
        hello_lines(&o.out()).1
    };
    assert_eq!(hello("1"), hello("1"));
    assert_ne!(hello("1"), hello("2"));
}

#[test]
fn nbody_prints_the_documented_energies() {
    let o = baton_run(["run", s(&example("nbody.wasm"))]);
    o.assert_code(0);
    assert_eq!(
        o.out(),
        "nbody: 100 steps x 10000 iterations\nenergy before: -0.169075164\nenergy after:  -0.169086185\n"
    );
    assert_eq!(o.stderr, "");
}

#[test]
fn bigstate_small_is_deterministic_and_well_formed() {
    let big = |seed: &str| {
        let o = baton_run([
            "run",
            s(&example("bigstate.wasm")),
            "--seed",
            seed,
            "--",
            "8",
            "20",
            "64",
        ]);
        o.assert_code(0);
        o.out()
    };
    let a = big("1");
    assert_eq!(a, big("1"));
    assert_ne!(a, big("2"));
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines.len(), 5, "{a}");
    assert_eq!(
        lines[0],
        "bigstate: 8 MiB, 20 steps, 64 KiB changed per step"
    );
    for (line, n) in lines[1..4].iter().zip([0, 10, 20]) {
        let prefix = format!("step {n}: checksum ");
        assert!(
            line.starts_with(&prefix) && line.len() == prefix.len() + 16,
            "{a}"
        );
    }
    assert_eq!(lines[4], "bigstate: done");
}

#[test]
fn bigstate_allocation_fails_cleanly_under_max_memory() {
    let o = baton_run([
        "run",
        s(&example("bigstate.wasm")),
        "--max-memory",
        "32MiB",
        "--",
        "48",
        "2",
    ]);
    o.assert_code(1);
    assert_eq!(
        o.out(),
        "bigstate: 48 MiB, 2 steps, 256 KiB changed per step\n"
    );
    assert!(
        o.stderr.contains("bigstate: cannot allocate 48 MiB"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("baton: error:"),
        "not a baton error:\n{}",
        o.stderr
    );
}

// ---------------------------------------------------------------------------
// --dir
// ---------------------------------------------------------------------------

fn check_ppm(path: &Path, w: usize, h: usize) -> Vec<u8> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{} not written: {e}", path.display()));
    let header = format!("P6\n{w} {h}\n255\n");
    assert!(
        bytes.starts_with(header.as_bytes()),
        "bad PPM header: {:?}",
        &bytes[..bytes.len().min(20)]
    );
    assert_eq!(bytes.len(), header.len() + w * h * 3);
    bytes
}

#[test]
fn render_writes_its_file_into_the_host_dir() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let spec = format!("{}::/out", s(&out));
    let o = baton_run(["run", s(&example("render.wasm")), "--dir", &spec]);
    o.assert_code(0);
    assert_eq!(
        o.out(),
        "render: 320x240, 8 rows per step, writing /out/render.ppm\nrender: wrote /out/render.ppm (320x240, 230415 bytes)\n"
    );
    let bytes = check_ppm(&out.join("render.ppm"), 320, 240);
    assert_eq!(bytes.len(), 230_415);
    let names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["render.ppm"],
        "only the task's file in the host dir"
    );

    // Same bytes on a second run (no randomness in render).
    let out2 = tmp.path().join("out2");
    std::fs::create_dir(&out2).unwrap();
    let spec2 = format!("{}::/out", s(&out2));
    baton_run(["run", s(&example("render.wasm")), "--dir", &spec2]).assert_code(0);
    assert!(
        std::fs::read(out2.join("render.ppm")).unwrap() == bytes,
        "render differs between runs"
    );
}

#[test]
fn render_without_dir_says_so_and_exits_1() {
    let o = baton_run(["run", s(&example("render.wasm"))]);
    o.assert_code(1);
    assert!(o.stderr.contains("--dir"), "{}", o.stderr);
}

#[test]
fn render_file_appears_only_when_the_task_finishes() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let state = tmp.path().join("state");
    let events = tmp.path().join("ev.jsonl");
    let spec = format!("{}::/out", s(&out));
    let mut cmd = baton([
        "run",
        s(&example("render.wasm")),
        "--dir",
        &spec,
        "--state-dir",
        s(&state),
        "--name",
        "render-int",
        "--events",
        s(&events),
        "--",
        "640",
        "480",
        "2",
    ]);
    let mut cap = Capture::new();
    cap.attach(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let o = interrupt_after_points(&mut child, &mut cap, &events, 3);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "files written to the host dir before the task finished: {left:?}"
    );

    let o2 = baton_run(["resume", "render-int", "--state-dir", s(&state)]);
    o2.assert_code(0);
    assert_eq!(
        format!("{}{}", o.out(), o2.out()),
        "render: 640x480, 2 rows per step, writing /out/render.ppm\nrender: wrote /out/render.ppm (640x480, 921615 bytes)\n"
    );
    check_ppm(&out.join("render.ppm"), 640, 480);
}

// ---------------------------------------------------------------------------
// baton's own errors: exit 125 and one line
// ---------------------------------------------------------------------------

#[test]
fn missing_module_is_one_error_line() {
    let tmp = tempdir();
    let path = tmp.path().join("nope.wasm");
    let o = baton_run(["run", s(&path)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(
        line.contains("nope.wasm") && line.to_lowercase().contains("no such file"),
        "{line}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn non_wasm_and_truncated_modules_are_one_error_line() {
    let tmp = tempdir();
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "this is not a wasm module\n").unwrap();
    let o = baton_run(["run", s(&text)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(
        line.contains("notes.txt") && line.contains("not a WebAssembly module"),
        "{line}"
    );
    assert!(o.stdout.is_empty());

    let empty = tmp.path().join("empty.wasm");
    std::fs::write(&empty, b"").unwrap();
    let o = baton_run(["run", s(&empty)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(line.contains("empty.wasm"), "{line}");

    let whole = std::fs::read(example("hello.wasm")).unwrap();
    let cut = tmp.path().join("cut.wasm");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let o = baton_run(["run", s(&cut)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line().to_lowercase();
    assert!(
        line.contains("cut.wasm")
            && (line.contains("invalid")
                || line.contains("truncated")
                || line.contains("unexpected end")),
        "{line}"
    );
}

/// A minimal valid module importing `env::foo: [] -> []`.
const FOREIGN_IMPORT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: [] -> []
    0x02, 0x0b, 0x01, 0x03, b'e', b'n', b'v', 0x03, b'f', b'o', b'o', 0x00,
    0x00, // import env::foo
];

/// A minimal valid module with a memory and nothing to run.
const NO_ENTRY: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, min 1
    0x07, 0x0a, 0x01, 0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, // export "memory"
];

/// A command the suspend transform cannot handle (here: a block with a
/// parameter) still runs, as one step, and baton says so and why.
#[test]
fn a_command_the_transform_refuses_runs_as_one_step_with_a_warning() {
    // (module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
    //   (memory (export "memory") 1)
    //   (func (export "_start") (i32.const 1) (block (param i32) (drop))
    //     (loop $l (br_if $l (i32.const 0)))))
    const MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x60, 0x01, 0x7f, 0x00,
        0x60, 0x00, 0x00, 0x02, 0x24, 0x01, 0x16, 0x77, 0x61, 0x73, 0x69, 0x5f, 0x73, 0x6e, 0x61,
        0x70, 0x73, 0x68, 0x6f, 0x74, 0x5f, 0x70, 0x72, 0x65, 0x76, 0x69, 0x65, 0x77, 0x31, 0x09,
        0x70, 0x72, 0x6f, 0x63, 0x5f, 0x65, 0x78, 0x69, 0x74, 0x00, 0x00, 0x03, 0x02, 0x01, 0x01,
        0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79,
        0x02, 0x00, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00, 0x01, 0x0a, 0x11, 0x01, 0x0f,
        0x00, 0x41, 0x01, 0x02, 0x00, 0x1a, 0x0b, 0x03, 0x40, 0x41, 0x00, 0x0d, 0x00, 0x0b, 0x0b,
    ];
    let tmp = tempdir();
    let module = tmp.path().join("params.wasm");
    std::fs::write(&module, MODULE).unwrap();
    let o = baton_run(["run", s(&module)]);
    o.assert_code(0);
    assert!(
        o.stderr.contains("runs as one step") && o.stderr.contains("blocks with parameters"),
        "{}",
        o.stderr
    );
}

#[test]
fn unsupported_import_and_shapeless_module_are_one_error_line() {
    let tmp = tempdir();
    let path = tmp.path().join("foreign.wasm");
    std::fs::write(&path, FOREIGN_IMPORT).unwrap();
    let o = baton_run(["run", s(&path)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(
        line.contains("env::foo"),
        "the error must name the import: {line}"
    );

    let path = tmp.path().join("noentry.wasm");
    std::fs::write(&path, NO_ENTRY).unwrap();
    let o = baton_run(["run", s(&path)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(
        line.contains("baton_step") || line.contains("_start"),
        "must say what is missing: {line}"
    );
}

#[test]
fn bad_dir_and_env_values_are_one_error_line() {
    let tmp = tempdir();
    let hello = example("hello.wasm");
    let missing = format!("{}::/x", s(&tmp.path().join("absent")));
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let not_dir = format!("{}::/x", s(&file));
    let cases: [(&[&str], &str); 6] = [
        (&["--dir", "nocolons"], "--dir"),
        (&["--dir", "::/guest"], "--dir"),
        (&["--dir", &missing], "absent"),
        (&["--dir", &not_dir], "not a directory"),
        (&["--env", "NOEQUALS"], "--env"),
        (&["--env", "=value"], "--env"),
    ];
    for (opts, needle) in cases {
        let mut args = vec!["run", s(&hello)];
        args.extend_from_slice(opts);
        let o = baton_run(&args);
        o.assert_code(EXIT_ERROR);
        let line = o.single_error_line();
        assert!(
            line.contains(needle),
            "{opts:?}: error line does not mention `{needle}`: {line}"
        );
        assert!(o.stdout.is_empty(), "{opts:?}: the task ran");
    }
}

#[test]
fn bad_size_and_duration_values_are_one_error_line() {
    let hello = example("hello.wasm");
    for (opt, value) in [
        ("--max-memory", "12parsecs"),
        ("--max-memory", "1.5GiB"),
        ("--max-step-time", "5"),
        ("--max-step-time", "fast"),
        ("--seed", "minus-one"),
    ] {
        let o = baton_run(["run", s(&hello), opt, value]);
        o.assert_code(EXIT_ERROR);
        let line = o.single_error_line();
        assert!(
            line.contains(opt) && line.contains(value),
            "{opt} {value}: {line}"
        );
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn unknown_option_is_an_error_with_status_125() {
    let o = baton_run(["run", s(&example("hello.wasm")), "--frobnicate"]);
    o.assert_code(EXIT_ERROR);
    assert!(o.stderr.contains("--frobnicate"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
}

#[test]
fn unwritable_events_file_is_one_error_line() {
    let tmp = tempdir();
    let ev = tmp.path().join("no/such/dir/ev.jsonl");
    let o = baton_run([
        "run",
        s(&example("countdown.wasm")),
        "--events",
        s(&ev),
        "--",
        "1",
    ]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(line.contains("ev.jsonl"), "{line}");
    assert!(
        o.stdout.is_empty(),
        "the task ran although its events cannot be written"
    );
}

// ---------------------------------------------------------------------------
// limits and hostile tasks
// ---------------------------------------------------------------------------

#[test]
fn endless_step_is_stopped_by_max_step_time() {
    let t = Instant::now();
    let o = baton_run([
        "run",
        s(&example("hostile/spin.wasm")),
        "--max-step-time",
        "300ms",
    ]);
    let took = t.elapsed();
    o.assert_code(EXIT_LIMIT);
    assert_eq!(
        o.out(),
        "spin: step 1\nspin: step 2\nspin: spinning forever now\n"
    );
    let line = o.single_error_line();
    assert!(line.contains("--max-step-time"), "{line}");
    assert!(
        took < Duration::from_secs(15),
        "took {took:?} to stop a 300ms step"
    );
}

#[test]
fn memory_bomb_is_held_at_max_memory() {
    let o = baton_run([
        "run",
        s(&example("hostile/membomb.wasm")),
        "--max-memory",
        "64MiB",
    ]);
    o.assert_code(0);
    let text = o.out();
    let line = text
        .lines()
        .find(|l| l.starts_with("membomb: malloc returned NULL after "))
        .unwrap_or_else(|| panic!("no NULL line:\n{text}"));
    let n: u64 = line["membomb: malloc returned NULL after ".len()..]
        .trim_end_matches(" MiB")
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(
        (48..64).contains(&n),
        "{n} MiB allocated under a 64 MiB limit"
    );
    assert!(!o.stderr.contains("baton: error:"), "{}", o.stderr);

    // Per-step growth: same outcome, and the steps are reported.
    let o = baton_run([
        "run",
        s(&example("hostile/membomb.wasm")),
        "--max-memory",
        "64MiB",
        "--",
        "16",
    ]);
    o.assert_code(0);
    let text = o.out();
    assert!(text.contains("membomb: step 1: 16 MiB so far"), "{text}");
    assert!(
        text.contains("membomb: malloc returned NULL after "),
        "{text}"
    );
}

#[test]
fn max_memory_below_the_initial_memory_is_a_limit_error() {
    let o = baton_run([
        "run",
        s(&example("countdown.wasm")),
        "--max-memory",
        "64KiB",
    ]);
    o.assert_code(EXIT_LIMIT);
    let line = o.single_error_line();
    assert!(line.contains("--max-memory"), "{line}");
    assert!(o.stdout.is_empty());
}

#[test]
fn trap_reports_the_function_and_exits_134() {
    let o = baton_run(["run", s(&example("hostile/trap.wasm"))]);
    o.assert_code(EXIT_TRAP);
    assert_eq!(
        o.out(),
        "trap: step 1\ntrap: step 2\ntrap: about to trap in explode()\n"
    );
    let line = o.single_error_line();
    assert!(
        line.contains("explode") && line.contains("compute_answer"),
        "{line}"
    );
}

#[test]
fn stack_bombs_trap_with_the_function_named() {
    for (arg, func) in [("native", "recurse_native"), ("shadow", "recurse_shadow")] {
        let o = baton_run(["run", s(&example("hostile/stackbomb.wasm")), "--", arg]);
        o.assert_code(EXIT_TRAP);
        assert!(!o.out().contains("survived"), "{arg}: {}", o.out());
        let line = o.the_error_line();
        assert!(line.contains(func), "{arg}: {line}");
    }
}

// ---------------------------------------------------------------------------
// --events
// ---------------------------------------------------------------------------

fn pi_with_events(dir: &Path, file: &str, seed: &str) -> (Output, Vec<Value>) {
    let ev = dir.join(file);
    let o = baton_run([
        "run",
        s(&example("pi.wasm")),
        "--name",
        "pi-ev",
        "--seed",
        seed,
        "--events",
        s(&ev),
        "--",
        "30",
        "20000",
    ]);
    o.assert_code(0);
    (o, read_events(&ev))
}

#[test]
fn events_are_json_lines_with_started_points_finished() {
    let tmp = tempdir();
    let (o, events) = pi_with_events(tmp.path(), "a.jsonl", "3");
    assert!(
        o.out().starts_with("pi: 30 steps x 20000 samples\n"),
        "events must not go to stdout"
    );
    assert!(!o.out().contains("t_ms"), "events on stdout");

    assert_eq!(events.first().unwrap()["event"], "started", "{events:#?}");
    let started = only_event(&events, "started");
    assert_eq!(started["task"], "pi-ev");
    assert_eq!(started["where"], "local");
    let finished = only_event(&events, "finished");
    assert_eq!(events.last().unwrap()["event"], "finished");
    assert_eq!(finished["exit_status"], 0);
    assert_eq!(finished["where"], "local");
    let digest = finished["digest"].as_str().expect("finished.digest");
    assert!(digest.len() >= 16, "{digest}");

    let points: Vec<&Value> = events.iter().filter(|e| e["event"] == "point").collect();
    assert!(!points.is_empty(), "no point events");
    let mut last_n = 0;
    for p in &points {
        let n = p["n"].as_u64().expect("point.n");
        assert!(n > last_n, "point numbers must increase: {points:#?}");
        last_n = n;
        assert!(
            p["digest"].as_str().is_some_and(|d| !d.is_empty()),
            "point without digest: {p}"
        );
        assert_eq!(p["where"], "local");
    }
    assert_eq!(
        finished["points"].as_u64(),
        Some(last_n),
        "finished.points is the last point"
    );
    assert_eq!(last_n, 30, "pi with 30 steps has 30 points");
    assert_eq!(
        points.last().unwrap()["digest"],
        finished["digest"],
        "last point's digest is the final digest"
    );
    let mut t = 0;
    for e in &events {
        let tm = e["t_ms"].as_u64().unwrap();
        assert!(tm >= t, "t_ms goes backwards");
        t = tm;
    }

    // Same seed in another process: same final digest, same digest at any
    // point both logged.
    let (_, again) = pi_with_events(tmp.path(), "b.jsonl", "3");
    assert_eq!(only_event(&again, "finished")["digest"], finished["digest"]);
    for p in again.iter().filter(|e| e["event"] == "point") {
        if let Some(q) = points.iter().find(|q| q["n"] == p["n"]) {
            assert_eq!(
                q["digest"], p["digest"],
                "digest differs at point {}",
                p["n"]
            );
        }
    }
    // Another seed: another final state.
    let (_, other) = pi_with_events(tmp.path(), "c.jsonl", "4");
    assert_ne!(only_event(&other, "finished")["digest"], finished["digest"]);
}

// ---------------------------------------------------------------------------
// journal and resume
// ---------------------------------------------------------------------------

#[test]
fn journaled_run_logs_every_point_and_resume_of_finished_task_reports_it() {
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let ev = tmp.path().join("ev.jsonl");
    let o = baton_run([
        "run",
        s(&example("countdown.wasm")),
        "--state-dir",
        s(&state),
        "--name",
        "cd",
        "--events",
        s(&ev),
        "--sync-every",
        "0",
        "--",
        "5",
        "7",
    ]);
    o.assert_code(7);
    assert_eq!(o.out().lines().count(), 6, "{}", o.out());
    assert_eq!(o.stderr, "", "named journaled run: nothing on stderr");
    let events = read_events(&ev);
    let ns: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "point")
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4, 5], "with a journal every point is logged");
    let finished = only_event(&events, "finished");
    assert_eq!(finished["exit_status"], 7);
    assert_eq!(finished["points"], 5);

    let rec = journal_finished(&state, "cd");
    assert_eq!(rec["exit_status"], 7);
    assert_eq!(rec["digest"], finished["digest"]);

    let r = baton_run(["resume", "cd", "--state-dir", s(&state)]);
    r.assert_code(7);
    assert!(r.stdout.is_empty(), "nothing re-run: {}", r.out());
    assert!(r.stderr.contains("already finished"), "{}", r.stderr);

    // The id is taken now.
    let again = baton_run([
        "run",
        s(&example("countdown.wasm")),
        "--state-dir",
        s(&state),
        "--name",
        "cd",
    ]);
    again.assert_code(EXIT_ERROR);
    let line = again.single_error_line();
    assert!(
        line.contains("cd") && line.contains("baton resume"),
        "{line}"
    );
    assert!(again.stdout.is_empty());
}

#[test]
fn resume_of_unknown_task_is_one_error_line() {
    let tmp = tempdir();
    let o = baton_run(["resume", "ghost", "--state-dir", s(tmp.path())]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(line.contains("ghost"), "{line}");
    let o = baton_run(["resume", "../escape", "--state-dir", s(tmp.path())]);
    o.assert_code(EXIT_ERROR);
    o.single_error_line();
}

#[test]
fn made_up_id_is_reported_on_stderr_and_in_events() {
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let ev = tmp.path().join("ev.jsonl");
    let o = baton_run([
        "run",
        s(&example("countdown.wasm")),
        "--state-dir",
        s(&state),
        "--events",
        s(&ev),
        "--",
        "2",
    ]);
    o.assert_code(0);
    assert_eq!(
        o.out(),
        "countdown: 2\ncountdown: 1\ncountdown: liftoff, exit status 0\n"
    );
    let events = read_events(&ev);
    let id = only_event(&events, "started")["task"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("countdown"), "{id}");
    assert!(
        o.stderr.contains(&id),
        "the made-up id must be shown: {}",
        o.stderr
    );
    assert!(state.join(&id).join("task.json").is_file());
    let r = baton_run(["resume", &id, "--state-dir", s(&state)]);
    r.assert_code(0);
}

// --- the big one: kill -9, Ctrl-C and damaged journals on bigstate --------

/// A bigstate configuration for the stop-and-resume tests.
struct Big {
    /// Index into the cache of reference runs.
    slot: usize,
    /// bigstate's arguments: MiB, steps, KiB changed per step.
    args: [&'static str; 3],
    /// The number of steps (= the final point).
    steps: u64,
}

/// 48 MiB, 100 steps: the journal's log never outgrows the base.
const BIG: Big = Big {
    slot: 0,
    args: ["48", "100", "256"],
    steps: 100,
};

/// 8 MiB, 1 MiB changed per step: the journal writes a new base every few
/// points, so kills also land in and around base rewrites.
const BIG_REBASING: Big = Big {
    slot: 1,
    args: ["8", "100", "1024"],
    steps: 100,
};

const BIG_SEED: &str = "11";

/// An uninterrupted run of bigstate: stdout and final digest.
struct Reference {
    stdout: String,
    digest: String,
    points: u64,
}

/// The uninterrupted run of `big`, made once per test process (without a
/// journal, so it also shows that journaling does not change the result).
fn reference(big: &Big) -> &'static Reference {
    static REFS: [OnceLock<Reference>; 2] = [OnceLock::new(), OnceLock::new()];
    REFS[big.slot].get_or_init(|| {
        let tmp = tempdir();
        let ev = tmp.path().join("ref.jsonl");
        let module = example("bigstate.wasm");
        let mut args = vec![
            "run",
            s(&module),
            "--seed",
            BIG_SEED,
            "--events",
            s(&ev),
            "--",
        ];
        args.extend(big.args);
        let o = baton_run(&args);
        o.assert_code(0);
        assert!(o.out().ends_with("bigstate: done\n"), "{}", o.out());
        let events = read_events(&ev);
        let fin = only_event(&events, "finished");
        assert_eq!(fin["points"].as_u64(), Some(big.steps));
        Reference {
            stdout: o.out(),
            digest: fin["digest"].as_str().unwrap().to_string(),
            points: fin["points"].as_u64().unwrap(),
        }
    })
}

/// Starts a bigstate run with the reference's arguments, journaling every
/// point (these tests stop it at chosen points).
fn start_big(
    big: &Big,
    state: &Path,
    id: &str,
    events: &Path,
    cap: &Capture,
) -> std::process::Child {
    start_big_syncing(big, state, id, events, cap, "0")
}

/// Starts a journaled bigstate run with `--sync-every sync_every`.
fn start_big_syncing(
    big: &Big,
    state: &Path,
    id: &str,
    events: &Path,
    cap: &Capture,
    sync_every: &str,
) -> std::process::Child {
    let module = example("bigstate.wasm");
    let mut args = vec![
        "run",
        s(&module),
        "--seed",
        BIG_SEED,
        "--state-dir",
        s(state),
        "--name",
        id,
        "--events",
        s(events),
        "--sync-every",
        sync_every,
        "--",
    ];
    args.extend(big.args);
    let mut cmd = baton(&args);
    cap.attach(&mut cmd);
    cmd.spawn().expect("cannot start baton")
}

/// bigstate's output up to and including point `p` (the output of
/// `_initialize` and of steps 1..=p), from an uninterrupted run's output.
fn big_output_upto(big: &Big, full: &str, p: u64) -> String {
    let mut out = String::new();
    for line in full.split_inclusive('\n') {
        let step = line
            .strip_prefix("step ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse::<u64>().ok());
        let belongs = match step {
            Some(n) => n <= p,
            // "bigstate: done" is printed by the last step.
            None if line == "bigstate: done\n" => p >= big.steps,
            None => true,
        };
        if belongs {
            out.push_str(line);
        }
    }
    assert!(
        full.starts_with(&out),
        "bigstate's output is not ordered by step"
    );
    out
}

/// Resumes `id` and checks the contract: the resumed run starts at the
/// point it reports, logs every point after it, prints exactly what follows
/// that point and finishes with the reference digest (in its events and in
/// `finished.json`). Returns the point resumed from and the output.
fn resume_and_check(big: &Big, state: &Path, id: &str, events: &Path) -> (u64, Output) {
    let r = reference(big);
    let o = baton_run(["resume", id, "--state-dir", s(state), "--events", s(events)]);
    o.assert_code(0);
    let evs = read_events(events);
    let started = only_event(&evs, "started");
    assert_eq!(started["task"], id);
    let from = started["resumed_from"]
        .as_u64()
        .unwrap_or_else(|| panic!("started event of a resume without resumed_from: {started}"));
    assert!(
        o.stderr.contains(&format!("from point {from}")),
        "resume should say where it continues: {}",
        o.stderr
    );
    let ns: Vec<u64> = evs
        .iter()
        .filter(|e| e["event"] == "point")
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        (from + 1..=big.steps).collect::<Vec<_>>(),
        "points logged by the resumed run"
    );
    let fin = only_event(&evs, "finished");
    assert_eq!(
        fin["digest"].as_str(),
        Some(r.digest.as_str()),
        "resumed run's final digest differs"
    );
    assert_eq!(fin["points"].as_u64(), Some(r.points));
    assert_eq!(fin["exit_status"], 0);
    let rec = journal_finished(state, id);
    assert_eq!(
        rec["digest"].as_str(),
        Some(r.digest.as_str()),
        "finished.json digest differs"
    );
    // The journal records which points' output was shown: a resume shows
    // what follows the point it continues from or, if output of later
    // steps was shown before the stop (the mark beside the log, which a
    // damaged log's cut does not take back), what follows the last of them.
    let out = o.out();
    assert!(
        (from..=big.steps).any(|p| r.stdout[big_output_upto(big, &r.stdout, p).len()..] == out),
        "resumed from point {from}: stdout must be exactly what follows that point or a later one:\n{out}"
    );
    (from, o)
}

#[test]
fn kill_9_at_several_moments_then_resume_gives_identical_results() {
    // Kill after this many point events have appeared.
    let rounds = [
        (&BIG, 3usize),
        (&BIG, 37),
        (&BIG, 81),
        (&BIG_REBASING, 9),
        (&BIG_REBASING, 52),
    ];
    for (round, (big, after_points)) in rounds.into_iter().enumerate() {
        let r = reference(big);
        let tmp = tempdir();
        let state = tmp.path().join("state");
        let ev1 = tmp.path().join("run.jsonl");
        let ev2 = tmp.path().join("resume.jsonl");
        let id = format!("big-kill-{round}");
        let mut cap = Capture::new();
        let mut child = start_big(big, &state, &id, &ev1, &cap);
        wait_for_points(&mut child, &ev1, after_points, Duration::from_secs(60));
        signal(&child, libc::SIGKILL);
        let status = wait_bounded(&mut child, Duration::from_secs(10), "killed baton");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: baton was not killed: {status:?}"
        );
        let first = cap.read(status);
        let seen = read_events(&ev1);
        let last_seen = seen
            .iter()
            .filter(|e| e["event"] == "point")
            .map(|e| e["n"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(
            seen.iter().all(|e| e["event"] != "finished"),
            "round {round}: it finished before the kill"
        );

        let (from, resumed) = resume_and_check(big, &state, &id, &ev2);
        // The journal is written before the point's event: it holds at
        // least the last point logged, and at most the one after it.
        assert!(
            (last_seen..=last_seen + 1).contains(&from),
            "round {round}: resumed from {from}, last point logged {last_seen}"
        );
        // What the first run showed is the output up to the journaled point,
        // or up to the next one (the step during which it died).
        let a = first.out();
        let upto = big_output_upto(big, &r.stdout, from);
        let upto_next = big_output_upto(big, &r.stdout, from + 1);
        assert!(
            a == upto || a == upto_next,
            "round {round}: killed run's stdout is not the output up to point {from} or {}:\n{a}",
            from + 1
        );
        // Hence, as the journal notes which output was shown: first ++
        // resumed == uninterrupted, nothing twice, nothing lost.
        let merged = format!("{a}{}", resumed.out());
        assert!(
            merged == r.stdout,
            "round {round}: combined output differs from the uninterrupted run"
        );
    }
}

#[test]
fn ctrl_c_without_a_journal_says_how_to_make_it_resumable() {
    let tmp = tempdir();
    let ev = tmp.path().join("ev.jsonl");
    let module = example("bigstate.wasm");
    let mut cmd = baton([
        "run",
        s(&module),
        "--events",
        s(&ev),
        "--",
        "16",
        "3000",
        "1024",
    ]);
    let mut cap = Capture::new();
    cap.attach(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let o = interrupt_after_points(&mut child, &mut cap, &ev, 2);
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("baton: stopped at point"))
        .unwrap_or_else(|| panic!("no stop line:\n{}", o.stderr));
    assert!(line.contains("--state-dir"), "{line}");
    assert!(!o.out().contains("bigstate: done"), "{}", o.out());
    assert!(read_events(&ev).iter().all(|e| e["event"] != "finished"));
}

/// With `--sync-every auto` only some points are journaled, each sync
/// carrying every page changed since the last: a kill -9 in the middle and
/// a resume still give, together, exactly the uninterrupted output (the
/// resumed run shows what follows a step boundary at or after the point
/// it continues from), and the final digest.
#[test]
fn kill_9_of_a_batched_journal_then_resume_gives_the_same_output() {
    let r = reference(&BIG);
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let ev1 = tmp.path().join("run.jsonl");
    let ev2 = tmp.path().join("resume.jsonl");
    let mut cap = Capture::new();
    let mut child = start_big_syncing(&BIG, &state, "big-batched", &ev1, &cap, "auto");
    wait_for_points(&mut child, &ev1, 3, Duration::from_secs(60));
    signal(&child, libc::SIGKILL);
    let status = wait_bounded(&mut child, Duration::from_secs(10), "killed baton");
    let first = cap.read(status);
    let ns: Vec<u64> = read_events(&ev1)
        .iter()
        .filter(|e| e["event"] == "point")
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert!(
        ns.windows(2).all(|w| w[0] < w[1]) && ns.len() >= 3,
        "points journaled in order: {ns:?}"
    );
    let o = baton_run([
        "resume",
        "big-batched",
        "--state-dir",
        s(&state),
        "--events",
        s(&ev2),
    ]);
    o.assert_code(0);
    let resumed = read_events(&ev2);
    let fin = only_event(&resumed, "finished");
    assert_eq!(fin["digest"].as_str(), Some(r.digest.as_str()));
    assert_eq!(fin["points"].as_u64(), Some(r.points));
    let (before, after) = (first.out(), o.out());
    assert!(
        r.stdout.starts_with(&before),
        "killed run's output is a prefix"
    );
    assert!(r.stdout.ends_with(&after), "resumed output is a suffix");
    assert!(
        before.len() + after.len() >= r.stdout.len(),
        "nothing lost between the two runs"
    );
    let boundary = r.stdout.len() - after.len();
    assert!(
        (0..=BIG.steps).any(|p| big_output_upto(&BIG, &r.stdout, p).len() == boundary),
        "the resumed output starts at a step boundary"
    );
}

#[test]
fn ctrl_c_stops_at_a_point_and_resume_completes() {
    let r = reference(&BIG);
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let ev1 = tmp.path().join("run.jsonl");
    let ev2 = tmp.path().join("resume.jsonl");
    let mut cap = Capture::new();
    let mut child = start_big(&BIG, &state, "big-int", &ev1, &cap);
    let first = interrupt_after_points(&mut child, &mut cap, &ev1, 15);
    assert!(
        first.stderr.contains("baton resume big-int"),
        "Ctrl-C must say how to continue: {}",
        first.stderr
    );
    let seen = read_events(&ev1);
    assert!(seen.iter().all(|e| e["event"] != "finished"));
    let last = seen
        .iter()
        .filter(|e| e["event"] == "point")
        .map(|e| e["n"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        first.stderr.contains(&format!("point {last}")),
        "stopped at point {last}: {}",
        first.stderr
    );

    // inspect shows the point a resume would continue from.
    let insp = baton_run(["inspect", s(&state.join("big-int"))]);
    insp.assert_code(0);
    let text = insp.out();
    assert!(
        text.contains("big-int") && text.contains("stopped"),
        "{text}"
    );
    let want = last.to_string();
    assert!(
        text.lines()
            .any(|l| l.contains("point")
                && l.split(|c: char| !c.is_ascii_digit()).any(|w| w == want)),
        "inspect of the journal does not show the newest point {last}:\n{text}"
    );

    let (from, resumed) = resume_and_check(&BIG, &state, "big-int", &ev2);
    assert_eq!(
        from, last,
        "Ctrl-C stops at a point: resume continues from exactly there"
    );
    assert_eq!(
        format!("{}{}", first.out(), resumed.out()),
        r.stdout,
        "after Ctrl-C nothing is shown twice and nothing is lost"
    );
}

/// Copies a task's journal directory.
fn copy_journal(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The kind byte of a delta entry in a task's `log`.
const LOG_DELTA: u8 = 3;
/// The kind byte of a full state entry.
const LOG_FULL: u8 = 2;

/// The entries of a task's `log` (each `[len: u32][crc: u32][kind: u8]`
/// then `len` bytes) as (kind, byte range).
fn log_entries(log: &[u8]) -> Vec<(u8, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 9 <= log.len() {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(pos + 9 + len <= log.len(), "log is torn at byte {pos}");
        out.push((log[pos + 8], pos..pos + 9 + len));
        pos += 9 + len;
    }
    assert_eq!(pos, log.len(), "log has trailing bytes");
    out
}

/// The delta entries of a task's `log`: one per point after the first.
fn log_deltas(log: &[u8]) -> Vec<std::ops::Range<usize>> {
    log_entries(log)
        .into_iter()
        .filter(|(k, _)| *k == LOG_DELTA)
        .map(|(_, r)| r)
        .collect()
}

/// An interrupted bigstate journal (stopped by Ctrl-C after `points`
/// points), with the point it stopped at.
fn interrupted_big(state: &Path, id: &str, events: &Path, points: usize) -> u64 {
    let mut cap = Capture::new();
    let mut child = start_big(&BIG, state, id, events, &cap);
    interrupt_after_points(&mut child, &mut cap, events, points);
    read_events(events)
        .iter()
        .filter(|e| e["event"] == "point")
        .map(|e| e["n"].as_u64().unwrap())
        .max()
        .unwrap()
}

#[test]
fn damaged_journal_files_on_resume() {
    let r = reference(&BIG);
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let stopped = interrupted_big(&state, "big-dmg", &tmp.path().join("run.jsonl"), 12);
    let journal = state.join("big-dmg");
    let log_path = journal.join("log");
    let log = std::fs::read(&log_path).unwrap();
    let deltas = log_deltas(&log);
    assert_eq!(
        deltas.len() as u64,
        stopped,
        "one delta per point after the first (at point 0)"
    );

    // Copies for the other cases.
    let state_b = tmp.path().join("state-b");
    copy_journal(&journal, &state_b.join("big-dmg"));
    let state_c = tmp.path().join("state-c");
    copy_journal(&journal, &state_c.join("big-dmg"));

    // A damaged delta in the middle of the log: a warning naming the log,
    // then on from the last good point before it.
    let k = deltas.len() / 2;
    let mut damaged = log.clone();
    let mid = (deltas[k].start + 9 + deltas[k].end) / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&log_path, &damaged).unwrap();
    let (from, o) = resume_and_check(&BIG, &state, "big-dmg", &tmp.path().join("resume.jsonl"));
    let warn = o
        .stderr
        .lines()
        .find(|l| l.starts_with("baton: warning:"))
        .unwrap_or_else(|| panic!("no warning about the damaged log:\n{}", o.stderr));
    assert!(warn.contains("log.damaged"), "{warn}");
    assert_eq!(
        from, k as u64,
        "continues from the point before the damaged delta"
    );
    assert!(r.stdout.ends_with(&o.out()));

    // A damaged first state: error 125, one line saying there is nothing
    // to continue from; nothing runs.
    let log_b = state_b.join("big-dmg").join("log");
    let bytes = std::fs::read(&log_b).unwrap();
    let (kind, first) = log_entries(&bytes)[0].clone();
    assert_eq!(
        kind, LOG_FULL,
        "the log starts with the full state at point 0"
    );
    let mut bad = bytes.clone();
    bad[(first.start + first.end) / 2] ^= 0xff;
    std::fs::write(&log_b, &bad).unwrap();
    let o = baton_run(["resume", "big-dmg", "--state-dir", s(&state_b)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(line.contains("no usable state"), "{line}");
    assert!(o.stdout.is_empty(), "nothing may run from a damaged log");

    // A missing log: the same, naming it.
    std::fs::remove_file(state_c.join("big-dmg").join("log")).unwrap();
    let o = baton_run(["resume", "big-dmg", "--state-dir", s(&state_c)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(line.contains("log"), "{line}");
    assert!(o.stdout.is_empty());
}

#[test]
fn damaged_length_in_the_middle_of_the_log_is_warned_about() {
    let tmp = tempdir();
    let state = tmp.path().join("state");
    let stopped = interrupted_big(&state, "big-len", &tmp.path().join("run.jsonl"), 8);
    let log_path = state.join("big-len").join("log");
    let mut log = std::fs::read(&log_path).unwrap();
    let deltas = log_deltas(&log);
    assert!(deltas.len() >= 4, "{stopped} points");
    // The length of the second delta now points far beyond the file.
    log[deltas[1].start + 2] ^= 0x01;
    std::fs::write(&log_path, &log).unwrap();
    let o = baton_run(["resume", "big-len", "--state-dir", s(&state)]);
    o.assert_code(0);
    assert!(o.stderr.contains("from point 1"), "{}", o.stderr);
    assert!(
        o.stderr
            .lines()
            .any(|l| l.starts_with("baton: warning:") && l.contains("log")),
        "{} journaled points were dropped without a warning:\n{}",
        deltas.len() - 1,
        o.stderr
    );
}

// ---------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------

#[test]
fn inspect_shows_task_point_memory_digest() {
    let tmp = tempdir();
    let state = tmp.path().join("state");
    baton_run([
        "run",
        s(&example("pi.wasm")),
        "--state-dir",
        s(&state),
        "--name",
        "pi-insp",
        "--",
        "20",
        "2000",
    ])
    .assert_code(0);
    let digest = journal_finished(&state, "pi-insp")["digest"]
        .as_str()
        .unwrap()
        .to_string();

    for path in [state.clone(), state.join("pi-insp")] {
        let o = baton_run(["inspect", s(&path)]);
        o.assert_code(0);
        let text = o.out();
        for word in ["pi-insp", "point", "memory", "digest", &digest] {
            assert!(
                text.contains(word),
                "inspect {}: no `{word}` in:\n{text}",
                path.display()
            );
        }
        assert!(text.contains("20"), "final point 20:\n{text}");
    }

    // A checkpoint file (one of baton-task's golden fixtures).
    let ckpt = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../baton-task/tests/fixtures/golden/pi.full.ckp"
    ));
    let o = baton_run(["inspect", s(&ckpt)]);
    o.assert_code(0);
    let text = o.out();
    for word in ["point", "memory", "digest"] {
        assert!(
            text.contains(word),
            "inspect a checkpoint: no `{word}` in:\n{text}"
        );
    }

    let garbage = tmp.path().join("garbage.ckpt");
    std::fs::write(&garbage, b"definitely not a checkpoint, just some bytes").unwrap();
    let o = baton_run(["inspect", s(&garbage)]);
    o.assert_code(EXIT_ERROR);
    let line = o.single_error_line();
    assert!(line.contains("garbage.ckpt"), "{line}");

    let o = baton_run(["inspect", s(&tmp.path().join("absent"))]);
    o.assert_code(EXIT_ERROR);
    o.single_error_line();
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

#[test]
fn demo_shows_all_checks_passing() {
    let o = baton_run(["demo", "--faster", "4"]);
    o.assert_code(0);
    let text = o.out();
    assert_eq!(text.matches('✓').count(), 4, "{text}");
    assert!(!text.contains('✗'), "{text}");
    for part in [
        "migrated local → remote at point 0",
        "link cut for a while",
        "link cut for good",
        "local side continues from point",
        "migrated local → remote at point 20",
        "finished on the remote side",
        "finished on the local side",
        "pi ~ ",
        // An ordinary C main moves in the middle of its run.
        "migrated local → remote at point 4",
        "tally: result ",
    ] {
        assert!(text.contains(part), "demo output lacks `{part}`:\n{text}");
    }
}
