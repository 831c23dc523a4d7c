//! The agent's front door: connections, and routing their messages.
//!
//! Owns accepting connections, one async task per connection that routes
//! a `Hello` to its task (creating it if the limits allow) and later
//! messages by their session, and telling a task its connection is gone.
//! It must not interpret messages beyond their session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use baton_net::{Agent, Conn, Fingerprint};
use baton_proto::message::{ErrorCode, ErrorMsg, Hello};
use baton_proto::{Message, SessionId, Transmit};
use tokio::sync::mpsc;

use super::actor::{task_actor, NewTask};
use super::{Shared, TaskHandle, TaskInput, TaskStatus};
use crate::client::link::Outbox;
use crate::spec::AgentSettings;

pub(super) async fn accept_loop(endpoint: Arc<Agent>, shared: Arc<Shared>) {
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
pub(super) async fn serve_conn(shared: Arc<Shared>, conn: Conn, id: u64) {
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

pub(super) fn transmit(message: Message) -> Transmit {
    Transmit {
        channel: message.channel(),
        message,
    }
}

/// Finds or creates the task a `Hello` names, within the limits.
pub(super) fn admit(
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
    let meta =
        AgentSettings::from_meta(hello.meta.as_bytes()).map_err(|t| (ErrorCode::Unsupported, t))?;
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
