//! Checkpoint benchmark (issue 2, BENCHMARKS.md): what a point costs.
//!
//! For memories of 1, 64 and 256 MiB with 1 %, 10 % and 100 % of the 4 KiB
//! pages changed since the base it measures
//!
//! - `capture_delta`: [`Task::delta`] at a point right after a step that
//!   rewrote that fraction of the pages (the shadow comparison, re-hashing
//!   of the changed pages, the state digest, LZ4 and the integrity check);
//! - `restore_delta`: [`checkpoint::decode`] of that delta plus
//!   [`Delta::apply`] onto the base [`State`];
//!
//! and per memory size, for reference,
//!
//! - `capture_full`: [`Task::checkpoint`] (full) after a step that changed 1 %;
//! - `restore_full`: [`checkpoint::decode`] of the full checkpoint plus
//!   [`Task::restore`] into a fresh instance;
//! - `first_capture` (1 and 64 MiB): [`Task::checkpoint`] on a freshly created
//!   task, the first capture of all, which also copies every page into the
//!   shadow and hashes it. The budget: 64 MiB well under 100 ms on one core.
//!
//! The tasks are generated WAT modules: `_initialize` fills the memory with
//! data that is half pseudo-random, half a repeated pattern (LZ4 halves it);
//! each `baton_step` rewrites the chosen pages, spread evenly, with the same
//! kind of data mixed with a step counter, so every step really changes
//! them. Steps run outside the timed region.
//!
//! Besides criterion's report, the bench prints a summary table at the end
//! (medians and minima over every timed iteration, split into capture vs
//! encode and decode vs apply, and the encoded sizes): that is the table in
//! BENCHMARKS.md.
//!
//! ```sh
//! cargo bench -p baton-task --bench checkpoint
//! cargo bench -p baton-task --bench checkpoint -- 64MiB     # only some
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_task::checkpoint::{self, Decoded};
use baton_task::wasi::{ClockMode, Discard};
use baton_task::{Checkpoint, Engine, Limits, Program, State, Task, TaskConfig};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

const MIB: usize = 1024 * 1024;
const PAGE: usize = 4096;
const SIZES_MIB: [usize; 3] = [1, 64, 256];
const PERCENTS: [usize; 3] = [1, 10, 100];

/// A step task with `mib` MiB of memory whose steps rewrite `changed` of its
/// 4 KiB pages, `stride` pages apart.
fn task_wat(mib: usize, changed: usize, stride: usize) -> String {
    let wasm_pages = mib * MIB / 65536;
    let pages = mib * MIB / PAGE;
    format!(
        r#"(module
  (memory (export "memory") {wasm_pages})
  (global $counter (mut i64) (i64.const 0))

  ;; xorshift64
  (func $next (param $x i64) (result i64)
    (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
    (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
    (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))

  ;; Fills 4 KiB page $page: every 64 bytes, 32 pseudo-random bytes (from
  ;; $seed and the page number) and 32 bytes of a fixed pattern.
  (func $fill (param $page i32) (param $seed i64)
    (local $a i32) (local $end i32) (local $x i64)
    (local.set $a (i32.shl (local.get $page) (i32.const 12)))
    (local.set $end (i32.add (local.get $a) (i32.const 4096)))
    (local.set $x
      (i64.xor
        (i64.xor (i64.mul (local.get $seed) (i64.const 0x2545F4914F6CDD1D))
                 (i64.mul (i64.extend_i32_u (local.get $page)) (i64.const 0x9E3779B97F4A7C15)))
        (i64.const 0x0123456789ABCDEF)))
    (loop $line
      (local.set $x (call $next (local.get $x)))
      (i64.store offset=0 (local.get $a) (local.get $x))
      (local.set $x (call $next (local.get $x)))
      (i64.store offset=8 (local.get $a) (local.get $x))
      (local.set $x (call $next (local.get $x)))
      (i64.store offset=16 (local.get $a) (local.get $x))
      (local.set $x (call $next (local.get $x)))
      (i64.store offset=24 (local.get $a) (local.get $x))
      (i64.store offset=32 (local.get $a) (i64.const 0x0706050403020100))
      (i64.store offset=40 (local.get $a) (i64.const 0x0f0e0d0c0b0a0908))
      (i64.store offset=48 (local.get $a) (i64.const 0x1716151413121110))
      (i64.store offset=56 (local.get $a) (i64.const 0x1f1e1d1c1b1a1918))
      (local.set $a (i32.add (local.get $a) (i32.const 64)))
      (br_if $line (i32.lt_u (local.get $a) (local.get $end)))))

  (func (export "_initialize")
    (local $p i32)
    (loop $pages
      (call $fill (local.get $p) (i64.const 0))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $pages (i32.lt_u (local.get $p) (i32.const {pages})))))

  (func (export "baton_step") (result i32)
    (local $k i32)
    (global.set $counter (i64.add (global.get $counter) (i64.const 1)))
    (loop $pages
      (call $fill (i32.mul (local.get $k) (i32.const {stride})) (global.get $counter))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $pages (i32.lt_u (local.get $k) (i32.const {changed}))))
    (i32.const 1)))
"#
    )
}

/// How many pages a step changes for `percent` % of `pages`, and how far
/// apart they are.
fn spread(pages: usize, percent: usize) -> (usize, usize) {
    let changed = ((pages * percent + 50) / 100).clamp(1, pages);
    (changed, pages / changed)
}

fn load(engine: &Engine, mib: usize, percent: usize) -> (Program, usize) {
    let (changed, stride) = spread(mib * MIB / PAGE, percent);
    let wasm = wat::parse_str(task_wat(mib, changed, stride)).expect("generated WAT parses");
    (engine.load(&wasm).expect("generated module loads"), changed)
}

fn create(engine: &Engine, program: &Program) -> Task {
    Task::create(engine, program, TaskConfig::new("bench"), Box::new(Discard))
        .expect("task creates")
}

fn decode_full(bytes: &[u8]) -> State {
    match checkpoint::decode(bytes, &Default::default()).expect("full checkpoint decodes") {
        Decoded::Full(state) => state,
        Decoded::Delta(_) => panic!("a full checkpoint decoded as a delta"),
    }
}

/// One timed iteration: wall time, and thread CPU time in total and up to
/// the split (capture / encode, decode / apply-or-restore).
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    cpu_first: Duration,
}

/// Every timed iteration, by benchmark.
static TIMES: Mutex<BTreeMap<String, Vec<Sample>>> = Mutex::new(BTreeMap::new());
/// Encoded sizes by memory and percentage: (changed pages, delta bytes).
static SIZES: Mutex<BTreeMap<(usize, usize), (usize, usize)>> = Mutex::new(BTreeMap::new());
/// Full checkpoint bytes by memory size.
static FULL_SIZES: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

/// CPU time of the calling thread (user + system: page faults count).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; this clock id exists on
    // every platform baton runs on, and on failure `ts` stays zero.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A stopwatch over wall and thread CPU time, with a split of the CPU time;
/// criterion gets the wall time, the summary both.
struct Watch {
    wall: Instant,
    cpu: Duration,
    split: Option<Duration>,
}

impl Watch {
    fn start() -> Watch {
        let cpu = thread_cpu();
        Watch {
            wall: Instant::now(),
            cpu,
            split: None,
        }
    }

    fn split(&mut self) {
        self.split = Some(thread_cpu());
    }

    /// Records the iteration under `name`; returns its wall time.
    fn stop(self, name: &str) -> Duration {
        let wall = Instant::now();
        let cpu = thread_cpu();
        let split_cpu = self.split.unwrap_or(cpu);
        let sample = Sample {
            wall: wall - self.wall,
            cpu: cpu - self.cpu,
            cpu_first: split_cpu - self.cpu,
        };
        TIMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .push(sample);
        sample.wall
    }
}

/// One task whose steps change `percent` % of its pages, with its base.
struct DeltaFixture {
    task: Task,
    base: State,
    delta: Checkpoint,
}

impl DeltaFixture {
    fn new(engine: &Engine, mib: usize, percent: usize) -> DeltaFixture {
        let (program, changed) = load(engine, mib, percent);
        let mut task = create(engine, &program);
        let base = task.checkpoint().expect("base checkpoint");
        let base = decode_full(&base.bytes);
        task.step().expect("step");
        let delta = task.delta().expect("delta");
        SIZES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((mib, percent), (changed, delta.bytes.len()));
        DeltaFixture { task, base, delta }
    }
}

/// A task for full checkpoints (its steps change 1 % of the pages).
struct FullFixture {
    program: Program,
    task: Task,
    full: Checkpoint,
}

impl FullFixture {
    fn new(engine: &Engine, mib: usize) -> FullFixture {
        let (program, _) = load(engine, mib, 1);
        let mut task = create(engine, &program);
        task.step().expect("step");
        let full = task.checkpoint().expect("full checkpoint");
        FullFixture::record_size(mib, &full);
        FullFixture {
            program,
            task,
            full,
        }
    }

    fn record_size(mib: usize, full: &Checkpoint) {
        FULL_SIZES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mib, full.bytes.len());
    }
}

/// Steps, then times `Task::digest` (capture: compare, re-hash, digest)
/// followed by `capture` (encode; the capture is cached by then).
fn time_capture(
    task: &mut Task,
    name: &str,
    iters: u64,
    capture: fn(&mut Task) -> Checkpoint,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        task.step().expect("step");
        let mut watch = Watch::start();
        black_box(task.digest().expect("digest"));
        watch.split();
        let cp = black_box(capture(task));
        total += watch.stop(name);
        drop(cp);
    }
    total
}

fn bench(c: &mut Criterion, engine: &Engine) {
    for mib in SIZES_MIB {
        let heavy = mib >= 64;
        let configure = |g: &mut criterion::BenchmarkGroup<'_, _>| {
            g.sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(if heavy { 200 } else { 300 }))
                .measurement_time(Duration::from_millis(if heavy { 500 } else { 1000 }));
        };

        for percent in PERCENTS {
            let id = format!("{mib}MiB/{percent}%");
            let mut fixture: Option<DeltaFixture> = None;
            let (changed, _) = spread(mib * MIB / PAGE, percent);
            let bytes = (changed * PAGE) as u64;

            let mut g = c.benchmark_group("capture_delta");
            configure(&mut g);
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                let f = fixture.get_or_insert_with(|| DeltaFixture::new(engine, mib, percent));
                let name = format!("capture_delta {id}");
                b.iter_custom(|iters| {
                    time_capture(&mut f.task, &name, iters, |t| t.delta().expect("delta"))
                });
            });
            g.finish();

            let mut g = c.benchmark_group("restore_delta");
            configure(&mut g);
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                let f = fixture.get_or_insert_with(|| DeltaFixture::new(engine, mib, percent));
                let name = format!("restore_delta {id}");
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut state = f.base.clone();
                        let mut watch = Watch::start();
                        let decoded = checkpoint::decode(&f.delta.bytes, &Default::default())
                            .expect("delta decodes");
                        watch.split();
                        let Decoded::Delta(delta) = decoded else {
                            panic!("a delta decoded as a full checkpoint")
                        };
                        delta.apply(&mut state).expect("delta applies");
                        black_box(&state);
                        total += watch.stop(&name);
                        drop(state);
                    }
                    total
                });
            });
            g.finish();
            drop(fixture);
        }

        let mut fixture: Option<FullFixture> = None;
        let id = format!("{mib}MiB");
        let mut g = c.benchmark_group("capture_full");
        configure(&mut g);
        g.throughput(Throughput::Bytes((mib * MIB) as u64));
        g.bench_function(BenchmarkId::from_parameter(&id), |b| {
            let f = fixture.get_or_insert_with(|| FullFixture::new(engine, mib));
            let name = format!("capture_full {id}");
            b.iter_custom(|iters| {
                time_capture(&mut f.task, &name, iters, |t| {
                    t.checkpoint().expect("checkpoint")
                })
            });
        });
        g.finish();

        let mut g = c.benchmark_group("restore_full");
        configure(&mut g);
        g.throughput(Throughput::Bytes((mib * MIB) as u64));
        g.bench_function(BenchmarkId::from_parameter(&id), |b| {
            let f = fixture.get_or_insert_with(|| FullFixture::new(engine, mib));
            let name = format!("restore_full {id}");
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut watch = Watch::start();
                    let state = decode_full(&f.full.bytes);
                    watch.split();
                    let task = Task::restore(
                        engine,
                        &f.program,
                        &state,
                        ClockMode::Virtual {
                            start_realtime_ns: 0,
                        },
                        Limits::default(),
                        Box::new(Discard),
                    )
                    .expect("restore");
                    black_box(&task);
                    total += watch.stop(&name);
                    drop((task, state));
                }
                total
            });
        });
        g.finish();
        drop(fixture);

        if mib <= 64 {
            let mut g = c.benchmark_group("first_capture");
            configure(&mut g);
            g.throughput(Throughput::Bytes((mib * MIB) as u64));
            let mut program: Option<Program> = None;
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                let program = program.get_or_insert_with(|| load(engine, mib, 1).0);
                let name = format!("first_capture {id}");
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut task = create(engine, program);
                        let mut watch = Watch::start();
                        black_box(task.digest().expect("digest"));
                        watch.split();
                        let cp = black_box(task.checkpoint().expect("checkpoint"));
                        total += watch.stop(&name);
                        drop((cp, task));
                    }
                    total
                });
            });
            g.finish();
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Prints the summary: one markdown table of times, one of sizes.
fn summary() {
    let times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    if times.is_empty() {
        return;
    }
    println!("\n## summary: medians over every timed iteration, milliseconds\n");
    println!("| benchmark | n | wall | wall min | CPU | CPU part 1 | CPU part 2 | MiB/s (CPU) |");
    println!("|---|---|---|---|---|---|---|---|");
    let sizes = SIZES.lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = times.keys().collect();
    // By kind, then memory size, then percentage (numerically).
    names.sort_by_key(|n| {
        let num = |s: &str| {
            s.chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
                .parse::<usize>()
                .unwrap_or(0)
        };
        let mut parts = n.split([' ', '/']);
        let kind = parts.next().unwrap_or("").to_string();
        let mib = num(parts.next().unwrap_or(""));
        let pct = num(parts.next().unwrap_or("100"));
        (kind, mib, pct)
    });
    for name in names {
        let v = &times[name];
        let wall = median(v.iter().map(|t| t.wall).collect());
        let min = v.iter().map(|t| t.wall).min().unwrap_or_default();
        let cpu = median(v.iter().map(|t| t.cpu).collect());
        let first = median(v.iter().map(|t| t.cpu_first).collect());
        let second = median(v.iter().map(|t| t.cpu - t.cpu_first).collect());
        let changed_bytes = name
            .split(' ')
            .nth(1)
            .and_then(|id| {
                let (mib, pct) = id.split_once('/')?;
                let mib: usize = mib.trim_end_matches("MiB").parse().ok()?;
                let pct: usize = pct.trim_end_matches('%').parse().ok()?;
                Some(sizes.get(&(mib, pct))?.0 * PAGE)
            })
            .or_else(|| {
                let mib: usize = name
                    .split(' ')
                    .nth(1)?
                    .trim_end_matches("MiB")
                    .parse()
                    .ok()?;
                Some(mib * MIB)
            })
            .unwrap_or(0);
        let rate = changed_bytes as f64 / MIB as f64 / cpu.as_secs_f64();
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {rate:.0} |",
            v.len(),
            ms(wall),
            ms(min),
            ms(cpu),
            ms(first),
            ms(second)
        );
    }
    println!(
        "\nwall: elapsed time (what criterion reports); CPU: this thread's CPU time, user + system"
    );
    println!(
        "(page faults included), which load on a shared machine does not inflate. Part 1 / part 2:"
    );
    println!(
        "capture (Task::digest: compare with the shadow, re-hash changed pages, digest) / encode"
    );
    println!("(LZ4, integrity check); restore: decode / apply (delta) or Task::restore (full).\n");
    println!(
        "| memory | changed | pages changed | delta bytes | full bytes | delta / changed bytes |"
    );
    println!("|---|---|---|---|---|---|");
    let full = FULL_SIZES.lock().unwrap_or_else(|e| e.into_inner());
    for ((mib, pct), (pages, bytes)) in sizes.iter() {
        let full = full
            .get(mib)
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".to_string());
        println!(
            "| {mib} MiB | {pct} % | {pages} | {bytes} | {full} | {:.3} |",
            *bytes as f64 / (pages * PAGE) as f64
        );
    }
}

fn main() {
    let engine = Engine::new().expect("engine");
    let mut c = Criterion::default()
        .sample_size(10)
        .without_plots()
        .configure_from_args();
    bench(&mut c, &engine);
    c.final_summary();
    summary();
}
