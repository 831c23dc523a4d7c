//! The client's journal of one task: what `baton resume` continues from.
//!
//! One directory per task, `<state-dir>/<task-id>/`, the same for a local
//! run and a run that extends onto an agent:
//!
//! ```text
//! task.json      the task's spec (crate::spec, format 2)
//! module.wasm    the module, so that a resume does not need the original file
//! log            the local stub's log (crate::store::log): states, records,
//!                delivered marks
//! delivered      the newest point whose output was shown, rewritten in place
//!                as it is shown ([`DeliveredMark`])
//! finished.json  written once the task finished and its files were written back
//! lock           flock()ed by the one process running the task
//! log.damaged    bytes cut off a damaged or torn log, kept for a person
//! ```
//!
//! A new journal appears complete or not at all: it is assembled under a
//! temporary name, with its first state and record already in the log, and
//! renamed into place. Once a task finished, what only a resume needs (log,
//! module) is removed; `task.json` and `finished.json` stay for `baton
//! list` and `baton resume`.
//!
//! Journals of the release before (format 1: `base.ckpt` and `points.log`
//! for local runs) are refused with a message that says so and what to do.
//!
//! Owns the directory and its files only: what goes into the log, and
//! when, is the drive loop's.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use baton_task::checkpoint;
use serde::{Deserialize, Serialize};

use crate::spec::{SpecError, TaskSpec};
use crate::store::fs::{fs_err, lock_dir, sync_dir, write_atomic, FsError, LockError};
use crate::store::log::{Recovered, StateBytes, StoreError, TaskLog};

/// What `finished.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishRecord {
    /// The task's exit status.
    pub exit_status: i32,
    /// The final point.
    pub points: u64,
    /// The final state digest.
    pub digest: String,
    /// The final memory size, in bytes (absent in records of the release
    /// before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
}

/// Errors reading or writing a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The task's log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// A file of the journal is unreadable.
    #[error("{} is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Written by another release in a format this one does not read.
    #[error("task `{id}` was journaled by another release of baton (journal format {found}); this one reads format {}: finish it with the baton that started it, or run it again", crate::spec::SPEC_VERSION)]
    OtherFormat {
        /// The task.
        id: String,
        /// The format found.
        found: u32,
    },
    /// Another process holds the journal.
    #[error("task `{0}` is being run by another baton process right now")]
    Busy(String),
    /// No state directory given and none can be derived.
    #[error("no state directory: pass --state-dir (neither XDG_STATE_HOME nor HOME is set)")]
    NoStateDir,
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

/// The ids of the tasks journaled in `state_dir`, sorted (none if it does
/// not exist).
///
/// # Errors
///
/// The directory exists but cannot be read.
pub fn list(state_dir: &Path) -> Result<Vec<String>, JournalError> {
    let entries = match fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(fs_err("read", state_dir)(e).into()),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("task.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The first entry of a new journal's log: the state at point 0 and the
/// record a stub starts from, so that a crash before the first point still
/// resumes.
#[derive(Clone, Copy, Debug)]
pub struct FirstEntry<'a> {
    /// The encoded record.
    pub record: &'a [u8],
    /// The full checkpoint at point 0.
    pub full: &'a [u8],
}

/// An open journal of one task.
#[derive(Debug)]
pub struct Journal {
    /// The exclusive lock, held while this process runs the task (none
    /// when opened only to read).
    _lock: Option<File>,
    dir: PathBuf,
    spec: TaskSpec,
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

    /// Starts the journal of a new task: spec, module and a log holding
    /// `first`. Returns the journal (locked) and its log, open for
    /// appending.
    ///
    /// # Errors
    ///
    /// [`JournalError::Exists`] if the id is taken, file errors.
    pub fn create(
        state_dir: &Path,
        spec: &TaskSpec,
        module: &[u8],
        first: FirstEntry<'_>,
    ) -> Result<(Journal, TaskLog), JournalError> {
        let id = &spec.id;
        Journal::check_free(state_dir, id)?;
        fs::create_dir_all(state_dir).map_err(fs_err("create", state_dir))?;
        let dir = state_dir.join(id);
        let partial = state_dir.join(format!(".{id}.partial-{}", std::process::id()));
        // Left by an earlier crash of a process with this same id, if ever.
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir(&partial).map_err(fs_err("create", &partial))?;
        write_atomic(&partial.join("module.wasm"), module)?;
        write_atomic(&partial.join("task.json"), &spec.encode())?;
        let mut log = TaskLog::create(&partial)?;
        log.append(first.record, Some(StateBytes::Full(first.full)), &[])?;
        // Locked before it becomes visible under its name, so that no
        // `baton resume` can take it in between.
        let held = lock_dir(&partial).map_err(|e| lock_error(e, id))?;
        if dir.exists() {
            let _ = fs::remove_dir_all(&partial);
            return Err(JournalError::Exists {
                id: id.clone(),
                dir: state_dir.to_path_buf(),
            });
        }
        fs::rename(&partial, &dir).map_err(fs_err("rename into", &dir))?;
        sync_dir(state_dir)?;
        // The open file follows the rename; only its name for errors and
        // compaction changes.
        log.moved_to(&dir);
        let journal = Journal {
            _lock: Some(held),
            dir,
            spec: spec.clone(),
        };
        Ok((journal, log))
    }

    /// Opens the journal of an existing task to continue it, taking its
    /// lock.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotFound`], [`JournalError::Damaged`],
    /// [`JournalError::OtherFormat`], [`JournalError::Busy`] if another
    /// process runs the task.
    pub fn open(state_dir: &Path, id: &str) -> Result<Journal, JournalError> {
        let mut journal = Journal::open_to_read(state_dir, id)?;
        journal._lock = Some(lock_dir(&journal.dir).map_err(|e| lock_error(e, id))?);
        Ok(journal)
    }

    /// Opens the journal of an existing task only to look at it: no lock is
    /// taken and nothing is written.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotFound`], [`JournalError::Damaged`],
    /// [`JournalError::OtherFormat`].
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
            Err(e) => return Err(fs_err("read", &path)(e).into()),
        };
        let spec = match TaskSpec::decode(&text) {
            Ok(spec) => spec,
            Err(SpecError::Version { found }) => {
                return Err(JournalError::OtherFormat {
                    id: id.to_string(),
                    found,
                })
            }
            Err(e) => {
                return Err(JournalError::Damaged {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        if spec.id != id {
            return Err(JournalError::Damaged {
                path,
                reason: format!("it names task `{}`", spec.id),
            });
        }
        Ok(Journal {
            _lock: None,
            dir,
            spec,
        })
    }

    /// The task's spec.
    pub fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The module bytes kept in the journal.
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub fn module(&self) -> Result<Vec<u8>, JournalError> {
        let path = self.dir.join("module.wasm");
        Ok(fs::read(&path).map_err(fs_err("read", &path))?)
    }

    /// Opens the log to continue it (a damaged tail is cut and kept in
    /// `log.damaged`), with what it held.
    ///
    /// # Errors
    ///
    /// The log cannot be read or written.
    pub fn open_log(&self) -> Result<(TaskLog, Recovered), JournalError> {
        Ok(TaskLog::open(&self.dir, &self.decode_limits())?)
    }

    /// The delivered mark, opened for noting shown output.
    ///
    /// # Errors
    ///
    /// The file cannot be opened.
    pub fn delivered_mark(&self) -> Result<DeliveredMark, JournalError> {
        Ok(DeliveredMark::open(&self.dir)?)
    }

    /// Reads what the log holds without changing it (for listings).
    ///
    /// # Errors
    ///
    /// The log cannot be read.
    pub fn read_log(&self) -> Result<Recovered, JournalError> {
        Ok(TaskLog::read(&self.dir, &self.decode_limits())?)
    }

    fn decode_limits(&self) -> checkpoint::Limits {
        checkpoint::Limits {
            max_memory: self.spec.limits.max_memory,
            ..checkpoint::Limits::default()
        }
    }

    /// Records that the task finished.
    ///
    /// # Errors
    ///
    /// The file cannot be written.
    pub fn write_finished(&self, rec: &FinishRecord) -> Result<(), JournalError> {
        let path = self.dir.join("finished.json");
        let json = serde_json::to_vec_pretty(rec).map_err(|e| JournalError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(write_atomic(&path, &json)?)
    }

    /// Removes what only a resume would need (log, module) from the journal
    /// of a finished task. Best effort: a file that cannot be removed is
    /// only wasted space.
    pub fn shed_finished(&self) {
        for name in ["log", "log.damaged", "module.wasm", DeliveredMark::FILE] {
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
            Err(e) => Err(fs_err("read", &path)(e).into()),
        }
    }
}

fn lock_error(e: LockError, id: &str) -> JournalError {
    match e {
        LockError::Busy(_) => JournalError::Busy(id.to_string()),
        LockError::Io(e) => JournalError::Fs(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Clock, ModuleInfo, Policy, TaskLimits, SPEC_VERSION};

    fn spec(id: &str) -> TaskSpec {
        TaskSpec {
            version: SPEC_VERSION,
            id: id.into(),
            module: ModuleInfo {
                path: "m.wasm".into(),
                digest: "00".repeat(32),
                size: 8,
            },
            args: vec!["m.wasm".into()],
            env: Vec::new(),
            dirs: Vec::new(),
            seed: 0,
            clock: Clock::Virtual { start_ns: 0 },
            limits: TaskLimits {
                max_memory: 1 << 20,
                max_step_time_ms: None,
                point_every_ms: None,
            },
            policy: Policy::default(),
            remote: None,
            nans: baton_task::Nans::Native,
        }
    }

    #[test]
    fn a_journal_of_the_release_before_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("old");
        fs::create_dir_all(&task).unwrap();
        // What the release before wrote for a local run.
        fs::write(
            task.join("task.json"),
            br#"{"version":1,"id":"old","module_path":"pi.wasm","module_digest":"00","dirs":[],"max_memory":4294967296,"max_step_time_ms":null,"wall_clock":false}"#,
        )
        .unwrap();
        fs::write(task.join("base.ckpt"), b"BATONCKP").unwrap();
        let e = Journal::open(dir.path(), "old").unwrap_err();
        assert!(matches!(e, JournalError::OtherFormat { found: 1, .. }));
        let text = e.to_string();
        assert!(
            text.contains("format 1") && text.contains("run it again"),
            "{text}"
        );
    }

    #[test]
    fn a_second_process_cannot_open_a_journal_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec("busy");
        let first = FirstEntry {
            record: b"r",
            full: b"not a checkpoint",
        };
        let (j, _log) = Journal::create(dir.path(), &s, b"\0asm", first).unwrap();
        assert!(matches!(
            Journal::open(dir.path(), "busy"),
            Err(JournalError::Busy(_))
        ));
        assert!(matches!(
            Journal::create(dir.path(), &s, b"\0asm", first),
            Err(JournalError::Exists { .. })
        ));
        assert_eq!(
            Journal::open_to_read(dir.path(), "busy").unwrap().spec(),
            &s
        );
        drop(j);
        assert!(Journal::open(dir.path(), "busy").is_ok());
        assert_eq!(list(dir.path()).unwrap(), vec!["busy".to_string()]);
    }

    #[test]
    fn ids_that_are_not_safe_file_names_are_refused() {
        for bad in ["", ".hidden", "../escape", "a/b", &"x".repeat(129)] {
            assert!(
                matches!(check_id(bad), Err(JournalError::BadId(_))),
                "{bad}"
            );
        }
        assert!(check_id("big-1.run_2").is_ok());
    }
}

/// The newest point whose output was shown, in a file of its own beside the
/// log: 8 bytes of point and a CRC-32 of them, rewritten in place
/// (`pwrite`, no fsync) right after the output is written. The log notes
/// the same behind the executor's queue, where a run with an agent may
/// wait behind the writes of states it receives; a client killed meanwhile
/// would show again everything shown since. A kill -9 cannot lose what
/// `pwrite` handed the kernel; a machine crash may, and the output is then
/// shown again (never lost), as with the log's notes.
#[derive(Debug)]
pub struct DeliveredMark {
    file: File,
}

impl DeliveredMark {
    const FILE: &'static str = "delivered";

    fn open(dir: &Path) -> Result<DeliveredMark, FsError> {
        let path = dir.join(Self::FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(fs_err("open", &path))?;
        Ok(DeliveredMark { file })
    }

    /// Notes that the output through `point` was shown. A failure only
    /// means more output may be shown again after a crash.
    pub fn note(&self, point: baton_proto::Point) {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&point.0.to_le_bytes());
        let crc = crc32fast::hash(&b[..8]);
        b[8..].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.file.write_all_at(&b, 0) {
            tracing::debug!(error = %e, "cannot note delivered output beside the log");
        }
    }

    /// The point noted in `dir`, if a whole, intact one is there.
    pub fn read(dir: &Path) -> Option<baton_proto::Point> {
        let b = fs::read(dir.join(Self::FILE)).ok()?;
        let (point, crc) = (b.get(..8)?, b.get(8..12)?);
        (crc32fast::hash(point).to_le_bytes() == crc)
            .then(|| baton_proto::Point(u64::from_le_bytes(point.try_into().unwrap_or([0; 8]))))
    }
}

#[cfg(test)]
mod delivered_tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DeliveredMark::read(dir.path()), None);
        let m = DeliveredMark::open(dir.path()).unwrap();
        m.note(baton_proto::Point(7));
        m.note(baton_proto::Point(1234));
        assert_eq!(
            DeliveredMark::read(dir.path()),
            Some(baton_proto::Point(1234))
        );
        let path = dir.path().join(DeliveredMark::FILE);
        let mut b = fs::read(&path).unwrap();
        b[3] ^= 1;
        fs::write(&path, &b).unwrap();
        assert_eq!(DeliveredMark::read(dir.path()), None, "a flipped bit");
        fs::write(&path, &b[..5]).unwrap();
        assert_eq!(DeliveredMark::read(dir.path()), None, "a torn write");
    }
}
