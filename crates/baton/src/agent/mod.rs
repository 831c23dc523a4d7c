//! The agent: serves many clients and tasks at once over QUIC.
//!
//! Owns the agent's life: its options and limits, starting (identity,
//! fingerprint file, recovery of the tasks an earlier run left) and
//! shutting down (handing tasks back on SIGTERM). The rooms:
//!
//! - `router`: the listening endpoint, one async task per connection,
//!   routing a `Hello` to its task (admitting new ones within the limits)
//!   and later messages by their session;
//! - `actor`: one async task per task, driving its remote stub on the one
//!   [`crate::drive::Driver`];
//! - [`datadir`]: the data dir: task directories and their recovery, the
//!   module cache's files, `status.json`, gc, the lock.
//!
//! A client sees and reaches only its own tasks: tasks are keyed by the
//! client's certificate fingerprint. Every task has a directory in the
//! data dir (`tasks/<client fingerprint>/<BLAKE3 of the task id>/`, with
//! `meta.json` and the log of [`crate::store::log`]): whatever the stub
//! persists is fsynced there before the stub hears it is durable, so a task
//! survives a kill -9 of the agent. It must not decide anything the stub
//! decides.

mod actor;
pub mod datadir;
mod router;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_net::{Agent, ClientPolicy, Fingerprint, Identity, NetConfig, Role};
use baton_proto::{Digest, Message, TaskId};
use baton_task::{Engine, Program};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::client::link::Outbox;
use actor::{task_actor, NewTask};
pub use datadir::{gc, lock_data_dir, AgentStatus, GcReport, TaskStatus};
use datadir::{recover_tasks, write_status};
use router::accept_loop;

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

pub(crate) enum TaskInput {
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

pub(crate) struct TaskHandle {
    tx: mpsc::UnboundedSender<TaskInput>,
    connected: Arc<AtomicBool>,
    info: Arc<Mutex<TaskStatus>>,
}

pub(crate) type TaskKey = (Fingerprint, String);

pub(crate) struct Shared {
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
