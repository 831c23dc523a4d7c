//! One task on the agent: its remote stub on the one drive loop.
//!
//! Owns [`task_actor`]: it finds the task's compiled module (in memory, in
//! the module cache, or later from the client), makes or reopens the
//! task's directory, and drives the remote stub on a
//! [`crate::drive::Driver`] with the agent's shared worker pool, feeding
//! it the router's messages and link news, until the task is handed back
//! (or dropped). It keeps the task's line of `status.json` current. It must
//! not decide anything the stub decides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use baton_proto::message::{ErrorCode, ErrorMsg};
use baton_proto::{Event, Message, RemoteConfig, RemoteStub, TaskId};
use tokio::sync::mpsc;

use super::datadir::{create_task_dir, module_path, task_dir, RecoveredTask, TaskDirMeta};
use super::router::transmit;
use super::{Shared, TaskInput, TaskKey, TaskStatus};
use crate::drive::exec::{wire_digest, ExecCore, ExecError};
use crate::drive::worker::{Durable, Worker};
use crate::drive::{Driver, Hooks, Wake};
use crate::spec::AgentSettings;

/// Everything a task's actor starts with.
pub(super) struct NewTask {
    pub(super) key: TaskKey,
    pub(super) task: TaskId,
    pub(super) module: baton_proto::ModuleRef,
    pub(super) meta: AgentSettings,
    pub(super) rx: mpsc::UnboundedReceiver<TaskInput>,
    pub(super) connected: Arc<AtomicBool>,
    pub(super) info: Arc<Mutex<TaskStatus>>,
    /// What an earlier run of the agent left of this task.
    pub(super) recovered: Option<RecoveredTask>,
}

/// The agent's answers to the drain: nothing is delivered or finished
/// here (that is the local side's), events go to the log.
struct AgentHooks<'a> {
    name: &'a str,
}

impl Hooks for AgentHooks<'_> {
    fn action(&mut self, _action: baton_proto::Action) {}

    fn event(&mut self, e: Event) -> anyhow::Result<()> {
        if !matches!(e, Event::Point { .. }) {
            tracing::info!(task = %self.name, event = ?e, "task event");
        }
        Ok(())
    }
}

/// Finds the task's compiled module: in memory, or compiled from the
/// module cache off the async threads (by an earlier run of the agent).
async fn find_program(
    shared: &Shared,
    module: baton_proto::ModuleRef,
) -> Option<baton_task::Program> {
    if let Some(p) = shared.programs().get(&module.digest).cloned() {
        return Some(p);
    }
    let path = module_path(shared, &module.digest);
    let engine = shared.engine.clone();
    let program = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(path).ok()?;
        engine.load(&bytes).ok()
    })
    .await
    .ok()
    .flatten()
    .filter(|p| wire_digest(p.digest()) == module.digest);
    if let Some(p) = &program {
        shared.programs().insert(module.digest, p.clone());
    }
    program
}

/// The stub and its store: recovered from the data dir, or new (with a
/// fresh task directory, unless the agent keeps tasks in memory only).
/// `None` if the directory cannot be made (the task is then refused).
async fn open_task(
    shared: &Arc<Shared>,
    new: &mut NewTask,
    core: &mut ExecCore,
    has_module: bool,
    origin: Instant,
) -> Option<(Option<crate::store::log::TaskLog>, RemoteStub)> {
    let now = baton_proto::Time::from_nanos(origin.elapsed().as_nanos() as u64);
    let mut cfg = RemoteConfig::new(new.task.clone(), new.module, has_module);
    cfg.sync_every = new.meta.sync_every;
    if let Some(mut r) = new.recovered.take() {
        if let Some((at, state)) = r.state.take() {
            core.set_stored(at, state);
        }
        // A module missing from the cache is asked for again rather than
        // the task failing for lack of it.
        r.record.has_module = has_module;
        tracing::info!(task = %new.task.0, point = ?r.record.durable.map(|d| d.point), "task recovered from the data dir");
        let stub = RemoteStub::recover(cfg, now, r.record, r.outputs);
        return Some((Some(r.log), stub));
    }
    if shared.ephemeral {
        return Some((None, RemoteStub::new(cfg, now)));
    }
    let dir_meta = TaskDirMeta {
        client: new.key.0.to_string(),
        task: new.task.0.clone(),
        module: new.module,
        meta: new.meta.clone(),
    };
    let d = task_dir(&shared.data_dir, &new.key.0, &new.key.1);
    match tokio::task::spawn_blocking(move || create_task_dir(&d, &dir_meta)).await {
        Ok(Ok(log)) => Some((Some(log), RemoteStub::new(cfg, now))),
        result => {
            if let Ok(Err(e)) = result {
                tracing::error!(task = %new.task.0, error = %e, "cannot make the task's directory; task refused");
            }
            None
        }
    }
}

/// Drives one task's remote stub until it is handed back.
pub(super) async fn task_actor(shared: Arc<Shared>, mut new: NewTask) {
    let origin = Instant::now();
    let program = find_program(&shared, new.module).await;
    let mut limits = new.meta.limits();
    limits.max_step_time = match (limits.max_step_time, shared.limits.max_step_time) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let has_module = program.is_some();
    let mut core = ExecCore::empty(shared.engine.clone(), program, new.meta.clock(), limits);
    let Some((log, stub)) = open_task(&shared, &mut new, &mut core, has_module, origin).await
    else {
        shared.tasks().remove(&new.key);
        shared.ended.send_modify(|n| *n += 1);
        return;
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let durable = log.map(|log| Durable {
        log,
        module_path: Some(module_path(&shared, &new.module.digest)),
    });
    let worker = Worker::spawn(core, durable, shared.permits.clone(), done_tx);
    let mut driver = Driver::new(stub, worker, done_rx, new.module.digest, origin);
    let forget = drive(&shared, &mut new, &mut driver).await;
    if (driver.stub.is_handed_back() || forget) && !shared.ephemeral {
        // The client has everything (or the task was dropped): nothing of
        // it needs to survive a restart.
        let d = task_dir(&shared.data_dir, &new.key.0, &new.key.1);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(d)).await;
    }
    shared.tasks().remove(&new.key);
    shared.ended.send_modify(|n| *n += 1);
}

/// The loop: drain, show, wait, until the task is handed back or dropped.
/// Returns whether the task's files should go (dropped for a bad state).
async fn drive(shared: &Arc<Shared>, new: &mut NewTask, driver: &mut Driver<RemoteStub>) -> bool {
    let name = new.task.0.clone();
    let mut hooks = AgentHooks { name: &name };
    loop {
        if let Err(e) = driver.drain(&mut hooks) {
            tracing::warn!(task = %name, error = %e, "task event not recorded");
        }
        show(&new.info, driver);
        if driver.stub.is_handed_back() {
            tracing::info!(task = %name, "task handed back to its client; forgotten here");
            return false;
        }
        match driver.wait(new.rx.recv()).await {
            Wake::Progress => {}
            Wake::Program(p) => {
                // Written to the module cache by the worker already.
                shared.programs().insert(new.module.digest, p);
            }
            Wake::Input(Some(input)) => on_input(driver, &new.connected, input),
            Wake::Input(None) | Wake::ExecutorGone => return false,
            Wake::PersistFailed(error) => {
                tracing::warn!(task = %name, error = %error, "a bad state or module from the client, or a store failure; task dropped");
                if let Some(session) = driver.stub.session() {
                    driver.send(transmit(Message::Error(ErrorMsg {
                        session,
                        code: ErrorCode::Internal,
                        text: format!("the agent dropped the task: {error}"),
                    })));
                }
                return !matches!(error, ExecError::Store(_));
            }
        }
    }
}

/// A message or link news from the router.
fn on_input(driver: &mut Driver<RemoteStub>, connected: &AtomicBool, input: TaskInput) {
    match input {
        TaskInput::Message {
            conn,
            outbox,
            message,
        } => {
            if driver.link().map(|(c, _)| c) != Some(conn) {
                if !matches!(*message, Message::Hello(_)) {
                    return; // a late message of an older connection
                }
                driver.connected(conn, outbox);
                connected.store(true, Ordering::SeqCst);
            }
            let now = driver.now();
            driver.stub.handle_message(now, *message);
        }
        TaskInput::Lost { conn } => {
            if driver.lost(Some(conn)) {
                connected.store(false, Ordering::SeqCst);
            }
        }
        TaskInput::Drain => {
            let now = driver.now();
            driver.stub.drain(now);
        }
    }
}

/// Keeps the task's line of `status.json` current.
fn show(info: &Mutex<TaskStatus>, driver: &Driver<RemoteStub>) {
    if let Ok(mut i) = info.lock() {
        let stub = &driver.stub;
        let a = stub.agreement();
        i.executor = a.assignment.executor.as_str().to_string();
        i.responsible = a.assignment.responsible.as_str().to_string();
        i.mode = a.assignment.mode.as_str().to_string();
        i.epoch = a.epoch.0;
        i.point = stub.durable().map(|d| d.point.0);
        i.executing = stub.is_executing();
        i.connected = driver.link().is_some();
        i.finished = stub.finished().map(|f| format!("{:?}", f.outcome));
    }
}
