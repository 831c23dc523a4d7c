//! Hostile tasks: an endless step is stopped by `max_step_time`, a memory
//! bomb is held at `max_memory` (malloc returns NULL, no trap), traps and
//! stack overflows are typed errors with a backtrace (never a crash of the
//! process), and a task that finished or failed refuses to step.

mod support;

use std::time::{Duration, Instant};

use baton_task::wasi::ClockMode;
use baton_task::{Limits, StepOutcome, Task, TaskConfig, TaskError};
use support::{config, decode_full, engine, program, Capture};

const MIB: u64 = 1024 * 1024;

fn create(name: &str, args: &[&str], limits: Limits, out: &Capture) -> Task {
    let mut c = config(name, args, 0);
    c.limits = limits;
    Task::create(engine(), &program(name), c, out.sink())
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

fn step_limit(ms: u64) -> Limits {
    Limits {
        max_step_time: Some(Duration::from_millis(ms)),
        ..Limits::default()
    }
}

fn memory_limit(bytes: u64) -> Limits {
    Limits {
        max_memory: bytes,
        max_step_time: None,
        point_every: baton_task::DEFAULT_POINT_EVERY,
    }
}

/// Steps `task` on another thread and waits at most `bound` for the step to
/// end, so that a limit that is not enforced fails the test instead of
/// hanging it (the runaway thread is left behind).
fn step_within(task: Task, bound: Duration) -> (Task, Result<StepOutcome, TaskError>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut task = task;
        let result = task.step();
        let _ = tx.send((task, result));
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|_| panic!("the step was not stopped within {bound:?}"))
}

fn expect_timeout(task: &mut Task, point: u64, limit_ms: u64) {
    let started = Instant::now();
    let placeholder = Task::create(
        engine(),
        &program("countdown"),
        TaskConfig::new("x"),
        Capture::new().sink(),
    )
    .unwrap();
    let (back, result) = step_within(
        std::mem::replace(task, placeholder),
        Duration::from_secs(10),
    );
    *task = back;
    let err = result.expect_err("the endless step must be stopped");
    let took = started.elapsed();
    match &err {
        TaskError::StepTimeout { point: p, limit } => {
            assert_eq!(*p, point);
            assert_eq!(*limit, Duration::from_millis(limit_ms));
        }
        other => panic!("expected StepTimeout, got {other:?}: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("--max-step-time {limit_ms}ms")),
        "{msg}"
    );
    assert!(
        took < Duration::from_secs(10),
        "stopped within a bounded time, took {took:?}"
    );
    assert!(
        took >= Duration::from_millis(limit_ms / 2),
        "not stopped long before its limit: {took:?}"
    );
}

#[test]
fn endless_step_is_stopped_by_max_step_time() {
    let out = Capture::new();
    let mut task = create("hostile/spin", &[], step_limit(200), &out);
    assert_eq!(task.step().unwrap(), StepOutcome::Continue);
    assert_eq!(task.step().unwrap(), StepOutcome::Continue);
    let at2 = task.checkpoint().unwrap();
    expect_timeout(&mut task, 2, 200);
    assert_eq!(
        out.stdout_string(),
        "spin: step 1\nspin: step 2\nspin: spinning forever now\n"
    );
    // The instance is unusable; the last checkpoint is not.
    assert!(matches!(task.step(), Err(TaskError::Failed)));
    assert!(matches!(task.digest(), Err(TaskError::Failed)));
    assert!(matches!(task.checkpoint(), Err(TaskError::Failed)));
    assert!(matches!(task.state(), Err(TaskError::Failed)));
    assert_eq!(task.point(), 2);
    let state = decode_full(&at2.bytes);
    let out2 = Capture::new();
    let mut again = Task::restore(
        engine(),
        &program("hostile/spin"),
        &state,
        support::virtual_clock(),
        step_limit(100),
        out2.sink(),
    )
    .unwrap();
    assert_eq!(again.digest().unwrap(), at2.digest);
    expect_timeout(&mut again, 2, 100);
    assert_eq!(out2.stdout_string(), "spin: spinning forever now\n");

    // The engine goes on serving other tasks.
    let out3 = Capture::new();
    let mut other = create("countdown", &["2"], step_limit(200), &out3);
    assert_eq!(other.step().unwrap(), StepOutcome::Continue);
    assert_eq!(other.step().unwrap(), StepOutcome::Finished(0));
}

#[test]
fn endless_first_step() {
    let out = Capture::new();
    let mut task = create("hostile/spin", &["0"], step_limit(150), &out);
    expect_timeout(&mut task, 0, 150);
}

/// `_initialize` runs under the step limit too.
#[test]
fn endless_initialize_is_stopped() {
    let program = engine()
        .load(
            &wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "_initialize") (loop $l (br $l)))
                     (func (export "baton_step") (result i32) i32.const 0))"#,
            )
            .unwrap(),
        )
        .unwrap();
    let mut c = TaskConfig::new("init");
    c.limits = step_limit(100);
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Task::create(engine(), &program, c, Capture::new().sink()).err());
    });
    match rx
        .recv_timeout(Duration::from_secs(10))
        .expect("_initialize was not stopped within 10 s")
    {
        Some(TaskError::StepTimeout { point: 0, limit }) => {
            assert_eq!(limit, Duration::from_millis(100))
        }
        Some(other) => panic!("expected StepTimeout, got {other:?}"),
        None => panic!("an endless _initialize was not stopped"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Each step waits for 20 ms of real time (wall clock mode); twenty of them
/// take longer than the 300 ms limit, none does alone: the limit is per step.
#[test]
fn step_limit_is_per_step() {
    let program = engine()
        .load(
            &wat::parse_str(
                r#"(module
                 (import "wasi_snapshot_preview1" "clock_time_get"
                   (func $time (param i32 i64 i32) (result i32)))
                 (memory (export "memory") 1)
                 (global $n (mut i32) (i32.const 0))
                 (func $now (result i64)
                   (drop (call $time (i32.const 1) (i64.const 1) (i32.const 8)))
                   (i64.load (i32.const 8)))
                 (func (export "baton_step") (result i32)
                   (local $until i64)
                   (local.set $until (i64.add (call $now) (i64.const 20000000)))
                   (loop $wait (br_if $wait (i64.lt_u (call $now) (local.get $until))))
                   (global.set $n (i32.add (global.get $n) (i32.const 1)))
                   (i32.ne (global.get $n) (i32.const 20))))"#,
            )
            .unwrap(),
        )
        .unwrap();
    let mut c = TaskConfig::new("waits");
    c.host.clock = ClockMode::Wall;
    c.limits = step_limit(300);
    let mut task = Task::create(engine(), &program, c, Capture::new().sink()).unwrap();
    let started = Instant::now();
    for k in 1..=20u64 {
        let outcome = task.step().unwrap_or_else(|e| panic!("step {k}: {e}"));
        assert_eq!(outcome == StepOutcome::Continue, k < 20);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the steps together outlast the limit"
    );
}

fn malloc_null_mib(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("membomb: malloc returned NULL after "))
        .unwrap_or_else(|| panic!("no NULL line in:\n{stdout}"));
    line.trim_start_matches("membomb: malloc returned NULL after ")
        .trim_end_matches(" MiB")
        .parse()
        .unwrap()
}

#[test]
fn memory_bomb_is_held_at_max_memory() {
    let out = Capture::new();
    let mut task = create("hostile/membomb", &[], memory_limit(64 * MIB), &out);
    assert_eq!(task.memory_refused(), None);
    let mut outcome = StepOutcome::Continue;
    for _ in 0..10 {
        outcome = task.step().unwrap_or_else(|e| panic!("no trap: {e}"));
        if outcome != StepOutcome::Continue {
            break;
        }
    }
    assert_eq!(outcome, StepOutcome::Finished(0));
    let stdout = out.stdout_string();
    let n = malloc_null_mib(&stdout);
    assert!(
        (32..64).contains(&n),
        "a little under 64 MiB: {n}\n{stdout}"
    );
    assert!(
        task.memory_size() as u64 <= 64 * MIB,
        "memory {} > 64 MiB",
        task.memory_size()
    );
    let refused = task.memory_refused().expect("a grow was refused");
    assert!(refused > 64 * MIB, "refused {refused}");
    // The finished state is capturable and within the limit.
    let state = decode_full(&task.checkpoint().unwrap().bytes);
    assert!(state.memory().len() as u64 <= 64 * MIB);
    assert_eq!(state.finished, Some(0));
}

/// A bomb that grows step by step, restored mid-way under the same limit:
/// the limit holds in the restored instance and the output is the same.
#[test]
fn memory_bomb_restored_midway() {
    let limit = memory_limit(48 * MIB);
    let out = Capture::new();
    let mut task = create("hostile/membomb", &["8"], limit, &out);
    let mut at2 = None;
    for _ in 0..20 {
        if task.point() == 2 {
            at2 = Some(task.checkpoint().unwrap());
        }
        if task.step().unwrap() != StepOutcome::Continue {
            break;
        }
    }
    assert_eq!(task.finished(), Some(0));
    let stdout = out.stdout_string();
    assert!(
        stdout.contains("membomb: step 2: 16 MiB so far\n"),
        "{stdout}"
    );
    let n = malloc_null_mib(&stdout);
    assert!((24..48).contains(&n), "{n}");

    let at2 = at2.unwrap();
    let state = decode_full(&at2.bytes);
    let out2 = Capture::new();
    let mut restored = Task::restore(
        engine(),
        &program("hostile/membomb"),
        &state,
        support::virtual_clock(),
        limit,
        out2.sink(),
    )
    .unwrap();
    assert_eq!(restored.memory_refused(), None);
    for _ in 0..20 {
        if restored.step().unwrap() != StepOutcome::Continue {
            break;
        }
    }
    assert_eq!(restored.finished(), Some(0));
    assert!(restored.memory_size() as u64 <= 48 * MIB);
    assert!(restored.memory_refused().is_some());
    let before = &out.stdout()[..stdout.find("membomb: step 3").unwrap()];
    let mut joined = before.to_vec();
    joined.extend_from_slice(&out2.stdout());
    assert_eq!(support::lossy(&joined), stdout);
    assert_eq!(restored.digest().unwrap(), task.digest().unwrap());

    // Restoring that state under a smaller limit than it already uses.
    let big = task.state().unwrap();
    match Task::restore(
        engine(),
        &program("hostile/membomb"),
        &big,
        support::virtual_clock(),
        memory_limit(8 * MIB),
        Capture::new().sink(),
    ) {
        Err(TaskError::MemoryLimit { needed, limit }) => {
            assert_eq!(needed, big.memory().len() as u64);
            assert_eq!(limit, 8 * MIB);
        }
        Err(other) => panic!("expected MemoryLimit, got {other:?}"),
        Ok(_) => panic!("restored over the memory limit"),
    }
}

#[test]
fn trap_reports_a_backtrace_with_names() {
    let out = Capture::new();
    let mut task = create("hostile/trap", &[], Limits::default(), &out);
    assert_eq!(task.step().unwrap(), StepOutcome::Continue);
    assert_eq!(task.step().unwrap(), StepOutcome::Continue);
    let at2 = task.checkpoint().unwrap();
    let err = task.step().expect_err("it traps");
    let first = match &err {
        TaskError::Trap {
            point,
            message,
            backtrace,
        } => {
            assert_eq!(*point, 2);
            assert!(message.contains("unreachable"), "{message}");
            let pos = |name: &str| {
                backtrace
                    .iter()
                    .position(|f| f.contains(name))
                    .unwrap_or_else(|| panic!("{name} not in the backtrace {backtrace:?}"))
            };
            // Innermost first: explode, called by compute_answer, called by baton_step.
            assert!(pos("explode") < pos("compute_answer"), "{backtrace:?}");
            assert!(pos("compute_answer") < pos("baton_step"), "{backtrace:?}");
            backtrace.clone()
        }
        other => panic!("expected a trap, got {other:?}"),
    };
    let msg = err.to_string();
    assert!(
        msg.contains("explode") && msg.contains("compute_answer"),
        "{msg}"
    );
    assert!(out
        .stdout_string()
        .ends_with("trap: about to trap in explode()\n"));
    // After a trap the task has failed.
    assert!(matches!(task.step(), Err(TaskError::Failed)));
    assert!(matches!(task.delta(), Err(TaskError::Failed)));
    assert!(matches!(task.checkpoint(), Err(TaskError::Failed)));
    assert_eq!(task.finished(), None);
    // Deterministic: restored before the trap, it traps the same way.
    let state = decode_full(&at2.bytes);
    let mut again = support::restore(&program("hostile/trap"), &state, &Capture::new());
    match again.step() {
        Err(TaskError::Trap {
            point: 2,
            backtrace,
            ..
        }) => assert_eq!(backtrace, first),
        other => panic!("expected the same trap, got {other:?}"),
    }
    assert!(matches!(again.step(), Err(TaskError::Failed)));
}

#[test]
fn stack_overflow_is_a_trap() {
    // Tasks need threads with room for `MAX_WASM_STACK` and the host; the
    // test harness's threads have 2 MiB.
    std::thread::Builder::new()
        .stack_size(baton_task::TASK_THREAD_STACK)
        .spawn(stack_overflow_cases)
        .unwrap()
        .join()
        .unwrap();
}

fn stack_overflow_cases() {
    for (mode, function) in [("native", "recurse_native"), ("shadow", "recurse_shadow")] {
        let out = Capture::new();
        let mut task = create("hostile/stackbomb", &[mode], Limits::default(), &out);
        match task.step() {
            Err(TaskError::Trap {
                point,
                message,
                backtrace,
            }) => {
                assert_eq!(point, 0);
                assert!(!message.is_empty());
                if mode == "native" {
                    assert!(
                        message.contains("call stack exhausted"),
                        "{mode}: {message}"
                    );
                } else {
                    assert!(message.contains("out of bounds"), "{mode}: {message}");
                }
                assert!(
                    backtrace.iter().any(|f| f.contains(function)),
                    "{mode}: {function} not in the backtrace"
                );
            }
            Err(other) => panic!("{mode}: expected a trap, got {other:?}"),
            Ok(outcome) => panic!("{mode}: the stack bomb survived: {outcome:?}"),
        }
        let stdout = out.stdout_string();
        assert_eq!(stdout, format!("stackbomb: recursing ({mode})\n"));
        assert!(matches!(task.step(), Err(TaskError::Failed)));
    }
}

#[test]
fn initial_memory_over_the_limit() {
    let program = engine()
        .load(
            &wat::parse_str(
                r#"(module (memory (export "memory") 100)
                     (func (export "baton_step") (result i32) i32.const 0))"#,
            )
            .unwrap(),
        )
        .unwrap();
    let mut c = TaskConfig::new("big");
    c.limits = memory_limit(MIB);
    match Task::create(engine(), &program, c, Capture::new().sink()) {
        Err(e @ TaskError::MemoryLimit { .. }) => {
            let TaskError::MemoryLimit { needed, limit } = e else {
                unreachable!()
            };
            assert_eq!(needed, 100 * 65536);
            assert_eq!(limit, MIB);
            let msg = e.to_string();
            assert!(
                msg.contains("--max-memory") && msg.contains("6553600"),
                "{msg}"
            );
        }
        Err(other) => panic!("expected MemoryLimit, got {other:?}"),
        Ok(_) => panic!("created over the memory limit"),
    }
    // Exactly at the limit is fine.
    let mut c = TaskConfig::new("big");
    c.limits = memory_limit(100 * 65536);
    Task::create(engine(), &program, c, Capture::new().sink()).unwrap();
}

/// bigstate cannot allocate its array under a small limit: `_initialize`
/// reports it and exits 1, so the task finishes at point 0 with status 1.
#[test]
fn allocation_failure_in_initialize_finishes_the_task() {
    let out = Capture::new();
    let mut task = create(
        "bigstate",
        &["48", "10", "256"],
        memory_limit(32 * MIB),
        &out,
    );
    assert_eq!(task.point(), 0);
    assert_eq!(task.finished(), Some(1));
    assert!(!out.stderr().is_empty(), "a message on stderr");
    assert!(task.memory_size() as u64 <= 32 * MIB);
    assert!(matches!(task.step(), Err(TaskError::AlreadyFinished(1))));
    // The finished state still has a digest and a checkpoint.
    let cp = task.checkpoint().unwrap();
    assert_eq!(decode_full(&cp.bytes).finished, Some(1));
}

#[test]
fn stepping_after_finish() {
    let out = Capture::new();
    let mut task = create("countdown", &["1", "3"], Limits::default(), &out);
    assert_eq!(task.step().unwrap(), StepOutcome::Finished(3));
    assert_eq!(task.finished(), Some(3));
    let digest = task.digest().unwrap();
    for _ in 0..3 {
        let err = task.step().expect_err("finished");
        assert!(matches!(err, TaskError::AlreadyFinished(3)), "{err:?}");
        assert!(
            err.to_string().contains("already finished with status 3"),
            "{err}"
        );
    }
    assert_eq!(task.point(), 1, "refused steps do not move the point");
    assert_eq!(task.digest().unwrap(), digest);
    // A command too.
    let mut hello = create("hello", &["exit", "5"], Limits::default(), &Capture::new());
    assert_eq!(hello.step().unwrap(), StepOutcome::Finished(5));
    assert!(matches!(hello.step(), Err(TaskError::AlreadyFinished(5))));
}

/// Bad calls from the guest are errno values or a clear error, not a crash:
/// a pointer outside memory is EFAULT; an invalid exit status is an error
/// naming proc_exit.
#[test]
fn bad_host_calls() {
    let program = engine()
        .load(
            &wat::parse_str(
                r#"(module
                 (import "wasi_snapshot_preview1" "fd_write"
                   (func $write (param i32 i32 i32 i32) (result i32)))
                 (import "wasi_snapshot_preview1" "random_get"
                   (func $random (param i32 i32) (result i32)))
                 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (global $n (mut i32) (i32.const 0))
                 (func (export "baton_step") (result i32)
                   (global.set $n (i32.add (global.get $n) (i32.const 1)))
                   (if (i32.eq (global.get $n) (i32.const 1)) (then
                     (i32.store (i32.const 0) (call $write (i32.const 1) (i32.const 0xfffffff0) (i32.const 1) (i32.const 16)))
                     (i32.store (i32.const 4) (call $random (i32.const 65530) (i32.const 100)))
                     (i32.store (i32.const 8) (call $write (i32.const 99) (i32.const 0) (i32.const 0) (i32.const 16)))
                     (return (i32.const 1))))
                   (call $exit (i32.const 200))
                   (i32.const 0)))"#,
            )
            .unwrap(),
        )
        .unwrap();
    let out = Capture::new();
    let mut task = Task::create(engine(), &program, TaskConfig::new("bad"), out.sink()).unwrap();
    assert_eq!(task.step().unwrap(), StepOutcome::Continue);
    let mem = task.state().unwrap();
    let errno = |at: usize| u32::from_le_bytes(mem.memory()[at..at + 4].try_into().unwrap());
    assert_eq!(
        errno(0),
        21,
        "fd_write with an iovec outside memory: EFAULT"
    );
    assert_eq!(errno(4), 21, "random_get past the end of memory: EFAULT");
    assert_eq!(
        errno(8),
        8,
        "fd_write on a descriptor that is not open: EBADF"
    );
    assert!(out.stdout().is_empty());
    let err = task.step().expect_err("proc_exit(200) is not a valid exit");
    assert!(err.to_string().contains("proc_exit"), "{err:?}: {err}");
    assert_eq!(task.finished(), None);
}

/// A task that traps because `--max-memory` refused it memory (as a Rust
/// program aborts on a failed allocation) is reported as the limit, not as
/// a bug in the task.
#[test]
fn trap_after_refused_growth_is_out_of_memory() {
    let program = engine()
        .load(
            &wat::parse_str(
                r#"(module (memory (export "memory") 1)
                     (func (export "baton_step") (result i32)
                       (if (i32.eq (memory.grow (i32.const 64)) (i32.const -1))
                         (then unreachable))
                       i32.const 1))"#,
            )
            .unwrap(),
        )
        .unwrap();
    let mut c = TaskConfig::new("oom");
    c.limits = memory_limit(1 << 20);
    let mut task = Task::create(engine(), &program, c, Capture::new().sink()).unwrap();
    match task.step() {
        Err(TaskError::OutOfMemory {
            point: 0,
            limit,
            asked,
            ..
        }) => {
            assert_eq!(limit, 1 << 20);
            assert!(asked > limit, "asked {asked}");
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}
