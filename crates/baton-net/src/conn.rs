//! [`Conn`]: one established connection, carrying [`Message`]s by channel.
//!
//! Owns the mapping of channels to QUIC streams:
//!
//! - **Control**: the one bidirectional stream, opened by the client right
//!   after the handshake (see `endpoint`). Highest send priority, so bulk
//!   data never delays a heartbeat behind it.
//! - **Bulk**: a new stream per message (a module or a checkpoint), lowest
//!   priority; many can be in flight at once. From
//!   [`RESUMABLE_MIN`](crate::bulk::RESUMABLE_MIN) bytes on, a
//!   bidirectional stream carrying a resumable transfer (see
//!   [`bulk`]); below it, a unidirectional stream with one
//!   frame. Every bidirectional stream after the control stream is a bulk
//!   stream.
//! - **Output**: one long-lived unidirectional stream per direction, opened
//!   on first use, middle priority; output stays in order.
//!
//! Receiving runs in background tasks (one per stream) that decode whole
//! messages and queue them for [`Conn::recv`]; a message is queued only when
//! all of it has arrived (and, for a resumable transfer, matched its id), so
//! a large checkpoint in flight never holds up a control message. If the
//! peer sends an oversize or malformed frame, the connection is closed with
//! [`CLOSE_PROTOCOL_VIOLATION`] and `recv` returns the error. A bulk stream
//! that the peer resets (a cancelled send) or that dies with its connection
//! keeps its bytes in the endpoint's store of partial transfers when it was
//! resumable (for a later resend to resume) and is dropped otherwise; the
//! connection lives on. This module must not interpret messages: routing is
//! by [`Message::channel`] only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::{Channel, Message};
use quinn::VarInt;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::bulk::{self, BulkStats, Counters, Partials, Receiver};
use crate::error::NetError;
use crate::frame::{self, FrameLimits, StreamKind};
use crate::identity::Fingerprint;

/// Application close code: a normal close.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the framing or sent an invalid
/// message.
pub const CLOSE_PROTOCOL_VIOLATION: u32 = 1;

/// Send priority of the control stream (higher goes first).
pub const PRIORITY_CONTROL: i32 = 100;
/// Send priority of the output stream.
pub const PRIORITY_OUTPUT: i32 = 50;
/// Send priority of bulk streams.
pub const PRIORITY_BULK: i32 = 0;

/// Messages decoded but not yet taken by [`Conn::recv`]. When it is full,
/// the readers stop reading and QUIC flow control slows the peer down.
const QUEUE: usize = 64;

type Received = Result<(Channel, Message), NetError>;

/// The peer violation that made a reader close the connection, kept apart
/// from the queue so that `recv` reports it rather than the
/// "connection closed" errors that the close causes in the other readers.
type Fault = Arc<std::sync::Mutex<Option<NetError>>>;

/// One established connection to a peer, cheap to clone and safe to use
/// from several tasks at once (for example one task sending heartbeats
/// while another sends a checkpoint, and a third calling `recv`). Dropping
/// the last clone closes the connection.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.inner.peer)
            .field("remote", &self.inner.connection.remote_address())
            .finish_non_exhaustive()
    }
}

struct Inner {
    connection: quinn::Connection,
    peer: Fingerprint,
    limits: FrameLimits,
    control_tx: Mutex<quinn::SendStream>,
    output_tx: Mutex<Option<quinn::SendStream>>,
    rx: Mutex<mpsc::Receiver<Received>>,
    fault: Fault,
    counters: Arc<Counters>,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    /// The last clone of a [`Conn`] going away closes the connection (the
    /// per-stream readers would otherwise keep it open).
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
        self.connection
            .close(VarInt::from_u32(CLOSE_NORMAL), b"connection dropped");
    }
}

/// Maps a stream failure to [`NetError::ConnectionLost`] when the
/// connection itself is gone, which is the more useful error.
fn lost_or(connection: &quinn::Connection, err: NetError) -> NetError {
    match (&err, connection.close_reason()) {
        (NetError::Stream { .. }, Some(reason)) => NetError::ConnectionLost(reason),
        _ => err,
    }
}

/// Reads frames from one stream until it ends, queueing the messages.
/// Returns `Err` on the first failure.
async fn read_stream(
    recv: &mut quinn::RecvStream,
    channel: Channel,
    limits: &FrameLimits,
    tx: &mpsc::Sender<Received>,
    counters: &Counters,
) -> Result<(), NetError> {
    // Only the control and output streams, and bulk messages too small to
    // be resumable, travel as plain frames: a larger frame on a plain bulk
    // stream is not something a baton peer sends.
    let max = match channel {
        Channel::Bulk => limits.max(channel).min(bulk::RESUMABLE_MIN),
        _ => limits.max(channel),
    };
    while let Some(bytes) = frame::read_frame(recv, channel, max).await? {
        if channel == Channel::Bulk {
            counters.add_received(bytes.len());
        }
        let msg = frame::decode(channel, &bytes, limits)?;
        if tx.send(Ok((channel, msg))).await.is_err() {
            return Ok(()); // the Conn is gone
        }
    }
    Ok(())
}

/// Records a peer violation in `fault` (for `recv` to report) and closes
/// the connection with [`CLOSE_PROTOCOL_VIOLATION`].
fn close_for_violation(connection: &quinn::Connection, fault: &Fault, err: NetError) {
    tracing::warn!(remote = %connection.remote_address(), error = %err, "closing a connection: protocol violation");
    let reason = err.to_string();
    fault
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(err);
    connection.close(
        VarInt::from_u32(CLOSE_PROTOCOL_VIOLATION),
        &reason.as_bytes()[..reason.len().min(200)],
    );
}

/// Handles a reader's failure: a peer violation is recorded in `fault`
/// and closes the connection; every failure ends `recv`.
async fn fail(
    connection: &quinn::Connection,
    tx: &mpsc::Sender<Received>,
    fault: &Fault,
    err: NetError,
) {
    let err = lost_or(connection, err);
    if err.is_peer_violation() {
        close_for_violation(connection, fault, err);
        let _ = tx
            .send(Err(NetError::ConnectionLost(
                quinn::ConnectionError::LocallyClosed,
            )))
            .await;
    } else {
        let _ = tx.send(Err(err)).await;
    }
}

/// Ends the failed task of one bulk or output stream: a peer violation
/// closes the connection; anything else drops the stream alone.
async fn stream_failed(
    connection: &quinn::Connection,
    tx: &mpsc::Sender<Received>,
    fault: &Fault,
    err: NetError,
) {
    match err {
        e if e.is_peer_violation() => fail(connection, tx, fault, e).await,
        // The connection's end is reported by the acceptors.
        _ if connection.close_reason().is_some() => {}
        // The peer reset this stream (it abandoned a transfer or was
        // cancelled mid-message): a resumable transfer keeps its partial
        // bytes in the store, a one-frame message is dropped; the protocol
        // resends what matters.
        e => tracing::debug!(error = %e, "a bulk or output stream failed; dropped"),
    }
}

/// Everything the stream readers of one connection share.
struct Readers {
    connection: quinn::Connection,
    limits: FrameLimits,
    tx: mpsc::Sender<Received>,
    fault: Fault,
    receiver: Arc<Receiver>,
}

/// One bidirectional stream after the control stream: a resumable bulk
/// message, delivered once complete.
async fn read_bidi(
    send: quinn::SendStream,
    recv: &mut quinn::RecvStream,
    receiver: &Receiver,
    limits: &FrameLimits,
    tx: &mpsc::Sender<Received>,
) -> Result<(), NetError> {
    let kind = frame::read_header(recv, Channel::Bulk).await?;
    if kind != StreamKind::Bulk {
        return Err(NetError::Protocol(format!(
            "a bidirectional stream after the control stream claims to be a {kind:?} stream"
        )));
    }
    let Some(bytes) = bulk::receive(send, recv, receiver).await? else {
        return Ok(()); // it continues on a newer connection
    };
    let msg = frame::decode(Channel::Bulk, &bytes, limits)?;
    drop(bytes);
    let _ = tx.send(Ok((Channel::Bulk, msg))).await;
    Ok(())
}

/// One unidirectional stream: output, or a plain bulk message.
async fn read_uni(
    recv: &mut quinn::RecvStream,
    limits: &FrameLimits,
    tx: &mpsc::Sender<Received>,
    counters: &Counters,
) -> Result<(), NetError> {
    let kind = frame::read_header(recv, Channel::Bulk).await?;
    if kind == StreamKind::Control {
        return Err(NetError::Protocol(
            "a unidirectional stream claims to be the control stream".into(),
        ));
    }
    read_stream(recv, kind.channel(), limits, tx, counters).await
}

fn spawn_readers(mut control_rx: quinn::RecvStream, r: Readers) -> Vec<JoinHandle<()>> {
    let Readers {
        connection,
        limits,
        tx,
        fault,
        receiver,
    } = r;
    let counters = receiver.counters.clone();
    let control = {
        let connection = connection.clone();
        let tx = tx.clone();
        let fault = fault.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let err = match read_stream(&mut control_rx, Channel::Control, &limits, &tx, &counters)
                .await
            {
                Ok(()) => NetError::Protocol("the peer ended the control stream".into()),
                Err(e) => e,
            };
            fail(&connection, &tx, &fault, err).await;
        })
    };
    let bidi = {
        let connection = connection.clone();
        let tx = tx.clone();
        let fault = fault.clone();
        tokio::spawn(async move {
            loop {
                let (send, mut recv) = match connection.accept_bi().await {
                    Ok(streams) => streams,
                    Err(e) => {
                        let _ = tx.send(Err(NetError::ConnectionLost(e))).await;
                        return;
                    }
                };
                let connection = connection.clone();
                let tx = tx.clone();
                let fault = fault.clone();
                let receiver = receiver.clone();
                // Bounded by the transport's max_concurrent_bidi_streams; each
                // task ends with its stream or the connection.
                tokio::spawn(async move {
                    let result = read_bidi(send, &mut recv, &receiver, &limits, &tx).await;
                    if let Err(e) = result {
                        stream_failed(&connection, &tx, &fault, e).await;
                    }
                });
            }
        })
    };
    let uni = tokio::spawn(async move {
        loop {
            let mut recv = match connection.accept_uni().await {
                Ok(recv) => recv,
                Err(e) => {
                    let _ = tx.send(Err(NetError::ConnectionLost(e))).await;
                    return;
                }
            };
            let connection = connection.clone();
            let tx = tx.clone();
            let fault = fault.clone();
            let counters = counters.clone();
            // Bounded by the transport's max_concurrent_uni_streams; each task
            // ends with its stream or the connection.
            tokio::spawn(async move {
                let result = read_uni(&mut recv, &limits, &tx, &counters).await;
                if let Err(e) = result {
                    stream_failed(&connection, &tx, &fault, e).await;
                }
            });
        }
    });
    vec![control, bidi, uni]
}

/// Application stream reset code: the sender abandoned the message.
pub const RESET_CANCELLED: u32 = 0;

/// A send stream that is reset if dropped before [`Sending::done`], so that
/// a cancelled send never leaves half a frame that the peer would take for a
/// stream that ended early or, on a long-lived stream, for garbage.
pub(crate) struct Sending(Option<quinn::SendStream>);

impl Sending {
    pub(crate) fn new(stream: quinn::SendStream) -> Sending {
        Sending(Some(stream))
    }

    pub(crate) fn stream(&mut self) -> &mut quinn::SendStream {
        self.0
            .as_mut()
            .unwrap_or_else(|| unreachable!("used after done"))
    }

    pub(crate) fn done(mut self) -> quinn::SendStream {
        self.0.take().unwrap_or_else(|| unreachable!("done twice"))
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(mut stream) = self.0.take() {
            let _ = stream.reset(VarInt::from_u32(RESET_CANCELLED));
        }
    }
}

impl Conn {
    /// Wraps an established connection whose control stream is set up;
    /// `partials` is the endpoint's store of partial bulk transfers.
    pub(crate) fn new(
        connection: quinn::Connection,
        peer: Fingerprint,
        limits: FrameLimits,
        control: (quinn::SendStream, quinn::RecvStream),
        partials: Arc<Partials>,
    ) -> Conn {
        let (control_tx, control_rx) = control;
        let _ = control_tx.set_priority(PRIORITY_CONTROL);
        let (tx, rx) = mpsc::channel(QUEUE);
        let fault = Fault::default();
        let counters = Arc::new(Counters::default());
        let receiver = Arc::new(Receiver {
            store: partials,
            peer,
            conn: connection.stable_id(),
            max: limits.bulk,
            counters: counters.clone(),
        });
        let readers = spawn_readers(
            control_rx,
            Readers {
                connection: connection.clone(),
                limits,
                tx,
                fault: fault.clone(),
                receiver,
            },
        );
        Conn {
            inner: Arc::new(Inner {
                connection,
                peer,
                limits,
                control_tx: Mutex::new(control_tx),
                output_tx: Mutex::new(None),
                rx: Mutex::new(rx),
                fault,
                counters,
                readers,
            }),
        }
    }

    /// Sends a message on its channel ([`Message::channel`]). Returns once
    /// the message is handed to QUIC (buffered for sending), not when the
    /// peer has it. Control and output messages keep their order per
    /// channel; bulk messages travel on their own streams and may overtake
    /// one another.
    ///
    /// A bulk message of [`RESUMABLE_MIN`](crate::bulk::RESUMABLE_MIN)
    /// bytes or more is resumable: if an earlier send of the same message
    /// to the same peer endpoint was cut off (connection lost, or the send
    /// cancelled), the peer says how much it holds and only the rest is
    /// sent ([`Conn::bulk_stats`] counts both). Sending the same message
    /// again on a *new* connection while an older connection still carries
    /// it moves the transfer to the new one; the old send then fails.
    ///
    /// # Cancellation
    ///
    /// Dropping the future of a bulk or output send resets that stream and
    /// the connection lives on (the next output message opens a new output
    /// stream). The peer drops a partial output or small bulk message, and
    /// keeps a partial resumable transfer for a later send to resume. Dropping a *control* send
    /// mid-write may leave half a frame on the control stream, after which
    /// the peer closes the connection as a protocol violation: do not cancel
    /// control sends (they are small and wait only when the peer stops
    /// reading).
    ///
    /// # Errors
    ///
    /// [`NetError::FrameTooLarge`] if the encoded message exceeds the
    /// channel's limit (nothing is sent); [`NetError::ConnectionLost`] if the
    /// connection is gone; [`NetError::Stream`] if the stream fails.
    pub async fn send(&self, msg: &Message) -> Result<(), NetError> {
        let channel = msg.channel();
        let bytes = msg.encode();
        let max = self.inner.limits.max(channel);
        let connection = &self.inner.connection;
        let result = async {
            match channel {
                Channel::Control => {
                    let mut stream = self.inner.control_tx.lock().await;
                    frame::write_frame(&mut *stream, channel, &bytes, max).await
                }
                Channel::Output => {
                    let mut slot = self.inner.output_tx.lock().await;
                    let mut sending = match slot.take() {
                        Some(stream) => Sending(Some(stream)),
                        None => {
                            let stream = connection
                                .open_uni()
                                .await
                                .map_err(NetError::ConnectionLost)?;
                            let _ = stream.set_priority(PRIORITY_OUTPUT);
                            let mut sending = Sending(Some(stream));
                            frame::write_header(sending.stream(), StreamKind::Output).await?;
                            sending
                        }
                    };
                    // If this is cancelled or fails, the stream is reset and the
                    // next output message opens a new one.
                    frame::write_frame(sending.stream(), channel, &bytes, max).await?;
                    *slot = Some(sending.done());
                    Ok(())
                }
                Channel::Bulk => {
                    if bytes.len() > max {
                        return Err(NetError::FrameTooLarge {
                            channel,
                            len: bytes.len() as u64,
                            max,
                        });
                    }
                    if bytes.len() >= bulk::RESUMABLE_MIN {
                        return match bulk::send(connection, &bytes, &self.inner.counters).await {
                            // Only the peer's answer can be a violation here.
                            Err(NetError::Protocol(reason)) => {
                                let err = NetError::Protocol(reason.clone());
                                close_for_violation(connection, &self.inner.fault, err);
                                Err(NetError::Protocol(reason))
                            }
                            other => other,
                        };
                    }
                    let stream = connection
                        .open_uni()
                        .await
                        .map_err(NetError::ConnectionLost)?;
                    let _ = stream.set_priority(PRIORITY_BULK);
                    let mut sending = Sending(Some(stream));
                    frame::write_header(sending.stream(), StreamKind::Bulk).await?;
                    frame::write_frame(sending.stream(), channel, &bytes, max).await?;
                    self.inner.counters.add_sent(bytes.len());
                    // Finishing lets QUIC deliver the rest after this returns.
                    let _ = sending.done().finish();
                    Ok(())
                }
            }
        }
        .await;
        result.map_err(|e| lost_or(connection, e))
    }

    /// Waits for the next message from the peer, with the channel it came
    /// on. Control messages are never queued behind a bulk message that is
    /// still arriving.
    ///
    /// # Errors
    ///
    /// [`NetError::ConnectionLost`] once the connection is gone (closed by
    /// either side or timed out after the idle timeout); a peer violation
    /// ([`NetError::FrameTooLarge`], [`NetError::Decode`],
    /// [`NetError::WrongChannel`], [`NetError::Protocol`]), after which the
    /// connection is closed. After an error, later calls return
    /// [`NetError::ConnectionLost`].
    pub async fn recv(&self) -> Result<(Channel, Message), NetError> {
        let mut rx = self.inner.rx.lock().await;
        let err = match rx.recv().await {
            Some(Ok(received)) => return Ok(received),
            Some(Err(e)) => e,
            None => NetError::ConnectionLost(self.inner.connection.closed().await),
        };
        let fault = self
            .inner
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Err(fault.unwrap_or(err))
    }

    /// Bulk byte counters of this connection: sent, resumed (not sent
    /// because the peer already held them) and received.
    pub fn bulk_stats(&self) -> BulkStats {
        self.inner.counters.snapshot()
    }

    /// The peer's certificate fingerprint (verified during the handshake).
    pub fn peer_fingerprint(&self) -> Fingerprint {
        self.inner.peer
    }

    /// The peer's current address (changes when a client migrates).
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.connection.remote_address()
    }

    /// QUIC's current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.inner.connection.rtt()
    }

    /// Closes the connection normally; the peer's `recv` reports
    /// [`NetError::ConnectionLost`] with this reason. Data not yet delivered
    /// may be lost: wait for an acknowledgement message first if it matters.
    pub fn close(&self, reason: &str) {
        self.inner
            .connection
            .close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
    }

    /// Waits until the connection is closed, and says why.
    pub async fn closed(&self) -> NetError {
        NetError::ConnectionLost(self.inner.connection.closed().await)
    }

    /// The underlying quinn connection (statistics, tests). Opening streams
    /// on it directly bypasses the framing and is a protocol violation.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner.connection
    }
}
