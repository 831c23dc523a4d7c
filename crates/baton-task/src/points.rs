//! Asking a running suspendable command for a point, from any thread.
//!
//! A command made suspendable ([`crate::suspend`]) takes a point when the
//! request byte of its frame memory is set. This module owns the two ways
//! it gets set: [`PointRequest::now`], which anyone holding the task's
//! handle may call (migration, Ctrl-C, hand-back, drain), and a schedule
//! (`--point-every`), kept by one clock thread per engine that sets the byte
//! of each task whose time has come.
//!
//! It must not touch anything of the task but that one byte, and only while
//! the task's store is alive: the task clears the handle's pointer (under
//! its lock) before its store goes.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// How often the clock thread looks at the schedule.
const CLOCK_TICK: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Slot {
    /// Address of the request byte; `None` once the task is gone.
    byte: Option<usize>,
    /// When the scheduled point is due; `None` while none is.
    due: Option<Instant>,
}

/// A handle that asks one task for a point. Cheap to clone; does nothing
/// once the task is gone.
#[derive(Clone)]
pub struct PointRequest {
    slot: Arc<Mutex<Slot>>,
}

impl std::fmt::Debug for PointRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointRequest").finish_non_exhaustive()
    }
}

fn set(slot: &Slot) {
    if let Some(addr) = slot.byte {
        // SAFETY: `addr` is the request byte of a live frame memory: the
        // task clears it under this lock before its store is dropped, and
        // the memory never moves (`memory_may_move(false)`). The guest reads
        // the byte with plain loads; a byte store is atomic on every target
        // wasmtime supports, and the guest only needs to see it eventually.
        unsafe { &*(addr as *const AtomicU8) }.store(1, Ordering::Relaxed);
    }
}

impl PointRequest {
    pub(crate) fn new(byte: *mut u8) -> PointRequest {
        PointRequest {
            slot: Arc::new(Mutex::new(Slot {
                byte: Some(byte as usize),
                due: None,
            })),
        }
    }

    /// Asks for a point as soon as possible: the task reaches one within
    /// milliseconds (at its next host call, function entry or loop header).
    pub fn now(&self) {
        if let Ok(slot) = self.slot.lock() {
            set(&slot);
        }
    }

    pub(crate) fn schedule(&self, due: Option<Instant>) {
        if let Ok(mut slot) = self.slot.lock() {
            slot.due = due;
        }
    }

    /// Forgets the task; called before its store is dropped.
    pub(crate) fn detach(&self) {
        if let Ok(mut slot) = self.slot.lock() {
            slot.byte = None;
            slot.due = None;
        }
    }
}

/// The thread that keeps the schedules of an engine's tasks.
pub(crate) struct PointClock {
    slots: Mutex<Vec<Weak<Mutex<Slot>>>>,
    running: AtomicBool,
    stop: Arc<AtomicBool>,
}

impl PointClock {
    pub(crate) fn new(stop: Arc<AtomicBool>) -> Arc<PointClock> {
        Arc::new(PointClock {
            slots: Mutex::new(Vec::new()),
            running: AtomicBool::new(false),
            stop,
        })
    }

    /// Keeps `request`'s schedule from now on (starting the thread the
    /// first time).
    pub(crate) fn watch(self: &Arc<Self>, request: &PointRequest) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.push(Arc::downgrade(&request.slot));
        }
        if !self.running.swap(true, Ordering::AcqRel) {
            let clock = Arc::downgrade(self);
            let stop = self.stop.clone();
            let spawned = thread::Builder::new()
                .name("baton-points".to_string())
                .spawn(move || run(clock, stop));
            if let Err(e) = spawned {
                // Scheduled points are then late, not lost: requests made
                // with `now` still work.
                tracing::warn!("cannot start the point clock thread: {e}");
                self.running.store(false, Ordering::Release);
            }
        }
    }
}

fn run(clock: Weak<PointClock>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(CLOCK_TICK);
        let Some(clock) = clock.upgrade() else { return };
        let Ok(mut slots) = clock.slots.lock() else {
            return;
        };
        let now = Instant::now();
        slots.retain(|weak| {
            let Some(slot) = weak.upgrade() else {
                return false;
            };
            let Ok(mut slot) = slot.lock() else {
                return false;
            };
            if slot.due.is_some_and(|due| due <= now) {
                set(&slot);
                slot.due = None;
            }
            slot.byte.is_some()
        });
    }
}
