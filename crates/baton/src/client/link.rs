//! Carrying a stub's messages over a [`Conn`], and the client's dialer.
//!
//! Owns [`Outbox`] (the send side of one connection: control and output
//! messages each through their own ordered queue, every bulk message on its
//! own task so that a checkpoint in flight never delays a heartbeat) and
//! [`dial`] (the client's connect–read–redial loop with backoff, reporting
//! [`LinkNews`]). A message of an ordered channel that cannot be sent closes
//! the connection with a warning rather than silently stopping its writer.
//! It must not interpret messages beyond their channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_net::{Client, Conn, Fingerprint, NetError};
use baton_proto::{Channel, Message, Transmit};
use tokio::sync::mpsc;

/// First pause before redialling; doubled after every failure up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two dials.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Longest a single dial may take. A handshake whose first packets were
/// lost (the link was down) is retried by QUIC with a backoff that soon
/// reaches seconds; a fresh dial after a short bound reconnects sooner
/// once the link is back.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The send side of one connection.
#[derive(Clone)]
pub struct Outbox {
    control: mpsc::UnboundedSender<Message>,
    output: mpsc::UnboundedSender<Message>,
    conn: Conn,
}

impl Outbox {
    /// Starts the writers of `conn`. They end when the connection fails or
    /// every clone of the outbox is dropped.
    pub fn new(conn: Conn) -> Outbox {
        let control = ordered_writer(conn.clone());
        let output = ordered_writer(conn.clone());
        Outbox {
            control,
            output,
            conn,
        }
    }

    /// Sends a message on its channel; failures surface as the
    /// connection's loss on the receive side.
    pub fn send(&self, t: Transmit) {
        match t.channel {
            Channel::Control => {
                let _ = self.control.send(t.message);
            }
            Channel::Output => {
                let _ = self.output.send(t.message);
            }
            Channel::Bulk => {
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    if let Err(e) = conn.send(&t.message).await {
                        tracing::debug!(error = %e, "a bulk send failed");
                    }
                });
            }
        }
    }

    /// The connection.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }
}

fn ordered_writer(conn: Conn) -> mpsc::UnboundedSender<Message> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Err(e) = conn.send(&msg).await {
                fail(&conn, msg.kind(), &e);
                return;
            }
        }
    });
    tx
}

/// A message of an ordered channel could not be sent: later ones must not
/// overtake it, so the connection is closed, loudly. Both sides then see
/// the link lost, and the next connection sends again what is unacknowledged.
fn fail(conn: &Conn, kind: &str, e: &NetError) {
    if matches!(e, NetError::ConnectionLost(_)) {
        tracing::debug!(error = %e, "send failed: the connection is gone");
        return;
    }
    tracing::warn!(error = %e, message = kind, "a message could not be sent; closing the connection");
    conn.close("a message could not be sent");
}

/// What the dialer reports.
pub enum LinkNews {
    /// Connection number `id` is up.
    Up {
        /// The connection's number (increasing).
        id: u64,
        /// Its send side.
        outbox: Outbox,
    },
    /// A message arrived on connection `id`.
    Message {
        /// The connection's number.
        id: u64,
        /// The message.
        message: Box<Message>,
    },
    /// Connection `id` is gone.
    Down {
        /// The connection's number.
        id: u64,
        /// Why.
        error: NetError,
    },
    /// A dial failed and the dialer goes on trying.
    Unreachable(NetError),
    /// The agent is not the one pinned, or it refused us: nothing will run
    /// remotely and the dialer has stopped.
    Fatal(NetError),
}

/// Dials `agent` until `news` closes: connects, reports messages, and
/// redials with backoff after a loss. Stops for good on an identity error.
pub async fn dial(
    client: Arc<Client>,
    agent: SocketAddr,
    expected: Fingerprint,
    news: mpsc::UnboundedSender<LinkNews>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut id = 0;
    loop {
        let attempt =
            match tokio::time::timeout(DIAL_TIMEOUT, client.connect(agent, expected)).await {
                Ok(result) => result,
                Err(_) => Err(NetError::SetupTimeout {
                    addr: agent,
                    waited_ms: DIAL_TIMEOUT.as_millis(),
                }),
            };
        match attempt {
            Ok(conn) => {
                id += 1;
                backoff = FIRST_BACKOFF;
                let outbox = Outbox::new(conn.clone());
                if news.send(LinkNews::Up { id, outbox }).is_err() {
                    return;
                }
                loop {
                    match conn.recv().await {
                        Ok((_, message)) => {
                            if news
                                .send(LinkNews::Message {
                                    id,
                                    message: Box::new(message),
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(error) => {
                            if news.send(LinkNews::Down { id, error }).is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
            Err(
                e @ (NetError::AgentFingerprintMismatch { .. } | NetError::ClientRefused { .. }),
            ) => {
                let _ = news.send(LinkNews::Fatal(e));
                return;
            }
            Err(e) => {
                if news.send(LinkNews::Unreachable(e)).is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
