//! Resumable bulk transfers: transfer ids, the store of partial transfers
//! that an endpoint keeps across connections, and both ends of a resumable
//! bulk stream.
//!
//! A bulk message (a module or a checkpoint) of at least [`RESUMABLE_MIN`]
//! encoded bytes travels on a bidirectional stream of its own (byte layout
//! in [`frame`]). Its [`TransferId`] is the BLAKE3 hash of its
//! encoded bytes. The receiver answers how many bytes of that id it already
//! holds from the same peer, and the sender sends only the rest, in
//! [`CHUNK`]-sized writes that QUIC's flow control paces. Partial bytes live
//! in a store shared by all connections of one endpoint (one
//! [`Agent`](crate::Agent) or [`Client`](crate::Client)), keyed by (peer
//! fingerprint, transfer id) and bounded by [`ResumeLimits`], so a peer that
//! reconnects after a cut resumes where it left off. A completed transfer is
//! checked against its id before anything decodes it.
//!
//! Smaller bulk messages keep the one-frame unidirectional stream: there is
//! little to resume, and it saves the round trip of the offset.
//!
//! This module must not decode or route messages (`conn` does) nor define
//! byte layouts (`frame` does). The store never reads the clock itself:
//! callers pass `now`, so its bounds can be tested without waiting.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use baton_proto::Channel;
use quinn::VarInt;

use crate::conn::{Sending, PRIORITY_BULK};
use crate::error::NetError;
use crate::frame::{self, StreamKind, TRANSFER_ID_LEN};
use crate::identity::Fingerprint;

/// The size of the writes a sender makes and the most a receiver reads at
/// once on a resumable bulk stream.
pub const CHUNK: usize = 1 << 20;

/// Encoded bulk messages at least this large go on a resumable stream;
/// smaller ones are sent as one frame on a unidirectional stream.
pub const RESUMABLE_MIN: usize = CHUNK;

/// Application stop code: the receiver stopped reading this stream because
/// the same transfer continues on a newer connection from the same peer.
pub const STOP_SUPERSEDED: u32 = 1;

/// A bulk transfer's id: the BLAKE3 hash of the encoded message. Identical
/// messages have identical ids, which is what lets a resend resume.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferId(pub [u8; TRANSFER_ID_LEN]);

impl TransferId {
    /// The id of an encoded message.
    pub fn of(bytes: &[u8]) -> TransferId {
        TransferId(*blake3::hash(bytes).as_bytes())
    }

    /// [`TransferId::of`], yielding to the runtime between chunks so that
    /// hashing a 256 MiB checkpoint does not hold up a worker thread (and
    /// with it the heartbeats) for the whole time.
    async fn of_yielding(bytes: &[u8]) -> TransferId {
        let mut hasher = blake3::Hasher::new();
        for piece in bytes.chunks(CHUNK) {
            hasher.update(piece);
            tokio::task::yield_now().await;
        }
        TransferId(*hasher.finalize().as_bytes())
    }
}

impl fmt::Display for TransferId {
    /// The first 8 bytes in hex: enough to tell transfers apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

/// Bounds on the partial transfers an endpoint keeps for resumption.
///
/// A partial is *active* while a stream is receiving into it and *idle*
/// once that stream is gone (reset, or its connection lost). Only idle
/// partials are evicted, oldest first; active ones are bounded by the
/// stream limits, as whole messages are. Eviction only costs a restart
/// from zero, never correctness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumeLimits {
    /// Most partials kept per peer; beyond it, that peer's oldest idle
    /// partials are dropped. At least 1.
    pub max_per_peer: usize,
    /// Most bytes held in partials across all peers; beyond it, the oldest
    /// idle partials are dropped.
    pub max_bytes: u64,
    /// An idle partial unused for this long is dropped.
    pub max_idle: Duration,
}

impl Default for ResumeLimits {
    /// 8 partials per peer, 1 GiB in all, 10 minutes idle.
    fn default() -> ResumeLimits {
        ResumeLimits {
            max_per_peer: 8,
            max_bytes: 1 << 30,
            max_idle: Duration::from_secs(600),
        }
    }
}

/// Bulk byte counters of one [`Conn`](crate::Conn), from
/// [`Conn::bulk_stats`](crate::Conn::bulk_stats). Payload bytes only
/// (encoded messages), not headers or QUIC overhead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkStats {
    /// Bytes of bulk messages this side handed to QUIC.
    pub sent_bytes: u64,
    /// Bytes of bulk messages this side did not send because the peer
    /// already held them from an earlier connection (or an earlier,
    /// cancelled send).
    pub resumed_bytes: u64,
    /// Bytes of bulk messages this side received on this connection.
    pub received_bytes: u64,
}

/// What an endpoint's store of partial transfers holds, from
/// [`Agent::partials`](crate::Agent::partials) or
/// [`Client::partials`](crate::Client::partials).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialStats {
    /// Partial transfers kept, active or idle.
    pub transfers: usize,
    /// Of those, the ones a stream is receiving into right now.
    pub active: usize,
    /// Bytes held in them.
    pub bytes: u64,
}

/// The live counters behind [`BulkStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    resumed: AtomicU64,
    received: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> BulkStats {
        BulkStats {
            sent_bytes: self.sent.load(Ordering::Relaxed),
            resumed_bytes: self.resumed.load(Ordering::Relaxed),
            received_bytes: self.received.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves consistent
/// enough data (byte buffers and counters) to go on with.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Key = (Fingerprint, TransferId);

/// Who is receiving into a partial: a connection (`quinn`'s stable id) and
/// the claim that made it the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    conn: usize,
    claim: u64,
}

struct Partial {
    total: u64,
    bytes: Vec<u8>,
    /// BLAKE3 of `bytes` so far, so that completing needs no second pass.
    hasher: blake3::Hasher,
    owner: Option<Owner>,
    last_used: Instant,
    /// The claim that last touched it: breaks ties between equal
    /// `last_used`, so "oldest first" is deterministic.
    last_claim: u64,
}

impl Partial {
    /// Appends, growing the buffer with the data and never past `total`
    /// (so memory follows arrived bytes, not announced lengths).
    fn append(&mut self, data: &[u8]) {
        grow(&mut self.bytes, self.total, data.len());
        self.bytes.extend_from_slice(data);
        self.hasher.update(data);
    }
}

/// Makes room for `extra` more bytes in `buf`, doubling but never beyond
/// `total` (the caller never appends past it).
fn grow(buf: &mut Vec<u8>, total: u64, extra: usize) {
    if buf.capacity() - buf.len() >= extra {
        return;
    }
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let want = (buf.len() * 2)
        .max(buf.len() + extra)
        .max(64 << 10)
        .min(total)
        .max(buf.len() + extra);
    buf.reserve_exact(want - buf.len());
}

struct Map {
    entries: HashMap<Key, Arc<Mutex<Partial>>>,
    next_claim: u64,
}

/// The partial transfers received by one endpoint, shared by all of its
/// connections. Lock order: the map, then an entry; never the other way.
pub(crate) struct Partials {
    limits: ResumeLimits,
    map: Mutex<Map>,
    /// Bytes held in stored partials (kept apart so that appending needs no
    /// map lock).
    held: AtomicU64,
}

impl fmt::Debug for Partials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partials")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Partials {
    pub(crate) fn new(limits: ResumeLimits) -> Arc<Partials> {
        Arc::new(Partials {
            limits,
            map: Mutex::new(Map {
                entries: HashMap::new(),
                next_claim: 0,
            }),
            held: AtomicU64::new(0),
        })
    }

    /// Starts a task that drops expired idle partials every so often, even
    /// when no transfer comes to trigger it. It ends when the store goes.
    /// Without a tokio runtime it does nothing (expiry then happens on the
    /// store's next use).
    pub(crate) fn spawn_sweeper(store: &Arc<Partials>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let period =
            (store.limits.max_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let weak: Weak<Partials> = Arc::downgrade(store);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match weak.upgrade() {
                    Some(store) => store.enforce(Instant::now()),
                    None => return,
                }
            }
        });
    }

    pub(crate) fn stats(&self) -> PartialStats {
        let map = lock(&self.map);
        let active = map
            .entries
            .values()
            .filter(|e| lock(e).owner.is_some())
            .count();
        PartialStats {
            transfers: map.entries.len(),
            active,
            bytes: self.held.load(Ordering::Relaxed),
        }
    }

    /// Claims the transfer `id` of `total` bytes from `peer` for a stream of
    /// connection `conn`. An idle partial is resumed; one still active on
    /// *another* connection is taken over (that connection is dead or
    /// dying: the peer would not resend otherwise), and its stream stops at
    /// its next chunk. One active on the *same* connection (the peer sends
    /// the same message twice at once) is left alone: this stream gets a
    /// private, non-resumable buffer.
    ///
    /// # Errors
    ///
    /// [`NetError::Protocol`] if a partial of this id has another total
    /// length: the id is the hash of the bytes, so an honest peer never
    /// does that.
    pub(crate) fn claim(
        self: &Arc<Self>,
        peer: Fingerprint,
        id: TransferId,
        total: u64,
        conn: usize,
        now: Instant,
    ) -> Result<Transfer, NetError> {
        let mut map = lock(&self.map);
        map.next_claim += 1;
        let owner = Owner {
            conn,
            claim: map.next_claim,
        };
        let key = (peer, id);
        if let Some(entry) = map.entries.get(&key).cloned() {
            let mut partial = lock(&entry);
            if partial.total != total {
                return Err(NetError::Protocol(format!(
                    "bulk transfer {id} announced as {total} bytes, earlier as {}",
                    partial.total
                )));
            }
            match partial.owner {
                Some(o) if o.conn == conn => {
                    return Ok(Transfer::private(total));
                }
                Some(_) => {
                    tracing::debug!(%id, held = partial.bytes.len(), "a bulk transfer moves to a newer connection");
                }
                None => {}
            }
            partial.owner = Some(owner);
            partial.last_used = now;
            partial.last_claim = owner.claim;
            drop(partial);
            return Ok(Transfer {
                total,
                kind: Kind::Stored {
                    store: self.clone(),
                    key,
                    owner,
                    entry,
                    finished: false,
                },
            });
        }
        let entry = Arc::new(Mutex::new(Partial {
            total,
            bytes: Vec::new(),
            hasher: blake3::Hasher::new(),
            owner: Some(owner),
            last_used: now,
            last_claim: owner.claim,
        }));
        map.entries.insert(key, entry.clone());
        self.enforce_locked(&mut map, now);
        Ok(Transfer {
            total,
            kind: Kind::Stored {
                store: self.clone(),
                key,
                owner,
                entry,
                finished: false,
            },
        })
    }

    /// Drops idle partials that expired or exceed the bounds.
    pub(crate) fn enforce(&self, now: Instant) {
        let mut map = lock(&self.map);
        self.enforce_locked(&mut map, now);
    }

    fn enforce_locked(&self, map: &mut Map, now: Instant) {
        struct Seen {
            key: Key,
            idle: bool,
            age: (Instant, u64),
            len: u64,
        }
        let mut seen: Vec<Seen> = map
            .entries
            .iter()
            .map(|(key, entry)| {
                let p = lock(entry);
                Seen {
                    key: *key,
                    idle: p.owner.is_none(),
                    age: (p.last_used, p.last_claim),
                    len: p.bytes.len() as u64,
                }
            })
            .collect();
        // Oldest first; the checks below walk this order.
        seen.sort_by_key(|s| s.age);
        let mut evict = vec![false; seen.len()];
        for (i, s) in seen.iter().enumerate() {
            if s.idle && now.saturating_duration_since(s.age.0) >= self.limits.max_idle {
                evict[i] = true;
            }
        }
        let mut per_peer: HashMap<Fingerprint, usize> = HashMap::new();
        for (i, s) in seen.iter().enumerate() {
            if !evict[i] {
                *per_peer.entry(s.key.0).or_default() += 1;
            }
        }
        for (i, s) in seen.iter().enumerate() {
            let count = per_peer.entry(s.key.0).or_default();
            if s.idle && !evict[i] && *count > self.limits.max_per_peer {
                evict[i] = true;
                *count -= 1;
            }
        }
        let mut held: u64 = seen
            .iter()
            .zip(&evict)
            .filter(|(_, e)| !**e)
            .map(|(s, _)| s.len)
            .sum();
        for (i, s) in seen.iter().enumerate() {
            if held <= self.limits.max_bytes {
                break;
            }
            if s.idle && !evict[i] {
                evict[i] = true;
                held -= s.len;
            }
        }
        for (s, _) in seen.iter().zip(&evict).filter(|(_, e)| **e) {
            if map.entries.remove(&s.key).is_some() {
                self.held.fetch_sub(s.len, Ordering::Relaxed);
                tracing::debug!(id = %s.key.1, peer = %s.key.0, bytes = s.len, "dropped a partial bulk transfer");
            }
        }
    }
}

/// One stream's hold on a transfer being received. Dropping it before
/// [`Transfer::finish`] parks a stored partial (idle, kept for a resume).
pub(crate) struct Transfer {
    total: u64,
    kind: Kind,
}

enum Kind {
    Stored {
        store: Arc<Partials>,
        key: Key,
        owner: Owner,
        entry: Arc<Mutex<Partial>>,
        finished: bool,
    },
    Private {
        bytes: Vec<u8>,
        // Boxed: a hasher is about 2 KB, the stored variant a few words.
        hasher: Box<blake3::Hasher>,
    },
}

/// The transfer continues on a newer connection; this stream must stop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Superseded;

impl Transfer {
    fn private(total: u64) -> Transfer {
        Transfer {
            total,
            kind: Kind::Private {
                bytes: Vec::new(),
                hasher: Box::new(blake3::Hasher::new()),
            },
        }
    }

    /// Bytes held so far.
    pub(crate) fn held(&self) -> u64 {
        match &self.kind {
            Kind::Stored { entry, .. } => lock(entry).bytes.len() as u64,
            Kind::Private { bytes, .. } => bytes.len() as u64,
        }
    }

    /// Appends the next bytes (the caller never goes past the total) and
    /// returns how many are held now.
    pub(crate) fn append(&mut self, data: &[u8], now: Instant) -> Result<u64, Superseded> {
        match &mut self.kind {
            Kind::Stored {
                store,
                owner,
                entry,
                ..
            } => {
                let held = {
                    let mut partial = lock(entry);
                    if partial.owner != Some(*owner) {
                        return Err(Superseded);
                    }
                    partial.append(data);
                    partial.bytes.len() as u64
                };
                let all = store.held.fetch_add(data.len() as u64, Ordering::Relaxed);
                if all + data.len() as u64 > store.limits.max_bytes {
                    store.enforce(now);
                }
                Ok(held)
            }
            Kind::Private { bytes, hasher } => {
                grow(bytes, self.total, data.len());
                bytes.extend_from_slice(data);
                hasher.update(data);
                Ok(bytes.len() as u64)
            }
        }
    }

    /// Takes the complete bytes and their BLAKE3 hash out of the store, or
    /// `Err(Superseded)` if a newer connection took the transfer over (it
    /// delivers the message instead).
    pub(crate) fn finish(&mut self) -> Result<(Vec<u8>, blake3::Hash), Superseded> {
        match &mut self.kind {
            Kind::Stored {
                store,
                key,
                owner,
                entry,
                finished,
            } => {
                let mut map = lock(&store.map);
                let mut partial = lock(entry);
                if partial.owner != Some(*owner) {
                    return Err(Superseded);
                }
                if map.entries.get(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                    map.entries.remove(key);
                }
                let bytes = std::mem::take(&mut partial.bytes);
                store.held.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
                partial.owner = None;
                *finished = true;
                Ok((bytes, partial.hasher.finalize()))
            }
            Kind::Private { bytes, hasher } => Ok((std::mem::take(bytes), hasher.finalize())),
        }
    }

    /// Gives up the stream's hold at `now`: a stored partial becomes idle,
    /// kept for a later resume within the bounds. (Streams just drop their
    /// `Transfer`, which parks it at the current time.)
    #[cfg(test)]
    fn park(mut self, now: Instant) {
        self.park_at(now);
    }

    fn park_at(&mut self, now: Instant) {
        if let Kind::Stored {
            store,
            owner,
            entry,
            finished,
            ..
        } = &mut self.kind
        {
            if *finished {
                return;
            }
            *finished = true;
            {
                let mut partial = lock(entry);
                if partial.owner == Some(*owner) {
                    partial.owner = None;
                    partial.last_used = now;
                }
            }
            store.enforce(now);
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.park_at(Instant::now());
    }
}

/// What the receiving end of resumable bulk streams needs from its
/// connection.
pub(crate) struct Receiver {
    pub(crate) store: Arc<Partials>,
    pub(crate) peer: Fingerprint,
    /// `quinn`'s stable id of the connection.
    pub(crate) conn: usize,
    /// The bulk frame limit: the largest total accepted.
    pub(crate) max: usize,
    pub(crate) counters: Arc<Counters>,
}

fn stream_err(source: io::Error) -> NetError {
    NetError::Stream {
        channel: Channel::Bulk,
        source,
    }
}

/// Receives one resumable transfer on a bidirectional stream whose header
/// has been read: reads the opening, answers the offset, then collects the
/// rest. Returns the complete, verified bytes, or `None` if the transfer
/// moved to a newer connection.
///
/// # Errors
///
/// Peer violations ([`NetError::FrameTooLarge`] for a total over the limit,
/// before anything is allocated; [`NetError::Protocol`] for bytes that do
/// not match their id); [`NetError::Stream`] if the stream fails or ends
/// early (the partial is then kept for a resume).
pub(crate) async fn receive(
    mut send: quinn::SendStream,
    recv: &mut quinn::RecvStream,
    rx: &Receiver,
) -> Result<Option<Vec<u8>>, NetError> {
    let (id, total) = frame::read_bulk_open(recv, rx.max).await?;
    let id = TransferId(id);
    let mut transfer = rx
        .store
        .claim(rx.peer, id, total, rx.conn, Instant::now())?;
    let offset = transfer.held();
    let _ = send.set_priority(PRIORITY_BULK);
    frame::write_resume_offset(&mut send, offset).await?;
    let _ = send.finish();
    if offset > 0 {
        tracing::debug!(%id, offset, total, "resuming a bulk transfer");
    }
    let mut held = offset;
    while held < total {
        let want = usize::try_from(total - held)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        let chunk = recv
            .read_chunk(want, true)
            .await
            .map_err(|e| stream_err(e.into()))?;
        let Some(chunk) = chunk else {
            return Err(stream_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("bulk stream ended after {held} of {total} bytes"),
            )));
        };
        rx.counters.add_received(chunk.bytes.len());
        match transfer.append(&chunk.bytes, Instant::now()) {
            Ok(now_held) => held = now_held,
            Err(Superseded) => {
                let _ = recv.stop(VarInt::from_u32(STOP_SUPERSEDED));
                return Ok(None);
            }
        }
    }
    let Ok((bytes, hash)) = transfer.finish() else {
        let _ = recv.stop(VarInt::from_u32(STOP_SUPERSEDED));
        return Ok(None);
    };
    if hash.as_bytes() != &id.0 {
        return Err(NetError::Protocol(format!(
            "bulk transfer {id}: the {total} bytes received do not match their BLAKE3 id"
        )));
    }
    Ok(Some(bytes))
}

/// Sends one encoded bulk message on a new resumable stream: the opening,
/// then, from the offset the peer answers, the rest in [`CHUNK`]s. Returns
/// once all of it is handed to QUIC. Cancelling resets the stream; the
/// peer keeps what it got.
///
/// # Errors
///
/// [`NetError::ConnectionLost`] if no stream can be opened;
/// [`NetError::Protocol`] if the peer answers an impossible offset (the
/// caller closes the connection); [`NetError::Stream`] if the stream fails
/// (for example stopped by the peer because the transfer continues on a
/// newer connection).
pub(crate) async fn send(
    connection: &quinn::Connection,
    bytes: &[u8],
    counters: &Counters,
) -> Result<(), NetError> {
    let id = TransferId::of_yielding(bytes).await;
    let total = bytes.len() as u64;
    let (stream, mut answer) = connection
        .open_bi()
        .await
        .map_err(NetError::ConnectionLost)?;
    let _ = stream.set_priority(PRIORITY_BULK);
    let mut sending = Sending::new(stream);
    frame::write_header(sending.stream(), StreamKind::Bulk).await?;
    frame::write_bulk_open(sending.stream(), &id.0, total).await?;
    let offset = frame::read_resume_offset(&mut answer, total).await?;
    if offset > 0 {
        tracing::debug!(%id, offset, total, "the peer holds part of this bulk transfer; sending the rest");
    }
    counters.resumed.fetch_add(offset, Ordering::Relaxed);
    // offset <= total, and total is the length of `bytes`.
    let mut at = usize::try_from(offset).unwrap_or(bytes.len());
    while at < bytes.len() {
        let end = bytes.len().min(at + CHUNK);
        sending
            .stream()
            .write_all(&bytes[at..end])
            .await
            .map_err(|e| stream_err(e.into()))?;
        counters.add_sent(end - at);
        at = end;
    }
    // Finishing lets QUIC deliver the rest after this returns.
    let _ = sending.done().finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> Fingerprint {
        Fingerprint([n; 32])
    }

    fn id(n: u8) -> TransferId {
        TransferId([n; 32])
    }

    fn limits(max_per_peer: usize, max_bytes: u64) -> ResumeLimits {
        ResumeLimits {
            max_per_peer,
            max_bytes,
            max_idle: Duration::from_secs(600),
        }
    }

    /// Claims `id` from `peer` on connection 1, appends `n` bytes and
    /// parks it at `at`.
    fn park(store: &Arc<Partials>, peer: Fingerprint, id: TransferId, n: usize, at: Instant) {
        let mut t = store.claim(peer, id, 1000, 1, at).unwrap();
        t.append(&vec![7; n], at).unwrap();
        t.park(at);
    }

    fn held(store: &Arc<Partials>, peer: Fingerprint, id: TransferId, at: Instant) -> u64 {
        // Another connection, so the claim resumes rather than going private.
        let t = store.claim(peer, id, 1000, 99, at).unwrap();
        let held = t.held();
        t.park(at);
        held
    }

    #[test]
    fn a_parked_partial_resumes_and_a_finished_one_is_gone() {
        let store = Partials::new(ResumeLimits::default());
        let t0 = Instant::now();
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let id = TransferId::of(&data);
        let mut t = store.claim(peer(1), id, 1000, 1, t0).unwrap();
        assert_eq!(t.append(&data[..400], t0), Ok(400));
        drop(t); // a reset stream or a lost connection
        assert_eq!(
            store.stats(),
            PartialStats {
                transfers: 1,
                active: 0,
                bytes: 400
            }
        );
        // Another peer's transfer of the same id is another transfer.
        assert_eq!(held(&store, peer(2), id, t0), 0);
        let mut t = store.claim(peer(1), id, 1000, 2, t0).unwrap();
        assert_eq!(t.held(), 400);
        assert_eq!(t.append(&data[400..], t0), Ok(1000));
        let (bytes, hash) = t.finish().unwrap();
        assert_eq!(bytes, data);
        assert_eq!(hash.as_bytes(), &id.0);
        drop(t);
        assert_eq!(held(&store, peer(1), id, t0), 0);
    }

    #[test]
    fn a_newer_connection_takes_over_and_the_old_stream_stops() {
        let store = Partials::new(ResumeLimits::default());
        let t0 = Instant::now();
        let mut old = store.claim(peer(1), id(1), 1000, 1, t0).unwrap();
        old.append(&[1; 300], t0).unwrap();
        // The same connection sending the same message again: private.
        let mut twin = store.claim(peer(1), id(1), 1000, 1, t0).unwrap();
        assert_eq!(twin.held(), 0);
        twin.append(&[1; 10], t0).unwrap();
        drop(twin);
        // A new connection resumes while the old stream still lives.
        let mut new = store.claim(peer(1), id(1), 1000, 2, t0).unwrap();
        assert_eq!(new.held(), 300);
        assert_eq!(old.append(&[1; 100], t0), Err(Superseded));
        assert!(old.finish().is_err());
        drop(old); // must not park what the new stream owns
        assert_eq!(store.stats().active, 1);
        assert_eq!(new.append(&[1; 700], t0), Ok(1000));
        assert_eq!(new.finish().unwrap().0.len(), 1000);
        assert_eq!(store.stats(), PartialStats::default());
        // Another total for the same id is a violation.
        park(&store, peer(1), id(2), 10, t0);
        let err = store
            .claim(peer(1), id(2), 999, 3, t0)
            .err()
            .expect("a second total");
        assert!(err.is_peer_violation(), "{err}");
    }

    #[test]
    fn at_most_n_partials_per_peer_oldest_go_first() {
        let store = Partials::new(limits(2, u64::MAX));
        let t0 = Instant::now();
        for (i, n) in [1u8, 2, 3].into_iter().enumerate() {
            park(
                &store,
                peer(1),
                id(n),
                10,
                t0 + Duration::from_secs(i as u64),
            );
        }
        park(&store, peer(2), id(1), 10, t0);
        let at = t0 + Duration::from_secs(5);
        assert_eq!(held(&store, peer(1), id(1), at), 0, "the oldest stayed");
        // That claim made a new (empty) partial, evicting the next oldest.
        assert_eq!(held(&store, peer(1), id(3), at), 10);
        assert_eq!(held(&store, peer(2), id(1), at), 10, "another peer's went");
        // Peer 1 keeps two (id 1, empty, and id 3); peer 2 its one.
        assert_eq!(store.stats().transfers, 3);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_idle_never_an_active_one() {
        let store = Partials::new(limits(100, 250));
        let t0 = Instant::now();
        park(&store, peer(1), id(1), 100, t0);
        park(&store, peer(2), id(2), 100, t0 + Duration::from_secs(1));
        assert_eq!(store.stats().bytes, 200);
        // An active transfer pushes the total over the budget: the oldest
        // idle partial goes, the active one keeps growing.
        let mut active = store
            .claim(peer(3), id(3), 1000, 1, t0 + Duration::from_secs(2))
            .unwrap();
        let at = t0 + Duration::from_secs(3);
        active.append(&[0; 100], at).unwrap();
        assert_eq!(
            store.stats(),
            PartialStats {
                transfers: 2,
                active: 1,
                bytes: 200
            }
        );
        active.append(&[0; 300], at).unwrap();
        assert_eq!(
            store.stats(),
            PartialStats {
                transfers: 1,
                active: 1,
                bytes: 400
            }
        );
        // Parked, it is over the budget alone and goes too.
        active.park(at);
        assert_eq!(store.stats(), PartialStats::default());
    }

    #[test]
    fn an_idle_partial_expires() {
        let store = Partials::new(ResumeLimits {
            max_idle: Duration::from_secs(60),
            ..ResumeLimits::default()
        });
        let t0 = Instant::now();
        park(&store, peer(1), id(1), 10, t0);
        let active = store.claim(peer(1), id(2), 1000, 1, t0).unwrap();
        store.enforce(t0 + Duration::from_secs(59));
        assert_eq!(store.stats().transfers, 2);
        store.enforce(t0 + Duration::from_secs(60));
        assert_eq!(
            store.stats(),
            PartialStats {
                transfers: 1,
                active: 1,
                bytes: 0
            }
        );
        drop(active);
    }

    #[test]
    fn buffers_grow_with_the_data_and_never_past_the_total() {
        let mut buf = Vec::new();
        grow(&mut buf, 256 << 20, 10);
        assert!(buf.capacity() <= 64 << 10, "{}", buf.capacity());
        let mut buf = Vec::new();
        for _ in 0..100 {
            grow(&mut buf, 1000, 10);
            buf.extend_from_slice(&[0; 10]);
        }
        assert_eq!(buf.len(), 1000);
        assert!(buf.capacity() <= 1000, "{}", buf.capacity());
    }
}
