//! The agent's data dir: what survives a restart, and what shows it.
//!
//! Owns the layout under `--data-dir` (the lock, `modules/<digest>.wasm`,
//! `tasks/<client>/<BLAKE3 of the task id>/` with `meta.json` and the
//! task's log, `status.json`), bringing tasks back after a restart (a task
//! whose files are unusable is set aside and reported), `baton agent gc`,
//! and rewriting `status.json` every second. It must not drive tasks.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use baton_net::Fingerprint;
use baton_proto::{Digest, OutputChunk, RemoteRecord, StateRef};
use baton_task::State;

use super::Shared;
use crate::spec::AgentSettings;
use crate::store::fs::{lock_dir, replace_quietly, write_atomic, LockError};
use crate::store::log::{StoreError, TaskLog};

/// Takes the data dir's lock: one agent (or `baton agent gc`) at a time.
///
/// # Errors
///
/// Another process holds it, or the file cannot be opened.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    match lock_dir(dir) {
        Ok(f) => Ok(f),
        Err(LockError::Busy(_)) => anyhow::bail!(
            "{} is in use by another baton agent (or gc); stop it first",
            dir.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// What [`gc`] removed.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Tasks left alone past the retention: finished here and never
    /// fetched, or their client's to continue.
    pub finished: usize,
    /// Directories set aside as damaged.
    pub damaged: usize,
}

/// Removes, from an agent's data dir that no agent is using: tasks left
/// alone for more than `older_than` that finished here (results never
/// fetched) or that their client is responsible for, and task directories
/// set aside as damaged.
///
/// # Errors
///
/// The data dir is in use or cannot be read.
pub fn gc(data_dir: &Path, older_than: Duration) -> anyhow::Result<GcReport> {
    let _lock = lock_data_dir(data_dir)?;
    let mut report = GcReport::default();
    for (dir, set_aside) in task_dirs(data_dir) {
        if set_aside {
            if std::fs::remove_dir_all(&dir).is_ok() {
                report.damaged += 1;
            }
        } else if finished_and_expired(&dir, older_than) && std::fs::remove_dir_all(&dir).is_ok() {
            report.finished += 1;
        }
    }
    Ok(report)
}

/// Every task directory under `<data-dir>/tasks/<client>/`, and whether it
/// was set aside as damaged (its name then has a `.damaged-<time>` suffix).
pub(super) fn task_dirs(data_dir: &Path) -> Vec<(PathBuf, bool)> {
    let clients = std::fs::read_dir(data_dir.join("tasks"))
        .into_iter()
        .flatten()
        .flatten();
    clients
        .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
        .map(|t| {
            let set_aside = t.file_name().to_string_lossy().contains('.');
            (t.path(), set_aside)
        })
        .collect()
}

/// Whether the task in `dir` is one whose client has what it needs
/// ([`expendable`]) and whose log has not changed for longer than
/// `older_than`.
pub(super) fn finished_and_expired(dir: &Path, older_than: Duration) -> bool {
    if !log_older_than(dir, older_than) {
        return false;
    }
    let Ok(rec) = TaskLog::read(dir, &baton_task::checkpoint::Limits::default()) else {
        return false;
    };
    rec.record
        .as_deref()
        .and_then(|b| RemoteRecord::decode(b).ok())
        .is_some_and(|r| expendable(&r))
}

/// A task the agent may forget once its client has stayed away past the
/// retention: one that finished here (its result waited long enough), or
/// one its client is responsible for (the client holds the state it goes
/// on from; what the agent has beyond it is at most recomputed).
fn expendable(r: &RemoteRecord) -> bool {
    r.finished.is_some() || r.agreement.assignment.responsible == baton_proto::Side::Local
}

/// Whether the log in `dir` has not changed for longer than `age`.
pub(super) fn log_older_than(dir: &Path, age: Duration) -> bool {
    std::fs::metadata(dir.join("log"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a >= age)
}

/// One task as `<data-dir>/status.json` shows it (`baton inspect DIR`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TaskStatus {
    /// The task's id.
    pub task: String,
    /// The client's fingerprint.
    pub client: String,
    /// `local` or `remote`: who executes.
    pub executor: String,
    /// Who is responsible.
    pub responsible: String,
    /// `sync` or `async`.
    pub mode: String,
    /// The agreement's epoch.
    pub epoch: u64,
    /// The newest point held here.
    pub point: Option<u64>,
    /// Executing here now.
    pub executing: bool,
    /// Its client is connected.
    pub connected: bool,
    /// Finished here, with this exit status.
    pub finished: Option<String>,
}

/// What `<data-dir>/status.json` holds, rewritten every second.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct AgentStatus {
    /// The agent's fingerprint.
    pub fingerprint: String,
    /// Where it listens.
    pub listening: String,
    /// Its process id.
    pub pid: u32,
    /// Steps computing at once, at most.
    pub workers: usize,
    /// When this was written, in milliseconds since the Unix epoch.
    pub updated_unix_ms: u64,
    /// The tasks it holds.
    pub tasks: Vec<TaskStatus>,
}

/// How often the status file is rewritten.
pub(super) const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Rewrites `<data-dir>/status.json` every [`STATUS_EVERY`] (atomically),
/// until the agent shuts down.
pub(super) async fn write_status(shared: Arc<Shared>, base: AgentStatus) {
    let path = shared.data_dir.join("status.json");
    loop {
        let mut st = base.clone();
        st.updated_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        st.tasks = shared
            .tasks()
            .values()
            .filter_map(|h| h.info.lock().ok().map(|i| i.clone()))
            .collect();
        st.tasks
            .sort_by(|a, b| (&a.client, &a.task).cmp(&(&b.client, &b.task)));
        if let Ok(text) = serde_json::to_vec_pretty(&st) {
            let p = path.clone();
            // Rewritten every second and read only by `baton inspect`: no
            // fsync (off the async threads all the same).
            match tokio::task::spawn_blocking(move || replace_quietly(&p, &text)).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot write the status file"),
                Err(e) => tracing::debug!(error = %e, "cannot write the status file"),
                Ok(Ok(())) => {}
            }
        }
        if shared.draining.load(Ordering::SeqCst) && shared.tasks().is_empty() {
            return;
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

pub(super) fn module_path(shared: &Shared, digest: &Digest) -> PathBuf {
    shared
        .data_dir
        .join("modules")
        .join(format!("{digest}.wasm"))
}

/// A task read back from the data dir after a restart.
pub(super) struct RecoveredTask {
    pub(super) log: TaskLog,
    pub(super) record: RemoteRecord,
    pub(super) state: Option<(StateRef, State)>,
    pub(super) outputs: Vec<OutputChunk>,
}

/// What `<task dir>/meta.json` holds: how to bring the task back.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TaskDirMeta {
    /// The client's fingerprint.
    pub client: String,
    /// The task's id, as the client named it.
    pub task: String,
    /// The module.
    pub module: baton_proto::ModuleRef,
    /// The task's limits and clock (the same fields as the release before
    /// wrote, so its data dirs still recover).
    pub meta: AgentSettings,
}

/// `<data-dir>/tasks/<client fingerprint>/<BLAKE3 of the task id>`: task
/// ids come from clients, so they never become file names themselves.
pub fn task_dir(data_dir: &Path, client: &Fingerprint, task: &str) -> PathBuf {
    let fp = client.to_string();
    let fp = fp.trim_start_matches("sha256:");
    data_dir
        .join("tasks")
        .join(fp)
        .join(blake3::hash(task.as_bytes()).to_hex().as_str())
}

/// Makes a new task's directory, its `meta.json` and an empty log.
pub fn create_task_dir(dir: &Path, meta: &TaskDirMeta) -> Result<TaskLog, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::to_vec_pretty(meta).map_err(|e| io(std::io::Error::other(e)))?;
    write_atomic(&dir.join("meta.json"), &text)?;
    TaskLog::create(dir)
}

/// Reads back every task an earlier run of the agent left in `data_dir`.
/// A task whose files are unusable is reported and set aside.
pub(super) fn recover_tasks(
    data_dir: &Path,
    retention: Duration,
) -> Vec<(TaskDirMeta, RecoveredTask)> {
    let mut out = Vec::new();
    for (dir, set_aside) in task_dirs(data_dir) {
        if set_aside {
            continue; // for a person, or `baton agent gc`
        }
        match recover_task(&dir, retention) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e) => {
                // Its client still has its own copy and will send it
                // again; keep these files for a person, out of the way.
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = dir.with_extension(format!("damaged-{stamp}"));
                let _ = std::fs::rename(&dir, &aside);
                eprintln!(
                    "baton: warning: cannot recover a task from {} ({e:#}); its files are set aside there, and its client's copy will be used",
                    aside.display()
                );
            }
        }
    }
    out
}

/// Reads one task back; `None` if nothing of it needs keeping (never
/// written, handed back, or [`expendable`] and left alone past `retention`).
pub(super) fn recover_task(
    dir: &Path,
    retention: Duration,
) -> anyhow::Result<Option<(TaskDirMeta, RecoveredTask)>> {
    use anyhow::Context;
    let meta: TaskDirMeta =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).context("meta.json")?)
            .context("meta.json")?;
    let limits = baton_task::checkpoint::Limits {
        max_memory: meta.meta.max_memory,
        ..Default::default()
    };
    // Before opening: opening cuts the log to its intact length, which
    // touches it.
    let left_alone = log_older_than(dir, retention);
    let (log, rec) = TaskLog::open(dir, &limits)?;
    if let Some(d) = &rec.damage {
        eprintln!(
            "baton: warning: the log of task {} was damaged ({d}); going on from its newest intact state (the damaged bytes are in {})",
            meta.task,
            dir.join("log.damaged").display()
        );
    }
    let Some(bytes) = rec.record else {
        return Ok(None); // created, never written: nothing to keep
    };
    let mut record = RemoteRecord::decode(&bytes).context("the task's record")?;
    if record.handed_back || (expendable(&record) && left_alone) {
        return Ok(None);
    }
    // The log may hold a state one request newer than its last record (a
    // crash between them), or, if damaged, an older one: the store is what
    // counts.
    record.durable = rec.state.as_ref().map(|(r, _)| *r);
    Ok(Some((
        meta,
        RecoveredTask {
            log,
            record,
            state: rec.state,
            outputs: rec.outputs,
        },
    )))
}
