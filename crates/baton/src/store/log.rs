//! The durable store behind a protocol stub: one append-only log per task.
//!
//! Owns the on-disk form of what a stub's `Persist` requests write (the
//! side's record, the newest state, output not yet delivered) and getting
//! it back after a crash. One file, `log`, of entries
//!
//! ```text
//! [payload length: u32 LE][CRC-32 of kind + payload: u32 LE][kind: u8][payload]
//! kind 1  record   the side's journal record (baton_proto's versioned encoding)
//! kind 2  full     a full checkpoint
//! kind 3  delta    a delta checkpoint against the state before it
//! kind 4  output   one output chunk: [point: u64 LE][bytes]
//! kind 5  delivered  the local side showed the output through this point: [u64 LE]
//! ```
//!
//! A request is appended as its state, its outputs, then its record. With
//! [`Durability::EveryWrite`] (a remote run's two sides: the peer is told
//! a state is held only once it is) the log is fsynced before
//! [`TaskLog::append`] returns; with [`Durability::Grouped`] (a local run's
//! journal, which promises nothing to anyone else) every append reaches the
//! kernel at once, so a kill -9 loses nothing, and the fsync comes at most
//! that often and when the run stops, so a machine crash loses at most that
//! much progress, recomputed on resume. Recovery replays the log: the newest full
//! state plus the deltas after it, the last record, the outputs. A torn or
//! damaged entry ends the replay; the bytes from there on are moved to
//! `log.damaged` for a person and the log is cut, so the side goes on from
//! the last intact request (an older durable point, never a wrong one: every
//! state's digest is checked). When the log grows past four times the last
//! full state (and 16 MiB), it is rewritten as one full state, the record
//! and the outputs still needed (to a temporary file, fsynced, renamed).
//!
//! It must not interpret records or decide what to keep: the caller says
//! which outputs are still needed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_proto::{Blob, OutputChunk, Point, StateRef};
use baton_task::checkpoint::{self, Decoded};
use baton_task::State;

use crate::drive::exec::wire_digest;
use crate::store::fs::{sync_dir as sync_dir_fs, write_atomic_with, FsError};

const KIND_RECORD: u8 = 1;
const KIND_FULL: u8 = 2;
const KIND_DELTA: u8 = 3;
const KIND_OUTPUT: u8 = 4;
const KIND_DELIVERED: u8 = 5;
const HEADER: usize = 9;
/// Largest entry accepted when reading (a full 4 GiB memory plus room).
const MAX_ENTRY: u64 = (4 << 30) + (64 << 20);
/// A log is compacted once it is this many times the last full state...
const COMPACT_FACTOR: u64 = 4;
/// ...and at least this big.
const COMPACT_MIN: u64 = 16 << 20;

/// When appended entries are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Fsync before every append returns (a state acknowledged to a peer
    /// must survive a machine crash).
    EveryWrite,
    /// Fsync at most this often, and on [`TaskLog::sync`]; every append
    /// still reaches the kernel at once (a process crash loses nothing).
    Grouped(Duration),
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A state to write with a request.
#[derive(Clone, Copy, Debug)]
pub enum StateBytes<'a> {
    /// A full checkpoint.
    Full(&'a [u8]),
    /// A delta against the store's newest state.
    Delta(&'a [u8]),
}

/// What a log held after a crash.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The last record written (encoded), if any.
    pub record: Option<Vec<u8>>,
    /// The newest intact state, with its reference.
    pub state: Option<(StateRef, State)>,
    /// Every output chunk written, in order (the caller drops delivered
    /// ones).
    pub outputs: Vec<OutputChunk>,
    /// What was wrong, for the user (a cut tail, a state that did not
    /// apply).
    pub damage: Option<String>,
    /// The newest point whose output the local side showed.
    pub delivered: Point,
}

/// One task's log, open for appending.
#[derive(Debug)]
pub struct TaskLog {
    dir: PathBuf,
    file: File,
    len: u64,
    full_len: u64,
    /// Outputs in the log, for compaction (the caller says which to keep).
    outputs: Vec<OutputChunk>,
    /// The newest delivered point noted, kept across compaction.
    delivered: Point,
    durability: Durability,
    /// When the file was last fsynced, and whether appends came since.
    synced: Instant,
    unsynced: bool,
}

/// The largest payload an entry's 4-byte length can say.
const MAX_PAYLOAD: usize = u32::MAX as usize;

/// Writes one entry (header, then the payload's pieces as they are: a
/// state is never copied into a buffer of its own) and returns its size.
fn write_entry(w: &mut (impl Write + ?Sized), kind: u8, payload: &[&[u8]]) -> io::Result<u64> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    // Callers check with `too_large` first; this only keeps the length
    // field from wrapping if one does not.
    let len = len.min(MAX_PAYLOAD);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    for p in payload {
        crc.update(p);
    }
    let mut head = [0u8; HEADER];
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    head[8] = kind;
    w.write_all(&head)?;
    for p in payload {
        w.write_all(p)?;
    }
    Ok((HEADER + len) as u64)
}

fn write_output(w: &mut (impl Write + ?Sized), o: &OutputChunk) -> io::Result<u64> {
    write_entry(
        w,
        KIND_OUTPUT,
        &[&o.point.0.to_le_bytes(), o.bytes.as_bytes()],
    )
}

/// One entry as bytes (for tests that forge logs).
#[cfg(test)]
fn entry(kind: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write_entry(&mut out, kind, payload);
    out
}

/// Small entries gather here; a large payload passes straight through.
const WRITE_BUFFER: usize = 64 << 10;

/// Refuses an entry whose length the format cannot hold (a checkpoint of
/// an incompressible memory near 4 GiB).
fn too_large(dir: &Path, len: usize) -> Result<(), StoreError> {
    if len > MAX_PAYLOAD {
        return Err(StoreError::Io {
            path: dir.join("log"),
            source: io::Error::other(format!(
                "an entry of {len} bytes is larger than a log entry can be ({MAX_PAYLOAD})"
            )),
        });
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    Ok(sync_dir_fs(dir)?)
}

impl TaskLog {
    /// Creates an empty log in `dir` (which must exist).
    ///
    /// # Errors
    ///
    /// The file cannot be created.
    pub fn create(dir: &Path) -> Result<TaskLog, StoreError> {
        let path = dir.join("log");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(TaskLog {
            dir: dir.to_path_buf(),
            file,
            len: 0,
            full_len: 0,
            outputs: Vec::new(),
            delivered: Point(0),
            durability: Durability::EveryWrite,
            synced: Instant::now(),
            unsynced: false,
        })
    }

    /// Notes that the directory holding the log was renamed to `dir`.
    pub fn moved_to(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
    }

    /// Sets when appends are forced to disk (default:
    /// [`Durability::EveryWrite`]).
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// Forces every append so far to disk.
    ///
    /// # Errors
    ///
    /// The sync failed.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced {
            let path = self.dir.join("log");
            self.file.sync_data().map_err(io_err(&path))?;
            self.unsynced = false;
        }
        self.synced = Instant::now();
        Ok(())
    }

    /// Syncs if the durability setting says it is time.
    fn sync_due(&mut self) -> Result<(), StoreError> {
        self.unsynced = true;
        match self.durability {
            Durability::EveryWrite => self.sync(),
            Durability::Grouped(every) if self.synced.elapsed() >= every => self.sync(),
            Durability::Grouped(_) => Ok(()),
        }
    }

    /// Opens the log in `dir` and replays it. A damaged tail is cut off
    /// (and kept in `log.damaged`); see the module documentation.
    ///
    /// # Errors
    ///
    /// The file cannot be read or written.
    pub fn open(
        dir: &Path,
        limits: &checkpoint::Limits,
    ) -> Result<(TaskLog, Recovered), StoreError> {
        let path = dir.join("log");
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(&path))?;
        let (good, full_len, rec) = replay(&bytes, limits);
        if (good as usize) < bytes.len() {
            let damaged = dir.join("log.damaged");
            fs::write(&damaged, &bytes[good as usize..]).map_err(io_err(&damaged))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(good).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        let mut log = TaskLog {
            dir: dir.to_path_buf(),
            file,
            len: good,
            full_len,
            outputs: rec.outputs.clone(),
            delivered: rec.delivered,
            durability: Durability::EveryWrite,
            synced: Instant::now(),
            unsynced: false,
        };
        log.seek_end()?;
        Ok((log, rec))
    }

    fn seek_end(&mut self) -> Result<(), StoreError> {
        use std::io::Seek;
        let path = self.dir.join("log");
        self.file
            .seek(io::SeekFrom::Start(self.len))
            .map_err(io_err(&path))?;
        Ok(())
    }

    /// Reads what the log in `dir` holds without changing anything (for
    /// listings: a damaged tail is reported, not cut).
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub fn read(dir: &Path, limits: &checkpoint::Limits) -> Result<Recovered, StoreError> {
        let path = dir.join("log");
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(&path))?;
        Ok(replay(&bytes, limits).2)
    }

    /// Appends one request (state, outputs, then the record) and fsyncs.
    ///
    /// # Errors
    ///
    /// The write or the sync failed; nothing may then be reported durable.
    pub fn append(
        &mut self,
        record: &[u8],
        state: Option<StateBytes<'_>>,
        outputs: &[OutputChunk],
    ) -> Result<(), StoreError> {
        let state_len = match state {
            Some(StateBytes::Full(b) | StateBytes::Delta(b)) => b.len(),
            None => 0,
        };
        too_large(&self.dir, state_len.max(record.len()))?;
        for o in outputs {
            too_large(&self.dir, o.bytes.len() + 8)?;
        }
        let path = self.dir.join("log");
        let mut w = io::BufWriter::with_capacity(WRITE_BUFFER, &self.file);
        let mut written = 0;
        let mut put = || -> io::Result<()> {
            match state {
                Some(StateBytes::Full(b)) => written += write_entry(&mut w, KIND_FULL, &[b])?,
                Some(StateBytes::Delta(b)) => written += write_entry(&mut w, KIND_DELTA, &[b])?,
                None => {}
            }
            for o in outputs {
                written += write_output(&mut w, o)?;
            }
            written += write_entry(&mut w, KIND_RECORD, &[record])?;
            w.flush()
        };
        put().map_err(io_err(&path))?;
        drop(w);
        if let Some(StateBytes::Full(b)) = state {
            self.full_len = b.len() as u64;
        }
        self.len += written;
        self.outputs.extend_from_slice(outputs);
        self.sync_due()
    }

    /// Notes that the output through `point` was shown to the user. Not
    /// synced by itself: the next [`Self::append`] syncs it, so a crash can
    /// show the output of the last moments again, never lose it.
    ///
    /// # Errors
    ///
    /// The write failed.
    pub fn append_delivered(&mut self, point: Point) -> Result<(), StoreError> {
        let path = self.dir.join("log");
        let n = write_entry(&mut &self.file, KIND_DELIVERED, &[&point.0.to_le_bytes()])
            .map_err(io_err(&path))?;
        self.len += n;
        self.delivered = self.delivered.max(point);
        self.unsynced = true;
        Ok(())
    }

    /// Whether the log has grown enough to be rewritten.
    pub fn wants_compaction(&self) -> bool {
        self.len > COMPACT_MIN.max(self.full_len.saturating_mul(COMPACT_FACTOR))
    }

    /// Rewrites the log as `full` (a full checkpoint of the newest state:
    /// from a live task, which then takes it as its delta base, or encoded
    /// from the store), the outputs after point `keep_after` and `record`
    /// (atomically: a crash leaves the old log or the new one).
    ///
    /// # Errors
    ///
    /// Writing failed; the old log is then still in place.
    pub fn compact(
        &mut self,
        full: &[u8],
        record: &[u8],
        keep_after: Point,
    ) -> Result<(), StoreError> {
        self.outputs.retain(|o| o.point > keep_after);
        let outputs = std::mem::take(&mut self.outputs);
        let result = self.rewrite(full, record, &outputs);
        self.outputs = outputs;
        result
    }

    fn rewrite(
        &mut self,
        full: &[u8],
        record: &[u8],
        outputs: &[OutputChunk],
    ) -> Result<(), StoreError> {
        too_large(&self.dir, full.len())?;
        let path = self.dir.join("log");
        let mut written = 0;
        let delivered = self.delivered.0.to_le_bytes();
        write_atomic_with(&path, |w| {
            written += write_entry(w, KIND_FULL, &[full])?;
            for o in outputs {
                written += write_output(w, o)?;
            }
            written += write_entry(w, KIND_DELIVERED, &[&delivered])?;
            written += write_entry(w, KIND_RECORD, &[record])?;
            Ok(())
        })?;
        self.file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.len = written;
        self.full_len = full.len() as u64;
        self.synced = Instant::now();
        self.unsynced = false;
        self.seek_end()
    }
}

/// Replays `bytes`; returns the length of the intact prefix, the size of
/// the last full state in it, and what it held: the newest intact state
/// (which may be one step newer than the last record, if a crash came
/// between a request's state and its record), the last record, every
/// output.
fn replay(bytes: &[u8], limits: &checkpoint::Limits) -> (u64, u64, Recovered) {
    let mut rec = Recovered::default();
    let mut pos = 0usize;
    let mut full_len = 0u64;
    while pos < bytes.len() {
        let Some(head) = bytes.get(pos..pos + HEADER) else {
            rec.damage = Some(format!("a torn entry at byte {pos}"));
            break;
        };
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let kind = head[8];
        let end = pos + HEADER + len as usize;
        if len > MAX_ENTRY || end > bytes.len() {
            rec.damage = Some(format!("a torn entry at byte {pos}"));
            break;
        }
        let payload = &bytes[pos + HEADER..end];
        let mut h = crc32fast::Hasher::new();
        h.update(&[kind]);
        h.update(payload);
        if h.finalize() != crc {
            rec.damage = Some(format!("a damaged entry at byte {pos} (checksum)"));
            break;
        }
        let step: Result<(), String> = match kind {
            KIND_FULL => match checkpoint::decode(payload, limits) {
                Ok(Decoded::Full(state)) => state_ref(&state).map(|r| {
                    full_len = payload.len() as u64;
                    rec.state = Some((r, state));
                }),
                Ok(Decoded::Delta(_)) => Err("a delta stored as a full state".into()),
                Err(e) => Err(e.to_string()),
            },
            KIND_DELTA => match (checkpoint::decode(payload, limits), rec.state.as_mut()) {
                (Ok(Decoded::Delta(d)), Some((r, st))) => {
                    let next = StateRef::new(Point(d.point()), wire_digest(d.digest()));
                    // `apply` checks the base and the result, and leaves the
                    // state as it was if either is wrong.
                    d.apply(st).map(|()| *r = next).map_err(|e| e.to_string())
                }
                (Ok(Decoded::Delta(_)), None) => Err("a delta with no state before it".into()),
                (Ok(Decoded::Full(_)), _) => Err("a full state stored as a delta".into()),
                (Err(e), _) => Err(e.to_string()),
            },
            KIND_OUTPUT => match payload.get(..8) {
                Some(p) => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(p);
                    rec.outputs.push(OutputChunk {
                        point: Point(u64::from_le_bytes(n)),
                        bytes: Blob::from(&payload[8..]),
                    });
                    Ok(())
                }
                None => Err("a short output entry".into()),
            },
            KIND_RECORD => {
                rec.record = Some(payload.to_vec());
                Ok(())
            }
            KIND_DELIVERED => match <[u8; 8]>::try_from(payload) {
                Ok(n) => {
                    rec.delivered = rec.delivered.max(Point(u64::from_le_bytes(n)));
                    Ok(())
                }
                Err(_) => Err("a delivered mark of the wrong size".into()),
            },
            other => Err(format!("an entry of unknown kind {other}")),
        };
        if let Err(e) = step {
            rec.damage = Some(format!("entry at byte {pos}: {e}"));
            break;
        }
        pos = end;
    }
    (pos as u64, full_len, rec)
}

fn state_ref(state: &State) -> Result<StateRef, String> {
    let d = state.digest().map_err(|e| e.to_string())?;
    Ok(StateRef::new(Point(state.point), wire_digest(d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_task::{Engine, Task, TaskConfig};

    const PI: &[u8] = include_bytes!("../../../../examples/pi.wasm");

    /// A full checkpoint at point 0, then `n` deltas, each with its state.
    fn history(n: usize) -> (Vec<u8>, Vec<(Vec<u8>, StateRef)>) {
        let engine = Engine::new().unwrap();
        let program = engine.load(PI).unwrap();
        let mut cfg = TaskConfig::new("pi.wasm");
        cfg.host.args = vec!["pi.wasm".into(), "40".into(), "1000".into()];
        let mut task =
            Task::create(&engine, &program, cfg, Box::new(baton_task::wasi::Discard)).unwrap();
        let full = task.checkpoint().unwrap().bytes;
        let mut deltas = Vec::new();
        for _ in 0..n {
            task.step().unwrap();
            let d = task.delta().unwrap();
            let r = StateRef::new(Point(d.point), wire_digest(d.digest));
            deltas.push((d.bytes, r));
            task.rebase().unwrap();
        }
        (full, deltas)
    }

    fn out(p: u64) -> OutputChunk {
        OutputChunk {
            point: Point(p),
            bytes: Blob::from(format!("line {p}\n").into_bytes()),
        }
    }

    fn limits() -> checkpoint::Limits {
        checkpoint::Limits::default()
    }

    #[test]
    fn requests_come_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (full, deltas) = history(5);
        let mut log = TaskLog::create(dir.path()).unwrap();
        log.append(b"r0", Some(StateBytes::Full(&full)), &[])
            .unwrap();
        for (i, (d, _)) in deltas.iter().enumerate() {
            let rec = format!("r{}", i + 1);
            log.append(
                rec.as_bytes(),
                Some(StateBytes::Delta(d)),
                &[out(i as u64 + 1)],
            )
            .unwrap();
        }
        drop(log);
        let (_, rec) = TaskLog::open(dir.path(), &limits()).unwrap();
        assert_eq!(rec.record.as_deref(), Some(&b"r5"[..]));
        assert_eq!(rec.state.as_ref().map(|(r, _)| *r), Some(deltas[4].1));
        assert_eq!(rec.outputs.len(), 5);
        assert!(rec.damage.is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_and_kept_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (full, deltas) = history(3);
        let mut log = TaskLog::create(dir.path()).unwrap();
        log.append(b"r0", Some(StateBytes::Full(&full)), &[])
            .unwrap();
        log.append(b"r1", Some(StateBytes::Delta(&deltas[0].0)), &[])
            .unwrap();
        drop(log);
        // Half of the next request reaches the disk.
        let path = dir.path().join("log");
        let whole = entry(KIND_DELTA, &[&deltas[1].0]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&whole[..whole.len() / 2]).unwrap();
        drop(f);
        let (mut log, rec) = TaskLog::open(dir.path(), &limits()).unwrap();
        assert!(rec.damage.is_some());
        assert_eq!(rec.record.as_deref(), Some(&b"r1"[..]));
        assert_eq!(rec.state.as_ref().map(|(r, _)| *r), Some(deltas[0].1));
        assert!(dir.path().join("log.damaged").is_file());
        // Appending continues from the intact prefix.
        log.append(b"r2", Some(StateBytes::Delta(&deltas[1].0)), &[])
            .unwrap();
        drop(log);
        let (_, rec) = TaskLog::open(dir.path(), &limits()).unwrap();
        assert!(rec.damage.is_none(), "{:?}", rec.damage);
        assert_eq!(rec.state.map(|(r, _)| r), Some(deltas[1].1));
    }

    #[test]
    fn every_flipped_byte_gives_an_older_intact_state_or_none_never_a_wrong_one() {
        let dir = tempfile::tempdir().unwrap();
        let (full, deltas) = history(2);
        let mut log = TaskLog::create(dir.path()).unwrap();
        log.append(b"r0", Some(StateBytes::Full(&full)), &[])
            .unwrap();
        log.append(b"r1", Some(StateBytes::Delta(&deltas[0].0)), &[out(1)])
            .unwrap();
        log.append(b"r2", Some(StateBytes::Delta(&deltas[1].0)), &[out(2)])
            .unwrap();
        drop(log);
        let path = dir.path().join("log");
        let clean = fs::read(&path).unwrap();
        let valid = [deltas[0].1, deltas[1].1];
        // Every 97th byte, so the test stays quick.
        for i in (0..clean.len()).step_by(97) {
            let mut bad = clean.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            let (_, rec) = TaskLog::open(dir.path(), &limits()).unwrap();
            assert!(rec.damage.is_some(), "byte {i}: damage not seen");
            if let Some((r, _)) = rec.state {
                assert!(
                    r.point == Point(0) || valid.contains(&r),
                    "byte {i}: a state that was never written"
                );
            }
        }
    }

    #[test]
    fn compaction_keeps_the_newest_state_record_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (full, deltas) = history(4);
        let mut log = TaskLog::create(dir.path()).unwrap();
        log.append(b"r0", Some(StateBytes::Full(&full)), &[])
            .unwrap();
        for (d, _) in &deltas {
            log.append(b"r", Some(StateBytes::Delta(d)), &[]).unwrap();
        }
        drop(log);
        let (mut log, rec) = TaskLog::open(dir.path(), &limits()).unwrap();
        let (r, state) = rec.state.unwrap();
        log.append(b"r5", None, &[out(3), out(4)]).unwrap();
        log.append_delivered(Point(3)).unwrap();
        let full = checkpoint::encode_full(&state).unwrap().bytes;
        log.compact(&full, b"compacted", Point(3)).unwrap();
        drop(log);
        let (_, rec) = TaskLog::open(dir.path(), &limits()).unwrap();
        assert_eq!(rec.record.as_deref(), Some(&b"compacted"[..]));
        assert_eq!(rec.state.map(|(s, _)| s), Some(r));
        assert_eq!(rec.outputs.len(), 1);
        assert_eq!(rec.delivered, Point(3));
        assert!(!dir.path().join("log.tmp").exists());
    }
}
