//! The local journal behind `--state-dir` and `baton resume`.
//!
//! One directory per task, `<state-dir>/<task-id>/`, holding:
//!
//! ```text
//! task.json      how the task was started (module digest, dirs, limits)
//! module.wasm    the module itself, so a resume does not depend on the original file
//! base.ckpt      a full checkpoint
//! points.log     every later point, appended as a delta against the point before:
//!                records of [u64 little-endian length][checkpoint bytes]
//! finished.json  written once the task finished and its files were written back
//! lock           flock()ed by the one process running the task
//! points.log.dropped  bytes cut off a damaged or torn log, kept for a person
//! ```
//!
//! What is written at a point is the pages that changed in the last step,
//! so the journal's cost grows with the work the task did, not with its
//! memory. When the log has grown past the size of the base, the next point
//! is written as a new base (to a temporary file, fsynced, renamed) and the
//! log starts afresh. A log whose first record does not follow the current
//! base (a crash between those two writes) is ignored: the base is newer.
//!
//! Appends reach the kernel at every point, so killing the process loses
//! nothing that was journaled; they are fsynced at most every
//! [`SYNC_EVERY`] and when the task stops, so a machine crash loses at most
//! that much progress (it is recomputed on resume). A torn last record is
//! detected by the checkpoint's own integrity hash and dropped.
//!
//! Owns the directory format only; when to write is the runner's decision.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_task::checkpoint::{self, CheckpointError, Decoded, Limits as DecodeLimits};
use baton_task::{Checkpoint, State};
use serde::{Deserialize, Serialize};

/// Longest time journaled points stay unsynced to disk.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);

/// Format version of `task.json`.
const RECORD_VERSION: u32 = 1;

/// How a task was started: everything `baton resume` needs besides the
/// state itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Format version.
    pub version: u32,
    /// The task's id.
    pub id: String,
    /// The module file as given on the command line (informational).
    pub module_path: String,
    /// Digest of the module bytes.
    pub module_digest: String,
    /// Preopened directories as (host path, guest path).
    pub dirs: Vec<(PathBuf, String)>,
    /// `--max-memory` in bytes.
    pub max_memory: u64,
    /// `--max-step-time` in milliseconds.
    pub max_step_time_ms: Option<u64>,
    /// Whether `--wall-clock` was given.
    pub wall_clock: bool,
    /// Set for a task extended onto an agent (`baton run --remote`): its
    /// protocol state is in `log` instead of `base.ckpt` and `points.log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSpec>,
}

impl TaskRecord {
    /// The task's preopened directories.
    pub fn preopens(&self) -> Vec<baton_task::wasi::Preopen> {
        self.dirs
            .iter()
            .map(|(host, guest)| baton_task::wasi::Preopen {
                host: host.clone(),
                guest: guest.clone(),
            })
            .collect()
    }
}

/// How a remote run was set up, for `baton resume` to re-attach.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// `--remote` as given.
    pub agent: String,
    /// The pinned agent fingerprint.
    pub fingerprint: String,
    /// `--migrate`.
    pub migrate: String,
    /// `--responsible`.
    pub responsible: String,
    /// `--mode`.
    pub mode: String,
    /// `--disconnect-after` in milliseconds.
    pub disconnect_after_ms: u64,
    /// `--takeover-after` in milliseconds.
    pub takeover_after_ms: u64,
    /// Pre-copy on.
    pub precopy: bool,
    /// `--identity`, if given.
    pub identity: Option<PathBuf>,
    /// The virtual clock's start (for the agent's task settings).
    pub clock_start_ns: Option<u64>,
}

/// What `finished.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishRecord {
    /// The task's exit status.
    pub exit_status: i32,
    /// The final point.
    pub points: u64,
    /// The final state digest.
    pub digest: String,
}

/// Errors reading or writing a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No journal for this id.
    #[error("no task `{id}` is journaled in {}", dir.display())]
    NotFound {
        /// The id asked for.
        id: String,
        /// The state directory searched.
        dir: PathBuf,
    },
    /// The id is already in use.
    #[error("a task `{id}` is already journaled in {}; resume it with `baton resume {id}` or choose another --name", dir.display())]
    Exists {
        /// The id.
        id: String,
        /// The state directory.
        dir: PathBuf,
    },
    /// The id would not make a safe directory name.
    #[error(
        "task id `{0}` may only contain letters, digits, '-', '_' and '.' (and not start with '.')"
    )]
    BadId(String),
    /// `task.json` or `finished.json` is unreadable.
    #[error("{} is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the journal.
    #[error("task `{0}` is being run by another baton process right now")]
    Busy(String),
    /// No state directory given and none can be derived.
    #[error("no state directory: pass --state-dir (neither XDG_STATE_HOME nor HOME is set)")]
    NoStateDir,
    /// No usable checkpoint.
    #[error("no usable checkpoint in {}: {source}", dir.display())]
    NoCheckpoint {
        /// The task's journal directory.
        dir: PathBuf,
        /// Why the base could not be read.
        source: CheckpointError,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory used when none is given: `$XDG_STATE_HOME/baton`,
/// or `~/.local/state/baton`.
///
/// # Errors
///
/// When neither `XDG_STATE_HOME` nor `HOME` is set.
pub fn default_state_dir() -> Result<PathBuf, JournalError> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("baton"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/baton")),
        None => Err(JournalError::NoStateDir),
    }
}

/// Checks that an id is usable as a directory name.
///
/// # Errors
///
/// [`JournalError::BadId`].
pub fn check_id(id: &str) -> Result<(), JournalError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(JournalError::BadId(id.to_string()))
    }
}

/// Writes `bytes` to `path` atomically and durably.
///
/// # Errors
///
/// [`JournalError::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    f.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
    f.sync_all().map_err(io_err("cannot sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

/// Takes the exclusive lock of the journal in `dir`.
fn lock(dir: &Path, id: &str) -> Result<File, JournalError> {
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe {
        use std::os::fd::AsRawFd;
        libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
    };
    if locked != 0 {
        return Err(JournalError::Busy(id.to_string()));
    }
    Ok(file)
}

/// An open journal of one task.
pub struct Journal {
    /// An exclusive advisory lock on `lock`, held while this process
    /// writes the journal (none when opened only to read).
    _lock: Option<File>,
    dir: PathBuf,
    record: TaskRecord,
    /// Size of `base.ckpt`, once one is written or read.
    base_len: Option<u64>,
    /// The open log and its length.
    log: Option<(File, u64)>,
    /// When the log was last fsynced.
    synced: Instant,
}

impl Journal {
    /// Fails early if `id` is already journaled in `state_dir`.
    ///
    /// # Errors
    ///
    /// [`JournalError::Exists`], [`JournalError::BadId`].
    pub fn check_free(state_dir: &Path, id: &str) -> Result<(), JournalError> {
        check_id(id)?;
        if state_dir.join(id).exists() {
            return Err(JournalError::Exists {
                id: id.to_string(),
                dir: state_dir.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Starts the journal of a new task with its module and the full
    /// checkpoint of its first point. The directory appears complete or not
    /// at all: it is assembled under a temporary name and renamed.
    ///
    /// # Errors
    ///
    /// [`JournalError::Exists`] if the id is taken, [`JournalError::Io`].
    pub fn create(
        state_dir: &Path,
        record: TaskRecord,
        module: &[u8],
        base: &Checkpoint,
    ) -> Result<Journal, JournalError> {
        Journal::check_free(state_dir, &record.id)?;
        fs::create_dir_all(state_dir).map_err(io_err("cannot create", state_dir))?;
        let dir = state_dir.join(&record.id);
        let partial = state_dir.join(format!(".{}.partial-{}", record.id, std::process::id()));
        // Left by an earlier crash of this same process id, if ever.
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir(&partial).map_err(io_err("cannot create", &partial))?;
        write_atomic(&partial.join("module.wasm"), module)?;
        write_atomic(&partial.join("base.ckpt"), &base.bytes)?;
        write_atomic(&partial.join("points.log"), &[])?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| JournalError::Damaged {
            path: dir.join("task.json"),
            reason: e.to_string(),
        })?;
        write_atomic(&partial.join("task.json"), &json)?;
        // Locked before it becomes visible under its name, so that no
        // `baton resume` can take it in between.
        let held = lock(&partial, &record.id)?;
        if dir.exists() {
            let _ = fs::remove_dir_all(&partial);
            return Err(JournalError::Exists {
                id: record.id.clone(),
                dir: state_dir.to_path_buf(),
            });
        }
        fs::rename(&partial, &dir).map_err(io_err("cannot rename into", &dir))?;
        sync_dir(state_dir)?;
        let log_path = dir.join("points.log");
        let file = File::options()
            .append(true)
            .open(&log_path)
            .map_err(io_err("cannot open", &log_path))?;
        let mut journal = Journal::new(dir, record, Some(held));
        journal.base_len = Some(base.bytes.len() as u64);
        journal.log = Some((file, 0));
        Ok(journal)
    }

    fn new(dir: PathBuf, record: TaskRecord, lock: Option<File>) -> Journal {
        Journal {
            _lock: lock,
            dir,
            record,
            base_len: None,
            log: None,
            synced: Instant::now(),
        }
    }
    /// Opens the journal of an existing task to continue it, taking its
    /// lock.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotFound`], [`JournalError::Damaged`],
    /// [`JournalError::Busy`] if another process runs the task.
    pub fn open(state_dir: &Path, id: &str) -> Result<Journal, JournalError> {
        let mut journal = Journal::open_to_read(state_dir, id)?;
        journal._lock = Some(lock(&journal.dir, id)?);
        Ok(journal)
    }

    /// Opens the journal of an existing task only to look at it: no lock is
    /// taken and nothing is written.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotFound`], [`JournalError::Damaged`].
    pub fn open_to_read(state_dir: &Path, id: &str) -> Result<Journal, JournalError> {
        check_id(id)?;
        let dir = state_dir.join(id);
        let path = dir.join("task.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(JournalError::NotFound {
                    id: id.to_string(),
                    dir: state_dir.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        let record: TaskRecord =
            serde_json::from_slice(&text).map_err(|e| JournalError::Damaged {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if record.version != RECORD_VERSION || record.id != id {
            return Err(JournalError::Damaged {
                path,
                reason: format!(
                    "version {} / id `{}` not understood",
                    record.version, record.id
                ),
            });
        }
        Ok(Journal::new(dir, record, None))
    }

    /// The task's record.
    pub fn record(&self) -> &TaskRecord {
        &self.record
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module bytes kept in the journal.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`].
    pub fn module(&self) -> Result<Vec<u8>, JournalError> {
        let path = self.dir.join("module.wasm");
        fs::read(&path).map_err(io_err("cannot read", &path))
    }

    /// Whether the next point should be written as a new base: there is
    /// none yet, or the log has grown past the base's size.
    pub fn wants_new_base(&self) -> bool {
        match (self.base_len, &self.log) {
            (None, _) => true,
            (Some(base), Some((_, log))) => *log > base,
            (Some(_), None) => false,
        }
    }

    /// Makes `cp` (a full checkpoint) the base and starts an empty log.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`].
    pub fn write_base(&mut self, cp: &Checkpoint) -> Result<(), JournalError> {
        write_atomic(&self.dir.join("base.ckpt"), &cp.bytes)?;
        let path = self.dir.join("points.log");
        write_atomic(&path, &[])?;
        let file = File::options()
            .append(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        self.log = Some((file, 0));
        self.base_len = Some(cp.bytes.len() as u64);
        self.synced = Instant::now();
        Ok(())
    }

    /// Appends the newest point, a delta against the point journaled
    /// before it; fsyncs if the last sync is [`SYNC_EVERY`] old.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`].
    pub fn append(&mut self, cp: &Checkpoint) -> Result<(), JournalError> {
        let path = self.dir.join("points.log");
        let Some((file, len)) = &mut self.log else {
            return Err(JournalError::Io {
                action: "cannot append to",
                path,
                source: io::Error::other("no base checkpoint was written first"),
            });
        };
        let mut record = Vec::with_capacity(8 + cp.bytes.len());
        record.extend_from_slice(&(cp.bytes.len() as u64).to_le_bytes());
        record.extend_from_slice(&cp.bytes);
        file.write_all(&record)
            .map_err(io_err("cannot append to", &path))?;
        *len += record.len() as u64;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// Forces journaled points to disk.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`].
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if let Some((file, _)) = &self.log {
            file.sync_data()
                .map_err(io_err("cannot sync", &self.dir.join("points.log")))?;
        }
        self.synced = Instant::now();
        Ok(())
    }

    /// Records that the task finished.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`].
    pub fn write_finished(&mut self, rec: &FinishRecord) -> Result<(), JournalError> {
        let json = serde_json::to_vec_pretty(rec).map_err(|e| JournalError::Damaged {
            path: self.dir.join("finished.json"),
            reason: e.to_string(),
        })?;
        write_atomic(&self.dir.join("finished.json"), &json)
    }

    /// Removes what only a resume would need (states, log, module) from the
    /// journal of a finished task, keeping `task.json` and
    /// `finished.json`: what `baton list` and `baton resume` still show.
    /// Best effort: a file that cannot be removed is only wasted space.
    pub fn shed_finished(&self) {
        for name in [
            "log",
            "log.damaged",
            "base.ckpt",
            "points.log",
            "module.wasm",
        ] {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }

    /// The finish record, if the task finished.
    ///
    /// # Errors
    ///
    /// [`JournalError::Damaged`] if it exists but cannot be read.
    pub fn finished(&self) -> Result<Option<FinishRecord>, JournalError> {
        let path = self.dir.join("finished.json");
        match fs::read(&path) {
            Ok(t) => serde_json::from_slice(&t)
                .map(Some)
                .map_err(|e| JournalError::Damaged {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// Loads the newest state: the base with every following record of the
    /// log applied. A damaged record ends the log there (with a warning,
    /// unless it is the torn tail a crash leaves); the state is then the
    /// last good point. Afterwards new points append to the log.
    ///
    /// # Errors
    ///
    /// [`JournalError::NoCheckpoint`] if the base is missing or damaged.
    pub fn load_newest(
        &mut self,
        limits: &DecodeLimits,
    ) -> Result<(State, Option<String>), JournalError> {
        let base_path = self.dir.join("base.ckpt");
        let no_checkpoint = |source| JournalError::NoCheckpoint {
            dir: self.dir.clone(),
            source,
        };
        let base_bytes = fs::read(&base_path).map_err(io_err("cannot read", &base_path))?;
        let mut state = match checkpoint::decode(&base_bytes, limits) {
            Ok(Decoded::Full(s)) => s,
            Ok(Decoded::Delta(_)) => {
                return Err(no_checkpoint(CheckpointError::Malformed(
                    "base.ckpt holds a delta".to_string(),
                )))
            }
            Err(e) => return Err(no_checkpoint(e)),
        };
        self.base_len = Some(base_bytes.len() as u64);
        drop(base_bytes);
        let log_path = self.dir.join("points.log");
        let log = match fs::read(&log_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("cannot read", &log_path)(e)),
        };
        let (good_len, warning) = replay(&log, &mut state, limits);
        if (good_len as usize) < log.len() {
            // Keep what is about to be cut off, for a person to look at.
            write_atomic(
                &self.dir.join("points.log.dropped"),
                &log[good_len as usize..],
            )?;
        }
        // Drop whatever follows the last good record, so that new points
        // append right after it.
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_err("cannot open", &log_path))?;
        file.set_len(good_len)
            .and_then(|()| file.sync_all())
            .map_err(io_err("cannot truncate", &log_path))?;
        drop(file);
        let file = File::options()
            .append(true)
            .open(&log_path)
            .map_err(io_err("cannot open", &log_path))?;
        self.log = Some((file, good_len));
        let warning = warning.map(|w| {
            format!(
                "{}: {w}; continuing from point {}",
                log_path.display(),
                state.point
            )
        });
        Ok((state, warning))
    }
}

/// Applies the log's records to `state` in order; returns the length of the
/// good prefix and, if a record in the middle was damaged, why.
fn replay(log: &[u8], state: &mut State, limits: &DecodeLimits) -> (u64, Option<String>) {
    let mut pos = 0usize;
    let mut first = true;
    // The digest of `state` as it stands; after each record, the record's.
    let mut current = match state.digest() {
        Ok(d) => d,
        Err(e) => return (0, Some(e.to_string())),
    };
    while pos < log.len() {
        let torn = || {
            Some(format!(
                "dropped the last {} bytes, an incomplete record (a crash during a write, or damage); \
                 they are kept in points.log.dropped",
                log.len() - pos
            ))
        };
        let Some(len_bytes) = log.get(pos..pos + 8) else {
            return (pos as u64, torn());
        };
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(len);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| (pos + 8).checked_add(l))
            .filter(|&e| e <= log.len());
        let Some(end) = end else {
            return (pos as u64, torn());
        };
        let last = end == log.len();
        let delta = match checkpoint::decode(&log[pos + 8..end], limits) {
            Ok(Decoded::Delta(d)) => d,
            Ok(Decoded::Full(_)) => {
                return (pos as u64, Some("a record is not a delta".to_string()))
            }
            Err(e) => {
                let why = (!last).then(|| format!("record at byte {pos} is damaged ({e})"));
                return (pos as u64, why);
            }
        };
        if delta.base() != current {
            if first {
                // Left from before the current base was written.
                return (0, None);
            }
            return (
                pos as u64,
                Some(format!(
                    "record at byte {pos} does not follow the one before"
                )),
            );
        }
        let next = delta.digest();
        // `apply` leaves the state untouched when it fails.
        if let Err(e) = delta.apply(state) {
            return (pos as u64, Some(format!("record at byte {pos}: {e}")));
        }
        current = next;
        first = false;
        pos = end;
    }
    (pos as u64, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for good in ["pi-7", "a.b_c", "X1"] {
            check_id(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(200)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }
}
