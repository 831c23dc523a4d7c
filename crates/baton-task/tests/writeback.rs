//! Write-back never writes outside the granted host directory or through a
//! symbolic link, whatever the state says and whatever changed on the host
//! since the task was loaded; the ordinary cases still work.
//!
//! Each test runs a tiny WAT task that creates directories and writes files
//! through WASI, then changes the host directory the way an attacker could,
//! and writes the task's state back.
#![cfg(unix)]

#[path = "fixtures/wasi/harness.rs"]
mod harness;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use baton_task::wasi::{HostError, HostState, Preopen};
use harness::{config, run_command};

/// What the test task does, in order, relative to its preopen (fd 3).
enum Op<'a> {
    Mkdir(&'a str),
    /// Creates or truncates the file, then writes the bytes.
    Write(&'a str, &'a [u8]),
}

/// A WAT string literal holding `bytes`.
fn lit(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A command module doing `ops`; it exits with status k+1 if op k fails.
fn task(ops: &[Op]) -> Vec<u8> {
    let mut data = String::new();
    let mut code = String::new();
    let mut at = 1024u32;
    let mut place = |bytes: &[u8], data: &mut String| {
        let p = at;
        data.push_str(&format!("  (data (i32.const {p}) \"{}\")\n", lit(bytes)));
        at += u32::try_from(bytes.len()).unwrap() + 1;
        (p, bytes.len())
    };
    for (k, op) in ops.iter().enumerate() {
        let fail = format!("(then (call $exit (i32.const {})))", k + 1);
        match op {
            Op::Mkdir(path) => {
                let (p, l) = place(path.as_bytes(), &mut data);
                code += &format!(
                    "    (if (call $mkdir (i32.const 3) (i32.const {p}) (i32.const {l})) {fail})\n"
                );
            }
            Op::Write(path, bytes) => {
                let (p, l) = place(path.as_bytes(), &mut data);
                let (d, dl) = place(bytes, &mut data);
                // oflags CREAT | TRUNC, rights fd_write; the fd goes to 0.
                code += &format!(
                    "    (if (call $open (i32.const 3) (i32.const 0) (i32.const {p}) (i32.const {l}) \
                     (i32.const 9) (i64.const 64) (i64.const 64) (i32.const 0) (i32.const 0)) {fail})\n\
                     \x20   (i32.store (i32.const 8) (i32.const {d}))\n\
                     \x20   (i32.store (i32.const 12) (i32.const {dl}))\n\
                     \x20   (if (call $write (i32.load (i32.const 0)) (i32.const 8) (i32.const 1) (i32.const 16)) {fail})\n\
                     \x20   (drop (call $close (i32.load (i32.const 0))))\n"
                );
            }
        }
    }
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
{data}  (func (export "_start")
{code}  )
)"#
    );
    wat::parse_str(&wat).expect("the test task parses")
}

fn preopen(dir: &Path) -> Preopen {
    Preopen {
        host: dir.to_path_buf(),
        guest: "/data".into(),
    }
}

/// Runs `ops` with `dir` preopened; returns the final host state.
fn run(dir: &Path, ops: &[Op]) -> HostState {
    let mut cfg = config(&[]);
    cfg.preopens = vec![preopen(dir)];
    let out = run_command(&task(ops), &cfg);
    assert_eq!(out.exit, Ok(0), "stderr: {}", out.stderr);
    out.state
}

/// The state as a peer or a journal would hand it over: encoded, decoded,
/// validated like every state from outside.
fn received(state: &HostState) -> HostState {
    let bytes = postcard::to_allocvec(state).unwrap();
    let back: HostState = postcard::from_bytes(&bytes).unwrap();
    back.validate().expect("the state is consistent");
    back
}

/// `granted/` and `outside/` side by side in a fresh temporary directory.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let granted = tmp.path().join("granted");
    let outside = tmp.path().join("outside");
    fs::create_dir(&granted).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret.txt"), b"secret").unwrap();
    (tmp, granted, outside)
}

/// Every file under `dir` (not following links) with its contents; links
/// as `-> target`.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let ft = fs::symlink_metadata(&p).unwrap().file_type();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if ft.is_dir() {
                out.push((rel, b"<dir>".to_vec()));
                stack.push(p);
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((rel, format!("-> {}", t.display()).into_bytes()));
            } else {
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn outside_untouched(outside: &Path) {
    assert_eq!(
        tree(outside),
        vec![(PathBuf::from("secret.txt"), b"secret".to_vec())],
        "nothing may be written outside the granted directory"
    );
}

fn refused_at(result: Result<impl std::fmt::Debug, HostError>, at: &Path) {
    match result {
        Err(e @ HostError::Write { .. }) => {
            let HostError::Write { path, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path, at, "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&at.display().to_string()), "{msg}");
            assert!(msg.contains("symbolic link"), "{msg}");
        }
        other => panic!("expected a refusal at {}, got {other:?}", at.display()),
    }
}

/// (a) The peer loaded a real directory `link` and writes into it; on this
/// host `granted/link` is a symbolic link to a directory outside (skipped
/// at load). The state's `Origin` claims `link` was loaded from there, which
/// used to make write-back trust it and write through the link.
#[test]
fn a_received_origin_naming_a_link_is_not_followed() {
    let peer = tempfile::tempdir().unwrap();
    fs::create_dir(peer.path().join("link")).unwrap();
    fs::write(peer.path().join("secret.txt"), b"peer's copy").unwrap();
    let state = received(&run(peer.path(), &[Op::Write("link/evil.txt", b"pwned")]));

    let (_tmp, granted, outside) = dirs();
    symlink(&outside, granted.join("link")).unwrap();
    symlink(outside.join("secret.txt"), granted.join("secret.txt")).unwrap();
    refused_at(
        state.write_back_to(&[preopen(&granted)]),
        &granted.join("link"),
    );
    outside_untouched(&outside);
    // Nothing else appeared in the granted directory (no temporary files);
    // the unchanged `secret.txt` the origin names was not rewritten.
    let links = tree(&granted);
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(fs::symlink_metadata(granted.join("secret.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// (b) A directory of the granted directory is replaced by a symbolic link
/// to an outside directory while the task runs (or between a kill and a
/// resume): the task's file in it is not written anywhere, with an error
/// naming the link. The same for a directory the task created whose name
/// an attacker took first.
#[test]
fn a_directory_replaced_by_a_link_is_refused() {
    let (_tmp, granted, outside) = dirs();
    fs::create_dir(granted.join("sub")).unwrap();
    fs::write(granted.join("sub/a.txt"), b"a").unwrap();
    let state = run(&granted, &[Op::Write("sub/new.txt", b"task output")]);
    fs::remove_dir_all(granted.join("sub")).unwrap();
    symlink(&outside, granted.join("sub")).unwrap();
    refused_at(state.write_back(), &granted.join("sub"));
    // A resumed copy of the state is refused the same way.
    let mut resumed = received(&state);
    resumed.set_host_dirs(&[preopen(&granted)]);
    refused_at(resumed.write_back(), &granted.join("sub"));
    outside_untouched(&outside);

    let (_tmp, granted, outside) = dirs();
    let state = run(
        &granted,
        &[Op::Mkdir("made"), Op::Write("made/f.txt", b"task output")],
    );
    symlink(&outside, granted.join("made")).unwrap();
    refused_at(state.write_back(), &granted.join("made"));
    outside_untouched(&outside);

    // Deeper down: the link is refused wherever it is in the path.
    let (_tmp, granted, outside) = dirs();
    fs::create_dir_all(granted.join("a/b")).unwrap();
    let state = run(&granted, &[Op::Write("a/b/c.txt", b"task output")]);
    fs::remove_dir(granted.join("a/b")).unwrap();
    symlink(&outside, granted.join("a/b")).unwrap();
    refused_at(state.write_back(), &granted.join("a/b"));
    outside_untouched(&outside);
}

/// (c) A file of the granted directory is replaced by a symbolic link to an
/// outside file: the link itself is atomically replaced by a regular file
/// inside the granted directory (the documented choice), the outside file
/// is never opened. An unchanged file replaced by a link is left alone.
#[test]
fn a_file_replaced_by_a_link_is_replaced_not_written_through() {
    let (_tmp, granted, outside) = dirs();
    fs::write(granted.join("data.txt"), b"old").unwrap();
    fs::write(granted.join("other.txt"), b"unchanged").unwrap();
    let state = run(&granted, &[Op::Write("data.txt", b"new")]);
    for name in ["data.txt", "other.txt"] {
        fs::remove_file(granted.join(name)).unwrap();
        symlink(outside.join("secret.txt"), granted.join(name)).unwrap();
    }
    let report = state.write_back().unwrap();
    assert_eq!(report.files_written, vec![granted.join("data.txt")]);
    let meta = fs::symlink_metadata(granted.join("data.txt")).unwrap();
    assert!(meta.file_type().is_file());
    // The link's 0777 did not pass to the new file.
    assert_eq!(meta.permissions().mode() & 0o111, 0);
    assert_eq!(fs::read(granted.join("data.txt")).unwrap(), b"new");
    assert!(fs::symlink_metadata(granted.join("other.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    outside_untouched(&outside);
}

/// (d) New nested directories and files, the overwrite of a loaded file
/// (keeping its permissions), unchanged files left alone, no temporary
/// files left behind, and nothing to do after a fresh load.
#[test]
fn ordinary_write_back_still_works() {
    let (_tmp, granted, outside) = dirs();
    fs::create_dir(granted.join("sub")).unwrap();
    fs::write(granted.join("sub/edit.txt"), b"old").unwrap();
    fs::set_permissions(
        granted.join("sub/edit.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::write(granted.join("keep.txt"), b"keep").unwrap();
    let state = run(
        &granted,
        &[
            Op::Mkdir("a"),
            Op::Mkdir("a/b"),
            Op::Mkdir("a/b/c"),
            Op::Write("a/b/c/deep.txt", b"deep"),
            Op::Write("a/top.txt", b"t"),
            Op::Write("sub/edit.txt", b"new!"),
            Op::Write("new.txt", b"fresh"),
        ],
    );
    let report = state.write_back().unwrap();
    assert_eq!(
        report.dirs_created,
        vec![
            granted.join("a"),
            granted.join("a/b"),
            granted.join("a/b/c")
        ]
    );
    assert_eq!(
        report.files_written,
        vec![
            granted.join("new.txt"),
            granted.join("a/top.txt"),
            granted.join("a/b/c/deep.txt"),
            granted.join("sub/edit.txt"),
        ]
    );
    assert_eq!(report.bytes_written, 5 + 1 + 4 + 4);
    let expect: Vec<(PathBuf, Vec<u8>)> = [
        ("a", &b"<dir>"[..]),
        ("a/b", b"<dir>"),
        ("a/b/c", b"<dir>"),
        ("a/b/c/deep.txt", b"deep"),
        ("a/top.txt", b"t"),
        ("keep.txt", b"keep"),
        ("new.txt", b"fresh"),
        ("sub", b"<dir>"),
        ("sub/edit.txt", b"new!"),
    ]
    .iter()
    .map(|(p, d)| (PathBuf::from(p), d.to_vec()))
    .collect();
    assert_eq!(tree(&granted), expect);
    let mode = fs::metadata(granted.join("sub/edit.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    outside_untouched(&outside);

    // Writing the same state back again gives the same tree.
    let again = state.write_back().unwrap();
    assert!(again.dirs_created.is_empty());
    assert_eq!(again.files_written, report.files_written);
    assert_eq!(tree(&granted), expect);

    // A fresh load of the result has nothing to write back.
    let fresh = run(&granted, &[]);
    let report = fresh.write_back().unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(tree(&granted), expect);
}
