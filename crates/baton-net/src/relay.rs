//! A small UDP relay for fault injection, for tests and demos only, never
//! for production traffic.
//!
//! A [`Relay`] sits between one client and an agent on loopback: the client
//! sends to [`Relay::client_side_addr`], the relay forwards to the agent from
//! a socket of its own (the *agent side*), and forwards the agent's answers
//! back to the client. From the test (or `baton demo`) it can, each control
//! effective immediately and callable from any task or thread:
//!
//! - [`cut`](Relay::cut) the link (every datagram both ways is dropped, also
//!   those already waiting in a delay queue) and [`heal`](Relay::heal) it;
//! - [`set_delay`](Relay::set_delay): hold every datagram for a one-way
//!   delay, keeping the order;
//! - [`set_drop`](Relay::set_drop): drop a fraction of the datagrams,
//!   deterministically from a seed;
//! - [`rebind_agent_side`](Relay::rebind_agent_side): replace the socket
//!   facing the agent, so the agent sees the client's address change (a NAT
//!   rebinding, which QUIC connection migration must survive);
//! - read the [`stats`](Relay::stats): datagrams received, forwarded and
//!   dropped in each direction.
//!
//! It owns its two UDP sockets and four tokio tasks (a receiver and a
//! delayed sender in each direction); [`Relay::stop`], or dropping the last
//! clone of the [`Relay`], ends them and closes the sockets.
//!
//! It serves **one client at a time**: the client's address is learned from
//! its first datagram and followed whenever a datagram arrives from another
//! address, so a second client would take the relay over from the first.
//! This module must not know QUIC, TLS or baton's messages: it moves opaque
//! datagrams.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Datagrams that may wait in each direction's delay queue; beyond that the
/// relay drops (and counts) them, as an overflowing router queue does.
pub const QUEUE_DATAGRAMS: usize = 8192;

/// The largest datagram the relay forwards whole.
const MAX_DATAGRAM: usize = 65535;

/// A UDP relay between one client and an agent that injects faults; see the
/// [module documentation](self).
///
/// Cloning gives another handle to the same relay; the relay stops when
/// [`stop`](Relay::stop) is called or the last clone is dropped.
#[derive(Clone)]
pub struct Relay {
    owner: Arc<Owner>,
}

/// Counts of datagrams in one direction since the relay started.
///
/// Once traffic has settled (nothing waits in a delay queue),
/// `received == forwarded + dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Datagrams the relay read in this direction.
    pub received: u64,
    /// Datagrams the relay sent on.
    pub forwarded: u64,
    /// Datagrams dropped: by a cut, by the drop fraction, by a full delay
    /// queue, for want of a known client, or because sending failed.
    pub dropped: u64,
}

impl FlowStats {
    /// Datagrams received but neither forwarded nor dropped yet: those
    /// waiting in the delay queue (or being sent right now).
    pub fn in_flight(&self) -> u64 {
        self.received
            .saturating_sub(self.forwarded)
            .saturating_sub(self.dropped)
    }
}

/// Counts of datagrams in both directions; see [`Relay::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// From the client to the agent.
    pub to_agent: FlowStats,
    /// From the agent to the client.
    pub to_client: FlowStats,
}

/// What the relay's handles own: the tasks, and the sender that replaces
/// the agent-side socket. Dropping it ends the tasks.
struct Owner {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    agent_side: watch::Sender<Arc<UdpSocket>>,
    runtime: Handle,
    client_side_addr: SocketAddr,
    agent_addr: SocketAddr,
    stopped: AtomicBool,
}

impl Drop for Owner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// State shared by the handles and the tasks.
struct Shared {
    cut: AtomicBool,
    delay_nanos: AtomicU64,
    drop: Mutex<DropPolicy>,
    client: Mutex<Option<SocketAddr>>,
    to_agent: Counters,
    to_client: Counters,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> FlowStats {
        // Read `received` last, so a snapshot never shows more forwarded
        // and dropped than received.
        let forwarded = self.forwarded.load(Ordering::SeqCst);
        let dropped = self.dropped.load(Ordering::SeqCst);
        let received = self.received.load(Ordering::SeqCst);
        FlowStats {
            received,
            forwarded,
            dropped,
        }
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// The drop fraction and one generator per direction, so each direction's
/// pattern depends only on the seed and the datagram's rank.
struct DropPolicy {
    fraction: f64,
    to_agent: SplitMix64,
    to_client: SplitMix64,
}

impl DropPolicy {
    fn new(fraction: f64, seed: u64) -> DropPolicy {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        DropPolicy {
            fraction,
            to_agent: SplitMix64::new(seed),
            to_client: SplitMix64::new(seed ^ 0xA5A5_5A5A_C3C3_3C3C),
        }
    }

    /// Whether to drop the next datagram going `to_agent` (or to the client).
    fn drops(&mut self, to_agent: bool) -> bool {
        if self.fraction <= 0.0 {
            return false;
        }
        let rng = if to_agent {
            &mut self.to_agent
        } else {
            &mut self.to_client
        };
        rng.next_unit() < self.fraction
    }
}

/// SplitMix64 (Steele, Lea and Flood): a tiny, well-mixed deterministic
/// generator, plenty for choosing which datagrams to drop.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A datagram waiting in a delay queue.
struct Queued {
    due: Instant,
    bytes: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address to bind a socket that talks to `peer` on: loopback for a
/// loopback or unspecified peer, else any address of the same family.
fn bind_addr_for(peer: SocketAddr) -> SocketAddr {
    let ip = peer.ip();
    let local = match (ip.is_loopback() || ip.is_unspecified(), ip) {
        (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (true, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(local, 0)
}

/// A tokio socket connected to `agent`, made in `runtime`.
fn agent_socket(runtime: &Handle, agent: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(bind_addr_for(agent))?;
    socket.connect(agent)?;
    socket.set_nonblocking(true)?;
    let _entered = runtime.enter();
    UdpSocket::from_std(socket)
}

/// Whether a receive error is a transient report (an ICMP error for an
/// earlier datagram) rather than a broken socket.
fn transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// After a non-transient receive error, the pause before trying again, so
/// a persistently failing socket does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

impl Relay {
    /// Starts a relay to the agent at `agent`, listening for the client on
    /// `127.0.0.1` at a free port ([`client_side_addr`](Relay::client_side_addr)).
    ///
    /// Must be called within a tokio runtime: the relay's tasks run there.
    ///
    /// # Errors
    ///
    /// Binding or connecting a socket failed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(agent: SocketAddr) -> io::Result<Relay> {
        Relay::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), agent)
    }

    /// Like [`start`](Relay::start), listening for the client on
    /// `client_side` (port 0 for a free one).
    ///
    /// # Errors
    ///
    /// Binding or connecting a socket failed.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn bind(client_side: SocketAddr, agent: SocketAddr) -> io::Result<Relay> {
        let runtime = Handle::current();
        let front = std::net::UdpSocket::bind(client_side)?;
        front.set_nonblocking(true)?;
        let front = Arc::new(UdpSocket::from_std(front)?);
        let client_side_addr = front.local_addr()?;
        let back = Arc::new(agent_socket(&runtime, agent)?);
        let (agent_side, agent_side_rx) = watch::channel(back);

        let shared = Arc::new(Shared {
            cut: AtomicBool::new(false),
            delay_nanos: AtomicU64::new(0),
            drop: Mutex::new(DropPolicy::new(0.0, 0)),
            client: Mutex::new(None),
            to_agent: Counters::default(),
            to_client: Counters::default(),
        });
        let (up_tx, up_rx) = mpsc::channel(QUEUE_DATAGRAMS);
        let (down_tx, down_rx) = mpsc::channel(QUEUE_DATAGRAMS);
        let tasks = vec![
            runtime.spawn(receive_from_client(shared.clone(), front.clone(), up_tx)),
            runtime.spawn(send_to_agent(shared.clone(), agent_side_rx.clone(), up_rx)),
            runtime.spawn(receive_from_agent(shared.clone(), agent_side_rx, down_tx)),
            runtime.spawn(send_to_client(shared.clone(), front, down_rx)),
        ];
        tracing::debug!(client_side = %client_side_addr, %agent, "relay started");
        Ok(Relay {
            owner: Arc::new(Owner {
                shared,
                tasks,
                agent_side,
                runtime,
                client_side_addr,
                agent_addr: agent,
                stopped: AtomicBool::new(false),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// The address clients send to instead of the agent's.
    pub fn client_side_addr(&self) -> SocketAddr {
        self.owner.client_side_addr
    }

    /// The agent's address, as given to [`start`](Relay::start).
    pub fn agent_addr(&self) -> SocketAddr {
        self.owner.agent_addr
    }

    /// The address of the relay's current socket facing the agent: the
    /// client's address as the agent sees it.
    pub fn agent_side_addr(&self) -> SocketAddr {
        self.owner
            .agent_side
            .borrow()
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The client's address as last seen by the relay, if any datagram came.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        *lock(&self.shared().client)
    }

    /// Cuts the link: from now on every datagram, both ways, is dropped,
    /// including those already waiting in a delay queue.
    pub fn cut(&self) {
        self.shared().cut.store(true, Ordering::SeqCst);
        tracing::debug!(relay = %self.client_side_addr(), "relay cut");
    }

    /// Heals a [`cut`](Relay::cut): datagrams pass again (subject to the
    /// delay and drop fraction).
    pub fn heal(&self) {
        self.shared().cut.store(false, Ordering::SeqCst);
        tracing::debug!(relay = %self.client_side_addr(), "relay healed");
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.shared().cut.load(Ordering::SeqCst)
    }

    /// Holds every datagram received from now on for `delay` before it is
    /// sent on, in each direction (a one-way delay; the round trip grows by
    /// twice `delay`). Order is kept: a datagram never overtakes an earlier
    /// one, even when the delay shrinks. `Duration::ZERO` ends the delay.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared().delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// The current one-way delay.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.shared().delay_nanos.load(Ordering::SeqCst))
    }

    /// Drops `fraction` (clamped to `0.0..=1.0`; NaN counts as 0) of the
    /// datagrams received from now on, in each direction. Which ones is
    /// decided by a generator seeded with `seed`, one per direction: the
    /// n-th datagram in a direction after this call is dropped or not as a
    /// function of `seed` and n alone, so a test that sends the same
    /// datagrams sees the same pattern. `set_drop(0.0, _)` ends dropping.
    pub fn set_drop(&self, fraction: f64, seed: u64) {
        *lock(&self.shared().drop) = DropPolicy::new(fraction, seed);
    }

    /// Replaces the relay's socket facing the agent with a new one on a new
    /// port, and returns its address: to the agent, the client's address
    /// changed (as in a NAT rebinding or a move from Wi-Fi to cellular).
    /// Datagrams the agent still sends to the old address are lost.
    ///
    /// # Errors
    ///
    /// The new socket could not be made, or the relay was stopped.
    pub fn rebind_agent_side(&self) -> io::Result<SocketAddr> {
        if self.owner.stopped.load(Ordering::SeqCst) {
            return Err(io::Error::other("the relay was stopped"));
        }
        let socket = agent_socket(&self.owner.runtime, self.owner.agent_addr)?;
        let addr = socket.local_addr()?;
        let old = self.owner.agent_side.send_replace(Arc::new(socket));
        tracing::debug!(
            old = ?old.local_addr().ok(),
            new = %addr,
            "relay moved its agent side"
        );
        Ok(addr)
    }

    /// The datagrams counted so far in each direction.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            to_agent: self.shared().to_agent.snapshot(),
            to_client: self.shared().to_client.snapshot(),
        }
    }

    /// Stops the relay: its tasks end and its sockets close. Datagrams
    /// waiting in the delay queues are discarded. Idempotent; dropping the
    /// last clone of the relay does the same.
    pub fn stop(&self) {
        self.owner.stopped.store(true, Ordering::SeqCst);
        for task in &self.owner.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("client_side", &self.client_side_addr())
            .field("agent", &self.agent_addr())
            .field("cut", &self.is_cut())
            .field("delay", &self.delay())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Shared {
    /// Whether a datagram just received going `to_agent` (or to the client)
    /// passes the cut and the drop fraction.
    fn admits(&self, to_agent: bool) -> bool {
        // Draw from the generator even when cut, so that the pattern
        // depends on the datagram's rank alone.
        let dropped = lock(&self.drop).drops(to_agent);
        !dropped && !self.cut.load(Ordering::SeqCst)
    }

    fn due(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.delay_nanos.load(Ordering::SeqCst))
    }
}

/// Puts a datagram that passed in the direction's queue (or counts it
/// dropped if the queue is full).
fn enqueue(shared: &Shared, to_agent: bool, queue: &mpsc::Sender<Queued>, bytes: &[u8]) {
    let counters = if to_agent {
        &shared.to_agent
    } else {
        &shared.to_client
    };
    counters.received.fetch_add(1, Ordering::SeqCst);
    if !shared.admits(to_agent) {
        counters.drop_one();
        return;
    }
    let queued = Queued {
        due: shared.due(),
        bytes: bytes.to_vec(),
    };
    if queue.try_send(queued).is_err() {
        counters.drop_one();
    }
}

/// Reads the client's datagrams, learns (and follows) its address, and
/// queues them for the agent. Ends when the relay stops.
async fn receive_from_client(
    shared: Arc<Shared>,
    front: Arc<UdpSocket>,
    queue: mpsc::Sender<Queued>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match front.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) if transient(&e) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "relay: receiving from the client failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        {
            let mut client = lock(&shared.client);
            if *client != Some(from) {
                tracing::debug!(old = ?*client, new = %from, "relay: client address");
                *client = Some(from);
            }
        }
        enqueue(&shared, true, &queue, &buf[..n]);
    }
}

/// Reads the agent's datagrams on the current agent-side socket (switching
/// when it is replaced) and queues them for the client. Ends when the relay
/// stops.
async fn receive_from_agent(
    shared: Arc<Shared>,
    mut agent_side: watch::Receiver<Arc<UdpSocket>>,
    queue: mpsc::Sender<Queued>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut socket = agent_side.borrow_and_update().clone();
    loop {
        tokio::select! {
            changed = agent_side.changed() => {
                if changed.is_err() {
                    return; // the relay is gone
                }
                socket = agent_side.borrow_and_update().clone();
            }
            r = socket.recv(&mut buf) => match r {
                Ok(n) => enqueue(&shared, false, &queue, &buf[..n]),
                Err(e) if transient(&e) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "relay: receiving from the agent failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Sends queued datagrams to the agent once due, on the current agent-side
/// socket. Ends when the relay stops.
async fn send_to_agent(
    shared: Arc<Shared>,
    agent_side: watch::Receiver<Arc<UdpSocket>>,
    mut queue: mpsc::Receiver<Queued>,
) {
    while let Some(q) = queue.recv().await {
        tokio::time::sleep_until(q.due).await;
        if shared.cut.load(Ordering::SeqCst) {
            shared.to_agent.drop_one();
            continue;
        }
        let socket = agent_side.borrow().clone();
        match socket.send(&q.bytes).await {
            Ok(_) => shared.to_agent.forwarded.fetch_add(1, Ordering::SeqCst),
            Err(_) => shared.to_agent.dropped.fetch_add(1, Ordering::SeqCst),
        };
    }
}

/// Sends queued datagrams to the client's current address once due. Ends
/// when the relay stops.
async fn send_to_client(
    shared: Arc<Shared>,
    front: Arc<UdpSocket>,
    mut queue: mpsc::Receiver<Queued>,
) {
    while let Some(q) = queue.recv().await {
        tokio::time::sleep_until(q.due).await;
        let client = *lock(&shared.client);
        let Some(client) = client.filter(|_| !shared.cut.load(Ordering::SeqCst)) else {
            shared.to_client.drop_one();
            continue;
        };
        match front.send_to(&q.bytes, client).await {
            Ok(_) => shared.to_client.forwarded.fetch_add(1, Ordering::SeqCst),
            Err(_) => shared.to_client.dropped.fetch_add(1, Ordering::SeqCst),
        };
    }
}
