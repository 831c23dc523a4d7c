//! Determinism (DESIGN §4): same module, args, env, stdin and seed give
//! byte-identical output and the same digest at every point; a different
//! seed gives a different random stream; the environment is only what is
//! passed; clocks are virtual and reproducible.

mod support;

use baton_task::wasi::ClockMode;
use baton_task::{Engine, StepOutcome, Task, TaskConfig};
use support::{config, engine, lossy, program, reference, restore, run_to_end, Capture, Trace};

fn assert_same(a: &Trace, b: &Trace, what: &str) {
    assert_eq!(a.digests, b.digests, "{what}: digests at every point");
    assert!(
        a.stdout == b.stdout,
        "{what}: stdout\n{}\n---\n{}",
        lossy(&a.stdout),
        lossy(&b.stdout)
    );
    assert_eq!(a.stderr, b.stderr, "{what}: stderr");
    assert_eq!(a.stdout_at, b.stdout_at, "{what}: output step by step");
    assert_eq!(a.status, b.status, "{what}: status");
}

fn hello(seed: u64, env: &[(&str, &str)], stdin: &[u8]) -> Trace {
    let mut c = config("hello", &["a", "b"], seed);
    c.host.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.host.stdin = stdin.to_vec();
    reference("hello", c)
}

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn same_seed_same_output_and_digests() {
    for (name, args) in [
        ("pi", &["6", "3000"][..]),
        ("nbody", &["5", "200"][..]),
        ("bigstate", &["4", "6", "32"][..]),
        ("countdown", &["3", "2"][..]),
    ] {
        let a = reference(name, config(name, args, 42));
        let b = reference(name, config(name, args, 42));
        assert_same(&a, &b, name);
        assert!(a.last() >= 3, "{name} ran its steps");
    }
    let a = hello(42, &[("NAME", "you")], b"hi\n");
    let b = hello(42, &[("NAME", "you")], b"hi\n");
    assert_same(&a, &b, "hello");
}

/// Two tasks of one program stepped in lockstep do not disturb each other.
#[test]
fn interleaved_tasks_are_independent() {
    let c = config("pi", &["6", "2000"], 3);
    let alone = reference("pi", c.clone());
    let (oa, ob) = (Capture::new(), Capture::new());
    let mut a = Task::create(engine(), &program("pi"), c.clone(), oa.sink()).unwrap();
    let mut b = Task::create(
        engine(),
        &program("pi"),
        config("pi", &["6", "2000"], 4),
        ob.sink(),
    )
    .unwrap();
    let mut digests = vec![a.digest().unwrap()];
    while a.finished().is_none() {
        a.step().unwrap();
        if b.finished().is_none() {
            b.step().unwrap();
        }
        digests.push(a.digest().unwrap());
    }
    assert_eq!(digests, alone.digests);
    assert_eq!(oa.stdout(), alone.stdout);
}

/// Digests and output do not depend on the engine instance (a second engine
/// compiles the module again).
#[test]
fn same_digests_with_another_engine() {
    let c = config("pi", &["5", "1000"], 8);
    let a = reference("pi", c.clone());
    let engine2 = Engine::new().unwrap();
    let program2 = engine2.load(&support::example_bytes("pi")).unwrap();
    assert_eq!(program2.digest(), program("pi").digest());
    let out = Capture::new();
    let mut task = Task::create(&engine2, &program2, c, out.sink()).unwrap();
    let b = run_to_end(&mut task, &out);
    assert_same(&a, &b, "pi on a second engine");
}

#[test]
fn different_seed_different_random_stream() {
    let args = ["6", "3000"];
    let a = reference("pi", config("pi", &args, 1));
    let b = reference("pi", config("pi", &args, 2));
    assert_ne!(a.stdout, b.stdout, "pi's estimate depends on the seed");
    let last_a = lossy(&a.stdout).lines().last().unwrap().to_string();
    let last_b = lossy(&b.stdout).lines().last().unwrap().to_string();
    assert!(last_a.starts_with("pi ~ 3."), "{last_a}");
    assert_ne!(last_a, last_b);
    // The generator is part of the state: digests differ from point 0 on.
    for (k, (x, y)) in a.digests.iter().zip(&b.digests).enumerate() {
        assert_ne!(x, y, "digest at point {k}");
    }

    let h1 = lossy(&hello(1, &[], b"").stdout);
    let h2 = lossy(&hello(2, &[], b"").stdout);
    let r1 = lines_starting(&h1, "random: ");
    let r2 = lines_starting(&h2, "random: ");
    assert_eq!(r1.len(), 1, "{h1}");
    assert_eq!(r2.len(), 1, "{h2}");
    assert_ne!(r1, r2);
    // Three distinct 64-bit numbers, not a constant.
    let nums: Vec<&str> = r1[0]["random: ".len()..].split(' ').collect();
    assert_eq!(nums.len(), 3);
    assert!(nums.iter().all(|n| n.len() == 16));
    assert!(nums[0] != nums[1] && nums[1] != nums[2]);
    // Everything else in hello's output is the same.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("random: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&h1), strip(&h2));

    let b1 = lossy(&reference("bigstate", config("bigstate", &["2", "3", "16"], 1)).stdout);
    let b2 = lossy(&reference("bigstate", config("bigstate", &["2", "3", "16"], 2)).stdout);
    assert_ne!(
        lines_starting(&b1, "step 0: checksum"),
        lines_starting(&b2, "step 0: checksum")
    );
}

/// Tasks that draw no randomness print the same whatever the seed.
#[test]
fn seed_independent_tasks() {
    let a = reference("nbody", config("nbody", &["3", "100"], 1));
    let b = reference("nbody", config("nbody", &["3", "100"], 99));
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.status, b.status);
}

#[test]
fn environment_is_only_what_is_passed() {
    let none = lossy(&hello(0, &[], b"").stdout);
    assert!(
        lines_starting(&none, "env ").is_empty(),
        "no inherited environment:\n{none}"
    );
    assert!(!none.contains("PATH="), "{none}");

    let some = lossy(
        &hello(
            0,
            &[("NAME", "you"), ("EMPTY", ""), ("SPACED", "a b=c")],
            b"",
        )
        .stdout,
    );
    assert_eq!(
        lines_starting(&some, "env "),
        vec!["env NAME=you", "env EMPTY=", "env SPACED=a b=c"],
        "{some}"
    );
    assert_eq!(
        lines_starting(&some, "argv["),
        vec!["argv[0] = hello.wasm", "argv[1] = a", "argv[2] = b"]
    );
    assert!(some.starts_with("hello from a WASI command\n"));
    assert!(some.ends_with("exit status 0\n"));
}

#[test]
fn stdin_is_the_given_bytes() {
    let empty = lossy(&hello(0, &[], b"").stdout);
    assert!(
        empty.contains("stdin: 0 lines, 0 bytes, fnv1a64 cbf29ce484222325\n"),
        "{empty}"
    );
    let hi = lossy(&hello(0, &[], b"hi\n").stdout);
    assert!(
        hi.contains("stdin: 1 lines, 3 bytes, fnv1a64 33734a193006ba70\n"),
        "{hi}"
    );
    let big: Vec<u8> = (0..100_000u32)
        .map(|i| if i % 100 == 99 { b'\n' } else { b'x' })
        .collect();
    let out = lossy(&hello(0, &[], &big).stdout);
    assert!(out.contains("stdin: 1000 lines, 100000 bytes"), "{out}");
}

const CLOCKS: &str = r#"
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $time (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  ;; Each step n: realtime at 64+8n, monotonic at 256+8n, 16 random bytes
  ;; at 512+16n, the sum of the errnos at 0. Eight steps.
  (func (export "baton_step") (result i32)
    (local $errs i32)
    (local.set $errs
      (call $time (i32.const 0) (i64.const 1)
        (i32.add (i32.const 64) (i32.shl (global.get $n) (i32.const 3)))))
    (local.set $errs (i32.add (local.get $errs)
      (call $time (i32.const 1) (i64.const 1)
        (i32.add (i32.const 256) (i32.shl (global.get $n) (i32.const 3))))))
    (local.set $errs (i32.add (local.get $errs)
      (call $random
        (i32.add (i32.const 512) (i32.shl (global.get $n) (i32.const 4)))
        (i32.const 16))))
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (local.get $errs)))
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.ne (global.get $n) (i32.const 8))))
"#;

fn read_u64(mem: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(mem[at..at + 8].try_into().unwrap())
}

/// Clocks are virtual: reproducible, increasing, starting at the configured
/// time; the random stream is seeded; restoring mid-way reads the same.
#[test]
fn virtual_clocks_and_random_are_reproducible() {
    let program = engine().load(&wat::parse_str(CLOCKS).unwrap()).unwrap();
    let start = 1_700_000_000_000_000_000u64;
    let run = |seed: u64| {
        let mut c = TaskConfig::new("clocks");
        c.host.seed = seed;
        c.host.clock = ClockMode::Virtual {
            start_realtime_ns: start,
        };
        let out = Capture::new();
        let mut task = Task::create(engine(), &program, c, out.sink()).unwrap();
        let mut digests = vec![task.digest().unwrap()];
        let mut mid = None;
        for _ in 0..20 {
            let outcome = task.step().unwrap();
            digests.push(task.digest().unwrap());
            if task.point() == 4 {
                mid = Some(task.state().unwrap());
            }
            if outcome != StepOutcome::Continue {
                break;
            }
        }
        assert_eq!(task.finished(), Some(0), "eight steps, then done");
        (task.state().unwrap(), digests, mid.unwrap())
    };
    let (a, da, mid) = run(5);
    let (b, db, _) = run(5);
    assert_eq!(da, db);
    assert_eq!(a.memory(), b.memory());
    let mem = a.memory();
    assert_eq!(
        u32::from_le_bytes(mem[0..4].try_into().unwrap()),
        0,
        "every call succeeded"
    );
    let real: Vec<u64> = (0..8).map(|n| read_u64(mem, 64 + 8 * n)).collect();
    let mono: Vec<u64> = (0..8).map(|n| read_u64(mem, 256 + 8 * n)).collect();
    assert!(
        real[0] >= start && real[0] < start + 1_000_000_000,
        "realtime starts at the configured time: {}",
        real[0]
    );
    assert!(
        real.windows(2).all(|w| w[0] < w[1]),
        "realtime increases: {real:?}"
    );
    assert!(
        mono.windows(2).all(|w| w[0] < w[1]),
        "monotonic increases: {mono:?}"
    );
    assert!(
        mono[7] < 1_000_000_000,
        "virtual time does not follow the wall clock: {mono:?}"
    );

    let (c, dc, _) = run(6);
    assert_ne!(
        a.memory()[512..640],
        c.memory()[512..640],
        "another seed, other random bytes"
    );
    assert_eq!(
        a.memory()[64..320],
        c.memory()[64..320],
        "clocks do not depend on the seed"
    );
    assert_ne!(da, dc);

    // Restored at point 4, the clocks and the random stream go on alike.
    let out = Capture::new();
    let mut task = restore(&program, &mid, &out);
    for _ in 0..20 {
        if task.step().unwrap() != StepOutcome::Continue {
            break;
        }
    }
    assert_eq!(task.point(), 8);
    assert_eq!(task.state().unwrap().memory(), a.memory());
    assert_eq!(task.digest().unwrap(), *da.last().unwrap());
}
