//! Runs a C program built with wasi-libc (tests/fixtures/wasi/files.c)
//! through baton's WASI host: files, directories, args, env, clocks, random
//! and stdin end to end, plus determinism and write-back.

#[path = "fixtures/wasi/harness.rs"]
mod harness;

use std::fs;
use std::path::Path;

use baton_task::wasi::{HostConfig, Preopen};
use harness::{config, run_command, Outcome};

const FILES_WASM: &[u8] = include_bytes!("fixtures/wasi/files.wasm");

fn files_config(dir: &Path, seed: u64) -> HostConfig {
    fs::write(dir.join("input.txt"), "preloaded line\n").unwrap();
    let mut cfg = config(&["one", "two words"]);
    cfg.env = vec![("GREETING".into(), "hi there".into())];
    cfg.stdin = b"from stdin".to_vec();
    cfg.seed = seed;
    cfg.preopens = vec![Preopen {
        host: dir.to_path_buf(),
        guest: "/data".into(),
    }];
    cfg
}

fn run(seed: u64) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = files_config(dir.path(), seed);
    (run_command(FILES_WASM, &cfg), dir)
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line starting {key:?} in:\n{out}"))
}

#[test]
fn c_program_sees_a_consistent_deterministic_world() {
    let (o, _dir) = run(1);
    assert_eq!(o.exit, Ok(0), "stdout:\n{}", o.stdout);
    let expected_prefix = "\
argc=3
argv[0]=prog
argv[1]=one
argv[2]=two words
GREETING=hi there
PATH=(unset)
stdin=10:from stdin
stdin_eof=1
monotonic_step_ns=1000
";
    assert!(
        o.stdout.starts_with(expected_prefix),
        "stdout:\n{}",
        o.stdout
    );
    // realtime is the start time plus the ticks of the readings before it.
    let realtime = line(&o.stdout, "realtime=");
    assert_eq!(realtime, "1700000000.000002000");
    let slept: u64 = line(&o.stdout, "slept_ns=").parse().unwrap();
    assert!((5_000_000..5_100_000).contains(&slept), "slept {slept}");
    assert_eq!(line(&o.stdout, "resolution_ns="), "1000");
    assert_eq!(line(&o.stdout, "random=").len(), 32);
    let expected_rest = "\
input=preloaded line
read_at_6=file
size_by_seek=11
stat size=21 regular=1 dir=0
ls /data: . .. out
ls /data/out: . .. b.txt c.txt
escape=-1 errno_is_eperm=1
b.txt=21:hello file
more
tail
done
";
    assert!(o.stdout.ends_with(expected_rest), "stdout:\n{}", o.stdout);
    assert_eq!(o.stderr, "to stderr\n");
    assert_eq!(o.state.stdout_len(), o.stdout.len() as u64);
    assert_eq!(o.state.stderr_len(), 10);
    o.state.validate().unwrap();
}

#[test]
fn same_seed_same_bytes_different_seed_different_random() {
    let (a, _da) = run(1);
    let (b, _db) = run(1);
    assert_eq!(a.stdout, b.stdout);
    // Host directories differ between the runs but are not part of the state.
    assert_eq!(a.state_bytes, b.state_bytes);
    let (c, _dc) = run(2);
    assert_ne!(line(&a.stdout, "random="), line(&c.stdout, "random="));
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("random="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a.stdout), strip(&c.stdout));
    assert_ne!(a.state_bytes, c.state_bytes);
}

#[test]
fn write_back_adds_and_replaces_but_never_deletes() {
    let (o, dir) = run(1);
    assert_eq!(o.exit, Ok(0));
    let host = dir.path();
    let report = o.state.write_back().unwrap();
    assert_eq!(report.dirs_created, vec![host.join("out")]);
    assert_eq!(
        report.files_written,
        vec![host.join("out/b.txt"), host.join("out/c.txt")]
    );
    assert_eq!(
        fs::read_to_string(host.join("out/b.txt")).unwrap(),
        "hello file\nmore\ntail\n"
    );
    assert_eq!(
        fs::read_to_string(host.join("out/c.txt")).unwrap(),
        "third\n"
    );
    // The task unlinked input.txt and removed tmp/: neither is propagated.
    assert_eq!(
        fs::read_to_string(host.join("input.txt")).unwrap(),
        "preloaded line\n"
    );
    assert!(!host.join("tmp").exists());
    assert!(!host.join("out/a.txt").exists());
    let mut names: Vec<_> = fs::read_dir(host)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["input.txt", "out"]);

    // A restored state (serialised without host paths) needs them again.
    let restored: baton_task::wasi::HostState = postcard::from_bytes(&o.state_bytes).unwrap();
    assert!(matches!(
        restored.write_back(),
        Err(baton_task::wasi::HostError::NoHostDir { index: 0 })
    ));
    let other = tempfile::tempdir().unwrap();
    let report = restored
        .write_back_to(&[Preopen {
            host: other.path().to_path_buf(),
            guest: "/data".into(),
        }])
        .unwrap();
    assert_eq!(report.files_written.len(), 2);
    assert_eq!(
        fs::read_to_string(other.path().join("out/c.txt")).unwrap(),
        "third\n"
    );
}
