//! Exact ABI checks of baton's WASI host: a WAT module re-exports the
//! `wasi_snapshot_preview1` imports, and each test sets up guest memory,
//! calls them the way a wasm guest would and checks errno values, layouts
//! and effects byte by byte. Includes hostile pointers and lengths.

#[path = "fixtures/wasi/harness.rs"]
mod harness;

use baton_task::wasi::{HostError, Preopen, ProcExit, TICK_NS};
use harness::{config, Guest, START_NS};
use wasmtime::Val;

/// The imports the tests call, with their parameter types. The test module
/// wraps each in an exported function of the same name and type (a host
/// function must be called from wasm to see the caller's memory).
const IMPORTS: &[(&str, &str, bool)] = &[
    ("args_get", "i32 i32", true),
    ("args_sizes_get", "i32 i32", true),
    ("environ_get", "i32 i32", true),
    ("environ_sizes_get", "i32 i32", true),
    ("clock_res_get", "i32 i32", true),
    ("clock_time_get", "i32 i64 i32", true),
    ("fd_write", "i32 i32 i32 i32", true),
    ("fd_read", "i32 i32 i32 i32", true),
    ("fd_seek", "i32 i64 i32 i32", true),
    ("fd_tell", "i32 i32", true),
    ("fd_close", "i32", true),
    ("fd_fdstat_get", "i32 i32", true),
    ("fd_filestat_get", "i32 i32", true),
    ("fd_prestat_get", "i32 i32", true),
    ("fd_prestat_dir_name", "i32 i32 i32", true),
    ("fd_readdir", "i32 i32 i32 i64 i32", true),
    ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32", true),
    ("path_filestat_get", "i32 i32 i32 i32 i32", true),
    ("path_create_directory", "i32 i32 i32", true),
    ("poll_oneoff", "i32 i32 i32 i32", true),
    ("random_get", "i32 i32", true),
    ("proc_exit", "i32", false),
    ("sched_yield", "", true),
    ("sock_accept", "i32 i32 i32", true),
    ("path_symlink", "i32 i32 i32 i32 i32", true),
];

/// A module importing [`IMPORTS`] and exporting a wrapper for each, plus
/// one page of memory.
fn wrapper_module() -> Vec<u8> {
    let mut wat = String::from("(module\n");
    for (name, params, result) in IMPORTS {
        let res = if *result { "(result i32)" } else { "" };
        wat += &format!(
            "  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {params}) {res}))\n"
        );
    }
    wat += "  (memory (export \"memory\") 1)\n";
    for (name, params, result) in IMPORTS {
        let res = if *result { "(result i32)" } else { "" };
        let gets: String = (0..params.split_whitespace().count())
            .map(|k| format!("(local.get {k}) "))
            .collect();
        wat +=
            &format!("  (func (export \"{name}\") (param {params}) {res} (call ${name} {gets}))\n");
    }
    wat += ")\n";
    wat::parse_str(&wat).expect("wrapper module parses")
}

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTDIR: i32 = 54;
const EPERM: i32 = 63;

fn i(v: u32) -> Val {
    Val::I32(v as i32)
}

fn l(v: u64) -> Val {
    Val::I64(v as i64)
}

fn guest() -> Guest {
    let wasm = wrapper_module();
    let mut cfg = config(&["x"]);
    cfg.env = vec![("A".into(), "1".into()), ("LONGER".into(), "two".into())];
    cfg.stdin = b"abc".to_vec();
    Guest::new(&wasm, &cfg)
}

fn guest_with_dir() -> (Guest, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let wasm = wrapper_module();
    let mut cfg = config(&[]);
    cfg.preopens = vec![Preopen {
        host: dir.path().to_path_buf(),
        guest: "/work".into(),
    }];
    (Guest::new(&wasm, &cfg), dir)
}

#[test]
fn args_and_environ() {
    let mut g = guest();
    assert_eq!(g.call("args_sizes_get", &[i(0), i(4)]).unwrap(), ESUCCESS);
    assert_eq!((g.peek_u32(0), g.peek_u32(4)), (2, 7));
    assert_eq!(g.call("args_get", &[i(100), i(200)]).unwrap(), ESUCCESS);
    assert_eq!((g.peek_u32(100), g.peek_u32(104)), (200, 205));
    assert_eq!(g.peek(200, 7), b"prog\0x\0");
    assert_eq!(
        g.call("environ_sizes_get", &[i(0), i(4)]).unwrap(),
        ESUCCESS
    );
    assert_eq!((g.peek_u32(0), g.peek_u32(4)), (2, 4 + 11));
    assert_eq!(g.call("environ_get", &[i(100), i(300)]).unwrap(), ESUCCESS);
    assert_eq!((g.peek_u32(100), g.peek_u32(104)), (300, 304));
    assert_eq!(g.peek(300, 15), b"A=1\0LONGER=two\0");
}

#[test]
fn stdout_stderr_and_stdin() {
    let mut g = guest();
    g.poke(1000, b"hello, world");
    // two iovecs: "hello" and ", world"
    g.poke_u32(0, 1000);
    g.poke_u32(4, 5);
    g.poke_u32(8, 1005);
    g.poke_u32(12, 7);
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(2), i(16)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u32(16), 12);
    assert_eq!(
        g.call("fd_write", &[i(2), i(0), i(1), i(16)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.out.stdout(), b"hello, world");
    assert_eq!(g.out.stderr(), b"hello");
    assert_eq!((g.state().stdout_len(), g.state().stderr_len()), (12, 5));
    // stdin: read 2, then 1, then EOF
    g.poke_u32(0, 2000);
    g.poke_u32(4, 2);
    for (want, bytes) in [(2, &b"ab"[..]), (1, &b"c"[..]), (0, &b""[..])] {
        assert_eq!(
            g.call("fd_read", &[i(0), i(0), i(1), i(16)]).unwrap(),
            ESUCCESS
        );
        assert_eq!(g.peek_u32(16), want);
        assert_eq!(g.peek(2000, bytes.len()), bytes);
    }
    // fdstat of stdout: filetype unknown (0), no flags, rights fd_write (1<<6)
    assert_eq!(g.call("fd_fdstat_get", &[i(1), i(64)]).unwrap(), ESUCCESS);
    assert_eq!(g.peek(64, 4), [0, 0, 0, 0]);
    assert_eq!((g.peek_u64(72), g.peek_u64(80)), (1 << 6, 1 << 6));
    assert_eq!(g.call("fd_seek", &[i(1), l(0), i(0), i(64)]).unwrap(), 70); // ESPIPE
    assert_eq!(
        g.call("fd_write", &[i(0), i(0), i(1), i(16)]).unwrap(),
        EBADF
    );
    assert_eq!(
        g.call("fd_read", &[i(1), i(0), i(1), i(16)]).unwrap(),
        EBADF
    );
    assert_eq!(g.call("fd_close", &[i(77)]).unwrap(), EBADF);
}

#[test]
fn preopen_discovery_and_file_layouts() {
    let (mut g, _dir) = guest_with_dir();
    // prestat: tag 0 (dir), name length 5
    assert_eq!(g.call("fd_prestat_get", &[i(3), i(0)]).unwrap(), ESUCCESS);
    assert_eq!(g.peek(0, 1), [0]);
    assert_eq!(g.peek_u32(4), 5);
    assert_eq!(
        g.call("fd_prestat_dir_name", &[i(3), i(16), i(5)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek(16, 5), b"/work");
    assert_eq!(
        g.call("fd_prestat_dir_name", &[i(3), i(16), i(4)]).unwrap(),
        37
    ); // ENAMETOOLONG
    assert_eq!(g.call("fd_prestat_get", &[i(4), i(0)]).unwrap(), EBADF);
    // fdstat of the preopen: directory (3), wasmtime's rights
    assert_eq!(g.call("fd_fdstat_get", &[i(3), i(64)]).unwrap(), ESUCCESS);
    assert_eq!(g.peek(64, 1), [3]);
    assert_eq!(
        g.peek_u64(72),
        0x0000_0000_07ff_fe00 & !(1 << 19) & !(1 << 22)
    );
    // path_filestat_get: filestat layout
    g.poke(500, b"hello.txt");
    assert_eq!(
        g.call("path_filestat_get", &[i(3), i(1), i(500), i(9), i(128)])
            .unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u64(128), 1); // dev
    assert_ne!(g.peek_u64(136), 0); // ino
    assert_eq!(g.peek(144, 1), [4]); // regular file
    assert_eq!(g.peek_u64(152), 1); // nlink
    assert_eq!(g.peek_u64(160), 5); // size
    for at in [168, 176, 184] {
        assert_eq!(g.peek_u64(at), START_NS); // atim, mtim, ctim
    }
    // path_open read/write + O_CREAT, write, seek, tell, read back, filestat
    g.poke(500, b"sub/new.bin");
    let rw = (1u64 << 1) | (1 << 6);
    assert_eq!(
        g.call(
            "path_open",
            &[i(3), i(0), i(500), i(11), i(1), l(rw), l(rw), i(0), i(600)]
        )
        .unwrap(),
        ESUCCESS
    );
    let fd = g.peek_u32(600);
    assert_eq!(fd, 4);
    g.poke(1000, b"0123456789");
    g.poke_u32(0, 1000);
    g.poke_u32(4, 10);
    assert_eq!(
        g.call("fd_write", &[i(fd), i(0), i(1), i(16)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(
        g.call("fd_seek", &[i(fd), l(-4i64 as u64), i(2), i(24)])
            .unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u64(24), 6);
    assert_eq!(g.call("fd_tell", &[i(fd), i(24)]).unwrap(), ESUCCESS);
    assert_eq!(g.peek_u64(24), 6);
    g.poke_u32(0, 2000);
    g.poke_u32(4, 100);
    assert_eq!(
        g.call("fd_read", &[i(fd), i(0), i(1), i(16)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u32(16), 4);
    assert_eq!(g.peek(2000, 4), b"6789");
    assert_eq!(
        g.call("fd_filestat_get", &[i(fd), i(128)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u64(160), 10);
    // fdstat of a read-write file: regular (4), all rights
    assert_eq!(g.call("fd_fdstat_get", &[i(fd), i(64)]).unwrap(), ESUCCESS);
    assert_eq!(g.peek(64, 1), [4]);
    assert_eq!(g.peek_u64(72), (1 << 30) - 1);
    assert_eq!(g.call("fd_close", &[i(fd)]).unwrap(), ESUCCESS);
    assert_eq!(g.call("fd_close", &[i(fd)]).unwrap(), EBADF);

    // readdir of the preopen: ".", "..", "hello.txt", "sub"
    assert_eq!(
        g.call("fd_readdir", &[i(3), i(3000), i(1000), l(0), i(16)])
            .unwrap(),
        ESUCCESS
    );
    let used = g.peek_u32(16) as usize;
    let mut at = 3000;
    let mut seen = Vec::new();
    while at < 3000 + used {
        let next = g.peek_u64(at);
        let namlen = g.peek_u32(at + 16) as usize;
        let ty = g.peek(at + 20, 1)[0];
        let name = String::from_utf8(g.peek(at + 24, namlen)).unwrap();
        seen.push((next, name, ty));
        at += 24 + namlen;
    }
    assert_eq!(
        seen,
        [
            (1, ".".to_string(), 3),
            (2, "..".to_string(), 3),
            (3, "hello.txt".to_string(), 4),
            (4, "sub".to_string(), 3),
        ]
    );
}

#[test]
fn path_errors_match_wasmtime() {
    let (mut g, _dir) = guest_with_dir();
    let open = |g: &mut Guest, path: &str, oflags: u32| {
        g.poke(500, path.as_bytes());
        g.call(
            "path_open",
            &[
                i(3),
                i(0),
                i(500),
                i(path.len() as u32),
                i(oflags),
                l(2),
                l(2),
                i(0),
                i(600),
            ],
        )
        .unwrap()
    };
    assert_eq!(open(&mut g, "/etc/passwd", 0), EPERM);
    assert_eq!(open(&mut g, "sub/../../x", 0), EPERM);
    assert_eq!(open(&mut g, "missing", 0), ENOENT);
    assert_eq!(open(&mut g, "hello.txt/", 0), ENOTDIR);
    assert_eq!(open(&mut g, "hello.txt", 2), ENOTDIR); // O_DIRECTORY
    assert_eq!(open(&mut g, "hello.txt", 1 | 4), 20); // O_CREAT|O_EXCL: EEXIST
    assert_eq!(open(&mut g, "sub", 2 | 1), EINVAL); // O_DIRECTORY|O_CREAT
    assert_eq!(open(&mut g, "hello.txt\0", 0), EINVAL);
    g.poke(500, b"sub/x");
    assert_eq!(
        g.call("path_create_directory", &[i(1), i(500), i(5)])
            .unwrap(),
        EBADF
    );
    assert_eq!(
        g.call("path_create_directory", &[i(3), i(500), i(3)])
            .unwrap(),
        20
    );
}

#[test]
fn virtual_clock_and_poll() {
    let mut g = guest();
    for k in 0..3u64 {
        assert_eq!(
            g.call("clock_time_get", &[i(1), l(0), i(0)]).unwrap(),
            ESUCCESS
        );
        assert_eq!(g.peek_u64(0), k * TICK_NS);
    }
    assert_eq!(
        g.call("clock_time_get", &[i(0), l(0), i(0)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u64(0), START_NS + 3 * TICK_NS);
    assert_eq!(g.call("clock_res_get", &[i(0), i(0)]).unwrap(), ESUCCESS);
    assert_eq!(g.peek_u64(0), TICK_NS);
    assert_eq!(
        g.call("clock_time_get", &[i(4), l(0), i(0)]).unwrap(),
        EINVAL
    );
    // poll_oneoff: one relative monotonic clock of 1 s
    g.poke_u64(100, 0xfeed); // userdata
    g.poke(108, &[0]); // tag clock
    g.poke_u32(116, 1); // monotonic
    g.poke_u64(124, 1_000_000_000); // timeout
    g.poke_u64(132, 0); // precision
    g.poke(140, &[0, 0]); // flags: relative
    assert_eq!(
        g.call("poll_oneoff", &[i(100), i(200), i(1), i(300)])
            .unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u32(300), 1);
    assert_eq!(g.peek_u64(200), 0xfeed);
    assert_eq!(g.peek_u16(208), 0); // error
    assert_eq!(g.peek(210, 1), [0]); // type clock
    assert_eq!(
        g.call("clock_time_get", &[i(1), l(0), i(0)]).unwrap(),
        ESUCCESS
    );
    assert_eq!(g.peek_u64(0), 4 * TICK_NS + 1_000_000_000);
    assert_eq!(g.call("sched_yield", &[]).unwrap(), ESUCCESS);
}

#[test]
fn random_is_seeded() {
    let wasm = wrapper_module();
    let draw = |seed: u64| {
        let mut cfg = config(&[]);
        cfg.seed = seed;
        let mut g = Guest::new(&wasm, &cfg);
        assert_eq!(g.call("random_get", &[i(0), i(32)]).unwrap(), ESUCCESS);
        assert_eq!(g.call("random_get", &[i(32), i(32)]).unwrap(), ESUCCESS);
        (g.peek(0, 64), g.state_bytes())
    };
    let (a, sa) = draw(5);
    let (b, sb) = draw(5);
    let (c, _) = draw(6);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    assert_ne!(a, c);
    assert_ne!(&a[..32], &a[32..]);
}

#[test]
fn proc_exit_unwinds_with_the_status() {
    let mut g = guest();
    let err = g.call("proc_exit", &[i(5)]).unwrap_err();
    assert_eq!(err.downcast_ref::<ProcExit>(), Some(&ProcExit(5)));
    assert_eq!(g.state().exit_status(), Some(5));
    let mut g = guest();
    let err = g.call("proc_exit", &[i(300)]).unwrap_err();
    assert!(err.downcast_ref::<ProcExit>().is_none());
    assert!(matches!(
        err.downcast_ref::<HostError>(),
        Some(HostError::InvalidExitStatus(300))
    ));
    assert_eq!(g.state().exit_status(), None);
}

#[test]
fn unsupported_functions_return_enosys() {
    let mut g = guest();
    assert_eq!(g.call("sock_accept", &[i(3), i(0), i(0)]).unwrap(), ENOSYS);
    assert_eq!(
        g.call("path_symlink", &[i(0), i(1), i(3), i(0), i(1)])
            .unwrap(),
        ENOSYS
    );
}

#[test]
fn hostile_pointers_and_lengths_are_efault_not_panics() {
    let (mut g, _dir) = guest_with_dir();
    let page = 65536u32;
    let before = g.state_bytes();
    // iovec array out of bounds, or its length overflowing
    assert_eq!(
        g.call("fd_write", &[i(1), i(page - 4), i(1), i(0)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(0x2000_0000), i(16)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(u32::MAX), i(16)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_read", &[i(0), i(0), i(u32::MAX), i(16)])
            .unwrap(),
        EFAULT
    );
    // an iovec whose buffer runs off the end (or wraps around)
    g.poke_u32(0, page - 10);
    g.poke_u32(4, 11);
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(1), i(16)]).unwrap(),
        EFAULT
    );
    g.poke_u32(0, u32::MAX);
    g.poke_u32(4, 2);
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(1), i(16)]).unwrap(),
        EFAULT
    );
    // a good iovec but an out-of-bounds result pointer: nothing written
    g.poke_u32(0, 100);
    g.poke_u32(4, 4);
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(1), i(page)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_write", &[i(1), i(0), i(1), i(u32::MAX)])
            .unwrap(),
        EFAULT
    );
    assert!(g.out.stdout().is_empty());
    // every other kind of pointer
    assert_eq!(g.call("random_get", &[i(0), i(u32::MAX)]).unwrap(), EFAULT);
    assert_eq!(g.call("random_get", &[i(u32::MAX), i(1)]).unwrap(), EFAULT);
    assert_eq!(g.call("args_get", &[i(page - 2), i(0)]).unwrap(), EFAULT);
    assert_eq!(g.call("args_get", &[i(0), i(page - 2)]).unwrap(), EFAULT);
    assert_eq!(
        g.call("args_sizes_get", &[i(0), i(u32::MAX)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("environ_sizes_get", &[i(page), i(0)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("clock_time_get", &[i(1), l(0), i(page - 7)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("clock_res_get", &[i(1), i(u32::MAX)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_fdstat_get", &[i(3), i(page - 23)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_filestat_get", &[i(3), i(page - 63)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_prestat_get", &[i(3), i(page - 1)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_prestat_dir_name", &[i(3), i(page - 1), i(100)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_readdir", &[i(3), i(page - 10), i(100), l(0), i(0)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_readdir", &[i(3), i(0), i(u32::MAX), l(0), i(0)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("fd_seek", &[i(3), l(0), i(0), i(u32::MAX)]).unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call(
            "path_open",
            &[i(3), i(0), i(page - 1), i(2), i(1), l(0), l(0), i(0), i(0)]
        )
        .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call(
            "path_open",
            &[i(3), i(0), i(0), i(u32::MAX), i(1), l(0), l(0), i(0), i(0)]
        )
        .unwrap(),
        EFAULT
    );
    g.poke(500, b"created");
    assert_eq!(
        g.call(
            "path_open",
            &[i(3), i(0), i(500), i(7), i(1), l(0), l(0), i(0), i(page)]
        )
        .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call(
            "path_filestat_get",
            &[i(3), i(0), i(500), i(9), i(page - 8)]
        )
        .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("poll_oneoff", &[i(0), i(0), i(u32::MAX), i(0)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("poll_oneoff", &[i(0), i(page - 40), i(2), i(0)])
            .unwrap(),
        EFAULT
    );
    assert_eq!(
        g.call("poll_oneoff", &[i(0), i(0), i(0), i(0)]).unwrap(),
        EINVAL
    );
    // None of this changed the host state (no clock ticks, no random draws,
    // no file created by the path_open whose result pointer was bad).
    assert_eq!(g.state_bytes(), before);
    g.state().validate().unwrap();
}

#[test]
fn a_module_without_memory_traps_cleanly() {
    let wasm = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))
          (func (export "write") (result i32) (call $w (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
          (func (export "yield") (result i32) (call $y)))"#,
    )
    .unwrap();
    let mut g = Guest::new(&wasm, &config(&[]));
    let err = g.call("write", &[]).unwrap_err();
    assert!(matches!(
        err.downcast_ref::<HostError>(),
        Some(HostError::NoMemory)
    ));
    assert_eq!(g.call("yield", &[]).unwrap(), ESUCCESS);
}
