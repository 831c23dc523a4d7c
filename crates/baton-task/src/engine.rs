//! The wasm engine: wasmtime configured for deterministic, capturable tasks.
//!
//! This module owns the one place where wasmtime is configured (NaN
//! handling, features whose state we cannot capture off, epoch interruption
//! for `--max-step-time`), the epoch ticker thread, and compilation of
//! prepared modules into [`Program`]s that can be instantiated many times.
//! It does not run tasks ([`crate::task`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wasmtime::{Config, InstancePre, Linker, OptLevel, Strategy};

use crate::codecache::{CodeCache, CodeSource};
use crate::digest::Digest;
use crate::module::{self, ModuleError, Nans, Points, PreparedModule, Shape};
use crate::state::DirtyTracking;
use crate::task::StoreData;
use crate::wasi;
use crate::TaskError;

/// How often the epoch ticker advances the engine's epoch; the resolution
/// of `--max-step-time`.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most native stack a task's wasm may use: four times wasmtime's default
/// (512 KiB), and as much as this wasmtime allows without async support.
/// A suspendable command's frames are larger than the original's (about
/// three times, measured with `examples/recurse.wasm`), and a program must
/// not run out of stack under baton where it did not under wasmtime.
pub const MAX_WASM_STACK: usize = 2 << 20;

/// Native stack size a thread that runs tasks must have: [`MAX_WASM_STACK`]
/// and room for the host. A smaller stack turns deep recursion into a
/// crash instead of a trap.
pub const TASK_THREAD_STACK: usize = 8 << 20;

/// A wasmtime engine set up for baton tasks, with its epoch ticker.
///
/// Create one per process and share it (it is cheap to clone); compiled
/// [`Program`]s belong to the engine that compiled them.
///
/// Inside are two wasmtime engines that differ only in NaN handling: most
/// modules are rewritten to canonicalise NaNs where they become observable
/// ([`crate::nan`]) and run without Cranelift's per-operation
/// canonicalisation; modules with SIMD float arithmetic run with it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    /// How tasks created on this engine find their changed pages.
    tracking: DirtyTracking,
}

struct Flavor {
    engine: wasmtime::Engine,
    linker: Linker<StoreData>,
}

struct Inner {
    rewritten: Flavor,
    full_canonicalisation: Flavor,
    interruptible: bool,
    stop: Arc<AtomicBool>,
    cache: Option<CodeCache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn flavor(nan_canonicalisation: bool, interruptible: bool) -> Result<Flavor, TaskError> {
    let mut config = Config::new();
    config
        .strategy(Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(nan_canonicalisation)
        .epoch_interruption(interruptible)
        .max_wasm_stack(MAX_WASM_STACK)
        // The suspend transform marks its checks' rare side as cold.
        .wasm_branch_hinting(true)
        // Threads are compiled out of this wasmtime (no `threads` feature);
        // the rest are turned off explicitly.
        // The suspend transform adds a second memory for saved frames; a
        // user's module with several memories is still refused when it is
        // prepared.
        .wasm_multi_memory(true)
        .wasm_memory64(false)
        .wasm_gc(false);
    // For profiling with `perf`: names compiled functions in /tmp/perf-PID.map.
    if std::env::var_os("BATON_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = wasmtime::Engine::new(&config).map_err(|e| TaskError::Engine(format!("{e:#}")))?;
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker, |d: &mut StoreData| &mut d.host)
        .map_err(|e| TaskError::Engine(format!("{e:#}")))?;
    crate::task::add_point_mark(&mut linker).map_err(|e| TaskError::Engine(format!("{e:#}")))?;
    Ok(Flavor { engine, linker })
}

/// [`DirtyTracking::best`]; where that is the compare, says why once (at
/// `-v`).
fn dirty_tracking() -> DirtyTracking {
    let (best, why) = DirtyTracking::best();
    if let Some(why) = why {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::info!(%why, "dirty pages: comparing memory at every point");
        });
    }
    best
}

/// The code cache engines use: [`CodeCache::default_dir`], unless
/// `BATON_CACHE_DIR` is `off`.
fn code_cache() -> Option<CodeCache> {
    if std::env::var_os("BATON_CACHE_DIR").is_some_and(|v| v == "off") {
        return None;
    }
    CodeCache::default_dir().map(CodeCache::new)
}

impl Engine {
    /// Creates an engine that can enforce `max_step_time`, and starts its
    /// epoch ticker thread.
    ///
    /// # Errors
    ///
    /// [`TaskError::Engine`] if wasmtime rejects the configuration or the
    /// ticker thread cannot be started.
    pub fn new() -> Result<Engine, TaskError> {
        Engine::with_step_limits(true)
    }

    /// Creates an engine; with `step_limits` false, compiled code carries no
    /// epoch checks (measured 15 % faster on tight loops) and tasks created
    /// with a `max_step_time` are refused.
    ///
    /// # Errors
    ///
    /// As [`Engine::new`].
    pub fn with_step_limits(step_limits: bool) -> Result<Engine, TaskError> {
        let rewritten = flavor(false, step_limits)?;
        let full_canonicalisation = flavor(true, step_limits)?;
        let stop = Arc::new(AtomicBool::new(false));
        if step_limits {
            let engines = [
                rewritten.engine.clone(),
                full_canonicalisation.engine.clone(),
            ];
            let tick_stop = stop.clone();
            thread::Builder::new()
                .name("baton-epoch".to_string())
                .spawn(move || {
                    while !tick_stop.load(Ordering::Relaxed) {
                        thread::sleep(EPOCH_TICK);
                        for e in &engines {
                            e.increment_epoch();
                        }
                    }
                })
                .map_err(|e| TaskError::Engine(format!("cannot start the epoch thread: {e}")))?;
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                rewritten,
                full_canonicalisation,
                interruptible: step_limits,
                cache: code_cache(),
                stop,
            }),
            tracking: dirty_tracking(),
        })
    }

    /// How tasks on this engine find the pages a step changed.
    pub fn dirty_tracking(&self) -> DirtyTracking {
        self.tracking
    }

    /// This engine (sharing its compiled code), with tasks created from
    /// now on tracking changed pages `tracking`'s way. Asking for
    /// [`DirtyTracking::Kernel`] where the kernel cannot still compares.
    pub fn with_dirty_tracking(&self, tracking: DirtyTracking) -> Engine {
        Engine {
            inner: self.inner.clone(),
            tracking,
        }
    }

    /// Whether tasks on this engine can have a `max_step_time`.
    pub fn step_limits(&self) -> bool {
        self.inner.interruptible
    }

    /// Validates, prepares and compiles a module.
    ///
    /// # Errors
    ///
    /// [`TaskError::Module`] naming what is wrong with the module, or
    /// [`TaskError::Compile`] if compilation fails.
    pub fn load(&self, bytes: &[u8]) -> Result<Program, TaskError> {
        self.load_with(bytes, true)
    }

    /// As [`Engine::load`]; with `suspend` false, a command is not made
    /// suspendable: it runs as one step, without the transform's checks.
    ///
    /// # Errors
    ///
    /// As [`Engine::load`].
    pub fn load_with(&self, bytes: &[u8], suspend: bool) -> Result<Program, TaskError> {
        self.load_as(bytes, suspend, Nans::Canonical)
    }

    /// As [`Engine::load_with`], with NaN results as `nans` says. Programs
    /// of one module prepared either way run from each other's states (the
    /// state does not depend on it); only NaN bits computed later differ.
    ///
    /// # Errors
    ///
    /// As [`Engine::load`].
    pub fn load_as(&self, bytes: &[u8], suspend: bool, nans: Nans) -> Result<Program, TaskError> {
        let started = std::time::Instant::now();
        // A module prepared before is not prepared again: the compiled code
        // and what preparing found are in the cache, under the module's
        // digest and the preparation's key. Which flavour compiled it is
        // not known before preparing, so each is looked up.
        let digest = Digest::of(bytes);
        let key = module::preparation_key(digest, suspend, nans);
        if let Some(cache) = &self.inner.cache {
            for (flavor, full) in [
                (&self.inner.rewritten, false),
                (&self.inner.full_canonicalisation, true),
            ] {
                let Some((module, note)) = cache.lookup(&flavor.engine, &key) else {
                    continue;
                };
                match PreparedModule::from_note(digest, &note) {
                    Some(prepared) if prepared.full_nan_canonicalisation() == full => {
                        tracing::debug!(
                            ms = started.elapsed().as_millis() as u64,
                            points = ?prepared.points(),
                            "prepared and compiled module from the cache"
                        );
                        return finish(prepared, module, flavor);
                    }
                    _ => tracing::warn!("ignoring a code cache note that does not fit its module"),
                }
            }
        }
        let prepared = module::prepare_as(bytes, wasi::PROVIDED, suspend, nans)?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            points = ?prepared.points(),
            "module prepared"
        );
        let started = std::time::Instant::now();
        let flavor = if prepared.full_nan_canonicalisation() {
            &self.inner.full_canonicalisation
        } else {
            &self.inner.rewritten
        };
        let (module, source) = match &self.inner.cache {
            Some(cache) => {
                let (module, _, source) = cache.load_or_make(&flavor.engine, &key, || {
                    Ok((prepared.bytes().to_vec(), prepared.note()))
                })?;
                (module, source)
            }
            None => (
                CodeCache::compile_uncached(&flavor.engine, prepared.bytes())?,
                CodeSource::Compiled,
            ),
        };
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            ?source,
            "module compiled"
        );
        finish(prepared, module, flavor)
    }
}

/// A program from a prepared module and its compiled code.
fn finish(
    prepared: PreparedModule,
    module: wasmtime::Module,
    flavor: &Flavor,
) -> Result<Program, TaskError> {
    if let Points::OneStep(why) = prepared.points() {
        // Only when the transform refused: a caller that turned points off
        // knows.
        if !why.contains("turned off") {
            tracing::warn!(
                "this program runs as one step, with no points in the middle (it cannot be moved or resumed mid-run): {why}"
            );
        }
    }
    // Resolves every import against the host now, so that a WASI
    // function imported with the wrong type is rejected at load time.
    let pre = flavor
        .linker
        .instantiate_pre(&module)
        .map_err(|e| ModuleError::ImportType(format!("{e:#}")))?;
    Ok(Program {
        inner: Arc::new(ProgramInner {
            prepared,
            pre,
            engine: flavor.engine.clone(),
        }),
    })
}

/// A compiled, prepared module: instantiate it with
/// [`Task::create`](crate::Task::create) or
/// [`Task::restore`](crate::Task::restore). Cheap to clone.
#[derive(Clone)]
pub struct Program {
    inner: Arc<ProgramInner>,
}

struct ProgramInner {
    prepared: PreparedModule,
    pre: InstancePre<StoreData>,
    engine: wasmtime::Engine,
}

impl Program {
    /// The module's content digest (of the bytes the user supplied).
    pub fn digest(&self) -> Digest {
        self.inner.prepared.digest()
    }

    /// The task shape.
    pub fn shape(&self) -> Shape {
        self.inner.prepared.shape()
    }

    /// Where the program's points can fall.
    pub fn points(&self) -> &Points {
        self.inner.prepared.points()
    }

    pub(crate) fn prepared(&self) -> &PreparedModule {
        &self.inner.prepared
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<StoreData> {
        &self.inner.pre
    }
}
