//! The agent: serves many clients and tasks at once over QUIC.
//!
//! Owns the agent's run time: the listening endpoint, one async task per
//! connection (which routes messages to tasks: a `Hello` names its task,
//! later messages are routed by their session), one async task per task
//! driving its [`RemoteStub`] (the same drain order as the local side), the
//! shared worker pool that bounds how many steps compute at once, the
//! module cache (by digest, compiled once), per-client and per-task limits,
//! and draining on SIGTERM. A client sees and reaches only its own tasks:
//! tasks are keyed by the client's certificate fingerprint.
//!
//! Every task has a directory in the data dir
//! (`tasks/<client fingerprint>/<BLAKE3 of the task id>/`, with `meta.json`
//! and the log of [`crate::store`]): whatever the stub persists is fsynced
//! there before the stub hears it is durable, so a task survives a kill -9
//! of the agent; at start the agent brings back every task it finds, and
//! one it is responsible for continues at once. A task's directory goes
//! once its client has everything. It must not decide anything the stub
//! decides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_net::{Agent, ClientPolicy, Conn, Fingerprint, Identity, NetConfig, Role};
use baton_proto::message::{ErrorCode, ErrorMsg, Hello};
use baton_proto::{
    Digest, Event, LinkEvent, Message, RemoteConfig, RemoteStub, SessionId, TaskId, Time, Transmit,
};
use baton_proto::{OutputChunk, RemoteRecord, StateRef};
use baton_task::{Engine, Program, State};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::exec::ExecCore;
use crate::link::Outbox;
use crate::meta::TaskMeta;
use crate::store::{StoreError, TaskLog};
use crate::worker::{Done, Durable, Worker};

/// Limits an agent enforces.
#[derive(Clone, Copy, Debug)]
pub struct AgentLimits {
    /// Largest `--max-memory` a task may ask for.
    pub max_memory: u64,
    /// Longest step allowed (a task's own limit applies if shorter).
    pub max_step_time: Option<Duration>,
    /// Most tasks one client may have here at once.
    pub max_tasks_per_client: usize,
    /// Largest module accepted, in bytes.
    pub max_module_size: u64,
}

impl Default for AgentLimits {
    /// 4 GiB per task, no step limit, 16 tasks per client, 64 MiB modules.
    fn default() -> AgentLimits {
        AgentLimits {
            max_memory: 4 << 30,
            max_step_time: None,
            max_tasks_per_client: 16,
            max_module_size: 64 << 20,
        }
    }
}

/// How to start an agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Identity, fingerprint file and module cache live here.
    pub data_dir: PathBuf,
    /// Which clients are admitted.
    pub policy: ClientPolicy,
    /// Steps computing at once (default: the number of cores).
    pub workers: usize,
    /// Limits.
    pub limits: AgentLimits,
    /// The transport's idle timeout on the agent's side (the client's
    /// shorter one wins).
    pub idle_timeout: Duration,
    /// How long the result of a task that finished here is kept for a
    /// client that does not come back for it.
    pub retention: Duration,
    /// Keep tasks in memory only (no task directories): for benchmarks
    /// that measure what the store costs.
    pub ephemeral: bool,
}

/// Takes the data dir's lock: one agent (or `baton agent gc`) at a time.
///
/// # Errors
///
/// Another process holds it, or the file cannot be opened.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe {
        use std::os::fd::AsRawFd;
        libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
    };
    if locked != 0 {
        anyhow::bail!(
            "{} is in use by another baton agent (or gc); stop it first",
            dir.display()
        );
    }
    Ok(file)
}

/// What [`gc`] removed.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Finished tasks whose results waited longer than the retention.
    pub finished: usize,
    /// Directories set aside as damaged.
    pub damaged: usize,
}

/// Removes, from an agent's data dir that no agent is using: results of
/// tasks that finished more than `older_than` ago and were never fetched,
/// and task directories set aside as damaged.
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
fn task_dirs(data_dir: &Path) -> Vec<(PathBuf, bool)> {
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

/// Whether the task in `dir` finished here and its log has not changed for
/// longer than `older_than`.
fn finished_and_expired(dir: &Path, older_than: Duration) -> bool {
    if !log_older_than(dir, older_than) {
        return false;
    }
    let Ok(rec) = TaskLog::read(dir, &baton_task::checkpoint::Limits::default()) else {
        return false;
    };
    rec.record
        .as_deref()
        .and_then(|b| RemoteRecord::decode(b).ok())
        .is_some_and(|r| r.finished.is_some())
}

/// Whether the log in `dir` has not changed for longer than `age`.
fn log_older_than(dir: &Path, age: Duration) -> bool {
    std::fs::metadata(dir.join("log"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a >= age)
}

/// A running agent.
pub struct RunningAgent {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    shared: Arc<Shared>,
    endpoint: Arc<Agent>,
    accept: tokio::task::JoinHandle<()>,
    _lock: std::fs::File,
}

enum TaskInput {
    Message {
        conn: u64,
        outbox: Outbox,
        message: Box<Message>,
    },
    Lost {
        conn: u64,
    },
    Drain,
}

struct TaskHandle {
    tx: mpsc::UnboundedSender<TaskInput>,
    connected: Arc<AtomicBool>,
    info: Arc<Mutex<TaskStatus>>,
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
const STATUS_EVERY: Duration = Duration::from_secs(1);

type TaskKey = (Fingerprint, String);

struct Shared {
    engine: Engine,
    permits: Arc<Semaphore>,
    limits: AgentLimits,
    data_dir: PathBuf,
    programs: Mutex<HashMap<Digest, Program>>,
    tasks: Mutex<HashMap<TaskKey, TaskHandle>>,
    draining: AtomicBool,
    ephemeral: bool,
    next_conn: AtomicU64,
    /// Bumped whenever a task ends (for drain waits).
    ended: watch::Sender<u64>,
}

impl Shared {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskKey, TaskHandle>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn programs(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Program>> {
        self.programs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts an agent: makes or loads its identity under the data dir, writes
/// `<data-dir>/fingerprint`, binds and starts accepting.
///
/// # Errors
///
/// The data dir or identity cannot be made, the address cannot be bound.
pub fn start(opts: AgentOptions) -> anyhow::Result<RunningAgent> {
    use anyhow::Context;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create data dir {}", opts.data_dir.display()))?;
    let lock = lock_data_dir(&opts.data_dir)?;
    let identity = Identity::load_or_create(&opts.data_dir.join("identity"), Role::Agent)?;
    let fp_path = opts.data_dir.join("fingerprint");
    std::fs::write(&fp_path, format!("{}\n", identity.fingerprint()))
        .with_context(|| format!("cannot write {}", fp_path.display()))?;
    let modules = opts.data_dir.join("modules");
    std::fs::create_dir_all(&modules)
        .with_context(|| format!("cannot create {}", modules.display()))?;
    let net = NetConfig::with_disconnect_after(opts.idle_timeout);
    let endpoint = Arc::new(Agent::bind(opts.listen, &identity, opts.policy, net)?);
    let addr = endpoint.local_addr()?;
    let shared = Arc::new(Shared {
        engine: Engine::with_step_limits(true)?,
        permits: Arc::new(Semaphore::new(opts.workers.max(1))),
        limits: opts.limits,
        data_dir: opts.data_dir,
        programs: Mutex::default(),
        tasks: Mutex::default(),
        draining: AtomicBool::new(false),
        ephemeral: opts.ephemeral,
        next_conn: AtomicU64::new(1),
        ended: watch::channel(0).0,
    });
    let restarted = if shared.ephemeral {
        Vec::new()
    } else {
        recover_tasks(&shared.data_dir, opts.retention)
    };
    if !restarted.is_empty() {
        tracing::info!(tasks = restarted.len(), "tasks recovered from the data dir");
    }
    for (meta, r) in restarted {
        let Ok(client) = meta.client.parse::<Fingerprint>() else {
            continue;
        };
        let key = (client, meta.task.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(false));
        let info = Arc::new(Mutex::new(TaskStatus {
            task: meta.task.clone(),
            client: meta.client.clone(),
            ..TaskStatus::default()
        }));
        shared.tasks().insert(
            key.clone(),
            TaskHandle {
                tx,
                connected: connected.clone(),
                info: info.clone(),
            },
        );
        tokio::spawn(task_actor(
            shared.clone(),
            NewTask {
                key,
                task: TaskId(meta.task),
                module: meta.module,
                meta: meta.meta,
                rx,
                connected,
                info,
                recovered: Some(r),
            },
        ));
    }
    let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
    let base = AgentStatus {
        fingerprint: identity.fingerprint().to_string(),
        listening: addr.to_string(),
        pid: std::process::id(),
        workers: opts.workers.max(1),
        ..AgentStatus::default()
    };
    tokio::spawn(write_status(shared.clone(), base));
    Ok(RunningAgent {
        addr,
        fingerprint: identity.fingerprint(),
        shared,
        endpoint,
        accept,
        _lock: lock,
    })
}

impl RunningAgent {
    /// How many tasks it holds.
    pub fn task_count(&self) -> usize {
        self.shared.tasks().len()
    }

    /// Hands every task back to its client (those connected), waiting at
    /// most `timeout`, then stops accepting and closes every connection.
    /// Returns the number of tasks still held when it gave up.
    pub async fn shutdown(self, timeout: Duration) -> usize {
        self.shared.draining.store(true, Ordering::SeqCst);
        for h in self.shared.tasks().values() {
            let _ = h.tx.send(TaskInput::Drain);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ended = self.shared.ended.subscribe();
        loop {
            let waiting = self
                .shared
                .tasks()
                .values()
                .filter(|h| h.connected.load(Ordering::SeqCst))
                .count();
            if waiting == 0 {
                break;
            }
            tracing::info!(
                waiting,
                "draining: waiting for clients to take their tasks back"
            );
            if tokio::time::timeout_at(deadline, ended.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        self.accept.abort();
        self.endpoint.close();
        self.shared.tasks().len()
    }
}

/// Rewrites `<data-dir>/status.json` every [`STATUS_EVERY`] (atomically),
/// until the agent shuts down.
async fn write_status(shared: Arc<Shared>, base: AgentStatus) {
    let path = shared.data_dir.join("status.json");
    let tmp = shared.data_dir.join("status.json.tmp");
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
            let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::debug!(error = %e, "cannot write the status file");
            }
        }
        if shared.draining.load(Ordering::SeqCst) && shared.tasks().is_empty() {
            return;
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

async fn accept_loop(endpoint: Arc<Agent>, shared: Arc<Shared>) {
    while let Some(pending) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let from = pending.remote_address();
            match pending.establish().await {
                Ok(conn) => {
                    let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(%from, client = %conn.peer_fingerprint(), conn = id, "client connected");
                    serve_conn(shared, conn, id).await;
                }
                Err(e) => tracing::info!(%from, error = %e, "connection refused or failed"),
            }
        });
    }
}

/// Routes one connection's messages to its tasks.
async fn serve_conn(shared: Arc<Shared>, conn: Conn, id: u64) {
    let outbox = Outbox::new(conn.clone());
    let client = conn.peer_fingerprint();
    let mut sessions: HashMap<SessionId, mpsc::UnboundedSender<TaskInput>> = HashMap::new();
    loop {
        match conn.recv().await {
            Ok((_, Message::Hello(hello))) => {
                let session = hello.session;
                match admit(&shared, client, &hello) {
                    Ok(tx) => {
                        let message = Box::new(Message::Hello(hello));
                        let input = TaskInput::Message {
                            conn: id,
                            outbox: outbox.clone(),
                            message,
                        };
                        if tx.send(input).is_ok() {
                            sessions.insert(session, tx);
                        }
                    }
                    Err((code, text)) => {
                        tracing::info!(%client, ?code, %text, "task refused");
                        outbox.send(transmit(Message::Error(ErrorMsg {
                            session,
                            code,
                            text,
                        })));
                    }
                }
            }
            Ok((_, message)) => {
                let session = message.session();
                let Some(tx) = sessions.get(&session) else {
                    tracing::debug!(conn = id, "message for an unknown session dropped");
                    continue;
                };
                let input = TaskInput::Message {
                    conn: id,
                    outbox: outbox.clone(),
                    message: Box::new(message),
                };
                if tx.send(input).is_err() {
                    sessions.remove(&session); // the task ended
                }
            }
            Err(e) => {
                if e.is_peer_violation() {
                    tracing::warn!(%client, conn = id, error = %e, "dropped a connection that broke the protocol");
                } else {
                    tracing::info!(%client, conn = id, error = %e, "connection ended");
                }
                for tx in sessions.values() {
                    let _ = tx.send(TaskInput::Lost { conn: id });
                }
                return;
            }
        }
    }
}

fn transmit(message: Message) -> Transmit {
    Transmit {
        channel: message.channel(),
        message,
    }
}

/// Finds or creates the task a `Hello` names, within the limits.
fn admit(
    shared: &Arc<Shared>,
    client: Fingerprint,
    hello: &Hello,
) -> Result<mpsc::UnboundedSender<TaskInput>, (ErrorCode, String)> {
    let key = (client, hello.task.0.clone());
    let mut tasks = shared.tasks();
    if let Some(h) = tasks.get(&key) {
        return Ok(h.tx.clone());
    }
    if shared.draining.load(Ordering::SeqCst) {
        return Err((
            ErrorCode::Limit,
            "the agent is shutting down and takes no new tasks".into(),
        ));
    }
    let limits = shared.limits;
    let mine = tasks.keys().filter(|(c, _)| *c == client).count();
    if mine >= limits.max_tasks_per_client {
        return Err((
            ErrorCode::Limit,
            format!(
                "this client already has {mine} tasks here (the agent's limit is {})",
                limits.max_tasks_per_client
            ),
        ));
    }
    if hello.module.size > limits.max_module_size {
        return Err((
            ErrorCode::Limit,
            format!(
                "the module is {} bytes; the agent accepts at most {}",
                hello.module.size, limits.max_module_size
            ),
        ));
    }
    let meta = TaskMeta::decode(hello.meta.as_bytes()).map_err(|t| (ErrorCode::Unsupported, t))?;
    if meta.max_memory > limits.max_memory {
        return Err((
            ErrorCode::Limit,
            format!(
                "the task may use {} bytes of memory (--max-memory) but the agent allows at most {}; run it with a smaller --max-memory",
                meta.max_memory, limits.max_memory
            ),
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let connected = Arc::new(AtomicBool::new(false));
    let info = Arc::new(Mutex::new(TaskStatus {
        task: hello.task.0.clone(),
        client: client.to_string(),
        ..TaskStatus::default()
    }));
    tasks.insert(
        key.clone(),
        TaskHandle {
            tx: tx.clone(),
            connected: connected.clone(),
            info: info.clone(),
        },
    );
    tracing::info!(%client, task = %hello.task.0, "new task");
    tokio::spawn(task_actor(
        shared.clone(),
        NewTask {
            key,
            task: hello.task.clone(),
            module: hello.module,
            meta,
            rx,
            connected,
            info,
            recovered: None,
        },
    ));
    Ok(tx)
}

fn module_path(shared: &Shared, digest: &Digest) -> PathBuf {
    shared
        .data_dir
        .join("modules")
        .join(format!("{digest}.wasm"))
}

/// Everything a task's actor starts with.
struct NewTask {
    key: TaskKey,
    task: TaskId,
    module: baton_proto::ModuleRef,
    meta: TaskMeta,
    rx: mpsc::UnboundedReceiver<TaskInput>,
    connected: Arc<AtomicBool>,
    info: Arc<Mutex<TaskStatus>>,
    /// What an earlier run of the agent left of this task.
    recovered: Option<RecoveredTask>,
}

/// A task read back from the data dir after a restart.
struct RecoveredTask {
    log: TaskLog,
    record: RemoteRecord,
    state: Option<(StateRef, State)>,
    outputs: Vec<OutputChunk>,
}

/// What `<task dir>/meta.json` holds: how to bring the task back.
#[derive(serde::Serialize, serde::Deserialize)]
struct TaskDirMeta {
    client: String,
    task: String,
    module: baton_proto::ModuleRef,
    meta: TaskMeta,
}

/// `<data-dir>/tasks/<client fingerprint>/<BLAKE3 of the task id>`: task
/// ids come from clients, so they never become file names themselves.
fn task_dir(data_dir: &Path, client: &Fingerprint, task: &str) -> PathBuf {
    let fp = client.to_string();
    let fp = fp.trim_start_matches("sha256:");
    data_dir
        .join("tasks")
        .join(fp)
        .join(blake3::hash(task.as_bytes()).to_hex().as_str())
}

/// Makes a new task's directory, its `meta.json` and an empty log.
fn create_task_dir(dir: &Path, meta: &TaskDirMeta) -> Result<TaskLog, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::to_vec_pretty(meta).map_err(|e| io(std::io::Error::other(e)))?;
    crate::journal::write_atomic(&dir.join("meta.json"), &text)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    TaskLog::create(dir)
}

/// Reads back every task an earlier run of the agent left in `data_dir`.
/// A task whose files are unusable is reported and set aside.
fn recover_tasks(data_dir: &Path, retention: Duration) -> Vec<(TaskDirMeta, RecoveredTask)> {
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
/// written, handed back, or finished and unfetched past `retention`).
fn recover_task(
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
    if record.handed_back || (record.finished.is_some() && log_older_than(dir, retention)) {
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

/// Writes `count` tasks of `module` (at point 0, this side and the client
/// having agreed that the client executes and is responsible) into
/// `data_dir` as an agent leaves them, for measuring restarts. Returns the
/// bytes written.
///
/// # Errors
///
/// The task cannot be created or the files written.
pub(crate) fn write_parked_tasks(
    engine: &Engine,
    data_dir: &Path,
    module: &[u8],
    name: &str,
    args: &[&str],
    count: usize,
) -> anyhow::Result<u64> {
    use baton_proto::message::WireTiming;
    use baton_proto::{Agreement, Assignment, Epoch, Mode};
    let program = engine.load(module)?;
    let mut cfg = baton_task::TaskConfig::new(name);
    cfg.host.args = std::iter::once(name)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let mut task =
        baton_task::Task::create(engine, &program, cfg, Box::new(baton_task::wasi::Discard))?;
    let full = task.checkpoint()?;
    let at = StateRef::new(
        baton_proto::Point(full.point),
        crate::exec::wire_digest(full.digest),
    );
    let digest = crate::exec::wire_digest(program.digest());
    std::fs::create_dir_all(data_dir.join("modules"))?;
    std::fs::write(
        data_dir.join("modules").join(format!("{digest}.wasm")),
        module,
    )?;
    let client = Identity::generate(Role::Client)?.fingerprint();
    let record = RemoteRecord {
        agreement: Agreement {
            epoch: Epoch(2),
            assignment: Assignment::local(Mode::Sync),
            anchor: Some(at),
        },
        durable: Some(at),
        output_acked: baton_proto::Point(0),
        finished: None,
        handed_back: false,
        has_module: true,
        timing: WireTiming {
            heartbeat_nanos: 500_000_000,
            disconnect_after_nanos: 2_000_000_000,
        },
    }
    .encode();
    let mut total = 0;
    for i in 0..count {
        let id = format!("parked-{i}");
        let dir = task_dir(data_dir, &client, &id);
        let meta = TaskDirMeta {
            client: client.to_string(),
            task: id,
            module: baton_proto::ModuleRef {
                digest,
                size: module.len() as u64,
            },
            meta: TaskMeta::new(
                baton_task::Limits::default(),
                baton_task::wasi::ClockMode::Virtual {
                    start_realtime_ns: 0,
                },
            ),
        };
        let mut log = create_task_dir(&dir, &meta)?;
        log.append(
            &record,
            Some(crate::store::StateBytes::Full(&full.bytes)),
            &[],
        )?;
        total += std::fs::metadata(dir.join("log"))?.len();
    }
    Ok(total)
}

/// Drives one task's remote stub until it is handed back.
async fn task_actor(shared: Arc<Shared>, new: NewTask) {
    let NewTask {
        key,
        task,
        module,
        meta,
        mut rx,
        connected,
        info,
        recovered,
    } = new;
    let dir = task_dir(&shared.data_dir, &key.0, &key.1);
    let origin = Instant::now();
    let now = || Time::from_nanos(origin.elapsed().as_nanos() as u64);
    let mut program = shared.programs().get(&module.digest).cloned();
    if program.is_none() {
        // Compiled by an earlier run of the agent? Load it off the async
        // threads.
        let path = module_path(&shared, &module.digest);
        let engine = shared.engine.clone();
        program = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(path).ok()?;
            engine.load(&bytes).ok()
        })
        .await
        .ok()
        .flatten()
        .filter(|p| crate::exec::wire_digest(p.digest()) == module.digest);
        if let Some(p) = &program {
            shared.programs().insert(module.digest, p.clone());
        }
    }
    let mut limits = meta.limits();
    limits.max_step_time = match (limits.max_step_time, shared.limits.max_step_time) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let has_module = program.is_some();
    let mut core = ExecCore::empty(shared.engine.clone(), program, meta.clock(), limits);
    let cfg = RemoteConfig::new(task.clone(), module, has_module);
    let (log, mut stub) = match recovered {
        Some(mut r) => {
            if let Some((at, state)) = r.state {
                core.set_stored(at, state);
            }
            // A module missing from the cache is asked for again rather
            // than the task failing for lack of it.
            r.record.has_module = has_module;
            tracing::info!(task = %task.0, point = ?r.record.durable.map(|d| d.point), "task recovered from the data dir");
            let stub = RemoteStub::recover(cfg, now(), r.record, r.outputs);
            (Some(r.log), stub)
        }
        None if shared.ephemeral => (None, RemoteStub::new(cfg, now())),
        None => {
            let dir_meta = TaskDirMeta {
                client: key.0.to_string(),
                task: task.0.clone(),
                module,
                meta: meta.clone(),
            };
            let d = dir.clone();
            let made = tokio::task::spawn_blocking(move || create_task_dir(&d, &dir_meta)).await;
            match made {
                Ok(Ok(log)) => (Some(log), RemoteStub::new(cfg, now())),
                result => {
                    if let Ok(Err(e)) = result {
                        tracing::error!(task = %task.0, error = %e, "cannot make the task's directory; task refused");
                    }
                    shared.tasks().remove(&key);
                    shared.ended.send_modify(|n| *n += 1);
                    return;
                }
            }
        }
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let durable = log.map(|log| Durable {
        log,
        module_path: Some(module_path(&shared, &module.digest)),
    });
    let worker = Worker::spawn(core, durable, shared.permits.clone(), done_tx);
    let mut link: Option<(u64, Outbox)> = None;
    let mut gen = 0u64;
    let name = task.0.clone();
    let mut forget = false;
    loop {
        while let Some(action) = stub.poll_action() {
            // Only the local side delivers and finishes: nothing else is
            // left over here.
            let _ = worker.dispatch(action, &mut gen, module.digest);
        }
        while let Some(t) = stub.poll_transmit() {
            if let Some((_, outbox)) = &link {
                tracing::trace!(message = ?t.message, "send");
                outbox.send(t);
            }
        }
        while let Some(e) = stub.poll_event() {
            match e {
                Event::Point { .. } => {}
                e => tracing::info!(task = %name, event = ?e, "task event"),
            }
        }
        if let Ok(mut i) = info.lock() {
            let a = stub.agreement();
            i.executor = a.assignment.executor.as_str().to_string();
            i.responsible = a.assignment.responsible.as_str().to_string();
            i.mode = a.assignment.mode.as_str().to_string();
            i.epoch = a.epoch.0;
            i.point = stub.durable().map(|d| d.point.0);
            i.executing = stub.is_executing();
            i.connected = link.is_some();
            i.finished = stub.finished().map(|f| format!("{:?}", f.outcome));
        }
        if stub.is_handed_back() {
            tracing::info!(task = %name, "task handed back to its client; forgotten here");
            break;
        }
        let deadline = stub.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => {
                    let wait = Duration::from_nanos(t.as_nanos().saturating_sub(now().as_nanos()));
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            input = rx.recv() => match input {
                Some(TaskInput::Message { conn, outbox, message }) => {
                    if link.as_ref().map(|(c, _)| *c) != Some(conn) {
                        if !matches!(*message, Message::Hello(_)) {
                            continue; // a late message of an older connection
                        }
                        if link.is_some() {
                            stub.handle_link(now(), LinkEvent::Lost);
                        }
                        link = Some((conn, outbox));
                        connected.store(true, Ordering::SeqCst);
                        stub.handle_link(now(), LinkEvent::Connected);
                    }
                    stub.handle_message(now(), *message);
                }
                Some(TaskInput::Lost { conn }) => {
                    if link.as_ref().is_some_and(|(c, _)| *c == conn) {
                        link = None;
                        connected.store(false, Ordering::SeqCst);
                        stub.handle_link(now(), LinkEvent::Lost);
                    }
                }
                Some(TaskInput::Drain) => stub.drain(now()),
                None => break,
            },
            done = done_rx.recv() => match done {
                Some(Done::Exec { gen: g, event }) => {
                    if g == gen {
                        stub.handle_executor(now(), event);
                    }
                }
                Some(Done::Captured(cp)) => {
                    stub.handle_executor(now(), baton_proto::ExecutorEvent::Captured(cp));
                }
                Some(Done::CaptureFailed { state, error }) => {
                    tracing::debug!(task = %name, error = %error, "could not capture a state for the client; asked again later");
                    stub.handle_executor(now(), baton_proto::ExecutorEvent::CaptureFailed { state });
                }
                Some(Done::Persisted { seq, program }) => {
                    if let Some((p, _)) = program {
                        // Written to the module cache by the worker already.
                        shared.programs().insert(module.digest, p);
                    }
                    stub.handle_persisted(now(), seq);
                }
                Some(Done::PersistFailed { error, .. }) => {
                    tracing::warn!(task = %name, error = %error, "a bad state or module from the client, or a store failure; task dropped");
                    forget = !matches!(error, crate::exec::ExecError::Store(_));
                    if let Some((_, outbox)) = &link {
                        if let Some(session) = stub.session() {
                            outbox.send(transmit(Message::Error(ErrorMsg {
                                session,
                                code: ErrorCode::Internal,
                                text: format!("the agent dropped the task: {error}"),
                            })));
                        }
                    }
                    break;
                }
                None => break,
            },
            _ = sleep => stub.handle_timeout(now()),
        }
    }
    if (stub.is_handed_back() || forget) && !shared.ephemeral {
        // The client has everything (or the task was dropped): nothing of
        // it needs to survive a restart.
        let d = dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(d)).await;
    }
    shared.tasks().remove(&key);
    shared.ended.send_modify(|n| *n += 1);
}
