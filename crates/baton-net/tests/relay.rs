//! Tests of the fault-injection relay on loopback: plain UDP through it
//! (cut, heal, delay, drop fraction, counters, address changes, stop), then
//! real baton-net connections through it (time-outs on a cut, reconnection
//! after a heal, QUIC migration when the relay moves its agent side).
//! Every wait is bounded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_net::relay::{FlowStats, RelayStats};
use baton_net::{
    Agent, AuthorizedClients, Client, ClientPolicy, Conn, Identity, NetConfig, NetError, Relay,
    Role,
};
use baton_proto::message::Ack;
use baton_proto::{Channel, Digest, Message, Point, SessionId, StateRef};
use tokio::net::UdpSocket;
use tokio::time::timeout;

mod common;
use common::{bounded, local, until};

// ---------------------------------------------------------------- plain UDP

/// What a fake agent saw: each datagram and the address it came from.
type Seen = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

/// A UDP agent that records every datagram and, if `echo`, sends it back.
async fn fake_agent(echo: bool) -> (SocketAddr, Seen) {
    let socket = UdpSocket::bind(local()).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        // Ends with the test's runtime.
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            record.lock().unwrap().push((buf[..n].to_vec(), from));
            if echo {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        }
    });
    (addr, seen)
}

async fn client_socket(relay: &Relay) -> UdpSocket {
    let socket = UdpSocket::bind(local()).await.unwrap();
    socket.connect(relay.client_side_addr()).await.unwrap();
    socket
}

async fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = bounded("udp recv", socket.recv(&mut buf)).await.unwrap();
    buf.truncate(n);
    buf
}

/// Asserts that nothing arrives on `socket` for a while.
async fn silent(socket: &UdpSocket, what: &str) {
    let mut buf = vec![0u8; 65536];
    if let Ok(r) = timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
        panic!("{what}: received {r:?}");
    }
}

fn flow(received: u64, forwarded: u64, dropped: u64) -> FlowStats {
    FlowStats {
        received,
        forwarded,
        dropped,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_passes_stops_on_a_cut_and_passes_again_after_heal() {
    let (agent, seen) = fake_agent(true).await;
    let relay = Relay::start(agent).unwrap();
    assert_eq!(relay.agent_addr(), agent);
    assert!(relay.client_side_addr().ip().is_loopback());
    let sock = client_socket(&relay).await;

    sock.send(b"one").await.unwrap();
    assert_eq!(recv(&sock).await, b"one");
    assert_eq!(relay.client_addr(), Some(sock.local_addr().unwrap()));
    assert_eq!(seen.lock().unwrap()[0].1, relay.agent_side_addr());

    relay.cut();
    assert!(relay.is_cut());
    sock.send(b"two").await.unwrap();
    silent(&sock, "through a cut link").await;
    assert_eq!(seen.lock().unwrap().len(), 1, "the agent got a datagram");

    relay.heal();
    assert!(!relay.is_cut());
    sock.send(b"three").await.unwrap();
    assert_eq!(recv(&sock).await, b"three");

    let got: Vec<Vec<u8>> = seen.lock().unwrap().iter().map(|d| d.0.clone()).collect();
    assert_eq!(got, vec![b"one".to_vec(), b"three".to_vec()]);
    until("counters settle", || relay.stats().to_client.received == 2).await;
    assert_eq!(
        relay.stats(),
        RelayStats {
            to_agent: flow(3, 2, 1),
            to_client: flow(2, 2, 0),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_also_drops_what_waits_in_the_delay_queue() {
    let (agent, seen) = fake_agent(true).await;
    let relay = Relay::start(agent).unwrap();
    let sock = client_socket(&relay).await;
    relay.set_delay(Duration::from_millis(300));
    sock.send(b"late").await.unwrap();
    until("received", || relay.stats().to_agent.received == 1).await;
    relay.cut();
    silent(&sock, "a queued datagram after the cut").await;
    until("dropped", || relay.stats().to_agent.dropped == 1).await;
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(relay.stats().to_agent, flow(1, 0, 1));
}

/// Sends `n` numbered datagrams through `relay` to a recording agent, in
/// small paced batches (so the kernel's socket buffers never overflow),
/// and returns the numbers the agent received, in arrival order.
async fn send_numbered(relay: &Relay, seen: &Seen, n: u32) -> Vec<u32> {
    let sock = client_socket(relay).await;
    let before = relay.stats().to_agent;
    let already = seen.lock().unwrap().len();
    for batch in (0..n).collect::<Vec<_>>().chunks(20) {
        for i in batch {
            sock.send(&i.to_be_bytes()).await.unwrap();
        }
        let sent = u64::from(batch[batch.len() - 1] + 1);
        until("the relay settles", || {
            let s = relay.stats().to_agent;
            s.received - before.received == sent && s.in_flight() == 0
        })
        .await;
        let forwarded = (relay.stats().to_agent.forwarded - before.forwarded) as usize;
        until("the agent receives what was forwarded", || {
            seen.lock().unwrap().len() - already == forwarded
        })
        .await;
    }
    seen.lock().unwrap()[already..]
        .iter()
        .map(|(bytes, _)| u32::from_be_bytes(bytes[..4].try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_fraction_is_about_right_and_the_seed_fixes_the_pattern() {
    let (agent, seen) = fake_agent(false).await;
    let relay = Relay::start(agent).unwrap();
    let n = 1000;

    relay.set_drop(0.5, 42);
    let first = send_numbered(&relay, &seen, n).await;
    let s = relay.stats().to_agent;
    assert_eq!(s.received, u64::from(n));
    assert_eq!(s.received, s.forwarded + s.dropped, "{s:?}");
    assert_eq!(s.forwarded, first.len() as u64);
    assert!(
        (400..=600).contains(&first.len()),
        "{} of {n} passed at a drop fraction of 0.5",
        first.len()
    );
    assert!(first.windows(2).all(|w| w[0] < w[1]), "order changed");

    // The same seed again: the same datagrams pass.
    relay.set_drop(0.5, 42);
    let again = send_numbered(&relay, &seen, n).await;
    assert_eq!(first, again, "the same seed gave another pattern");

    // Another seed: another pattern.
    relay.set_drop(0.5, 43);
    let other = send_numbered(&relay, &seen, n).await;
    assert_ne!(first, other);

    // Fraction 0 passes everything, fraction 1 nothing.
    relay.set_drop(0.0, 42);
    assert_eq!(send_numbered(&relay, &seen, 100).await.len(), 100);
    relay.set_drop(1.0, 42);
    assert!(send_numbered(&relay, &seen, 100).await.is_empty());

    let s = relay.stats().to_agent;
    assert_eq!(s.received, u64::from(3 * n + 200));
    assert_eq!(s.received, s.forwarded + s.dropped);
    assert_eq!(s.forwarded, seen.lock().unwrap().len() as u64);
    assert_eq!(relay.stats().to_client, FlowStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_each_datagram_and_keeps_the_order() {
    let (agent, _seen) = fake_agent(true).await;
    let relay = Relay::start(agent).unwrap();
    let sock = client_socket(&relay).await;
    let delay = Duration::from_millis(100);
    relay.set_delay(delay);
    assert_eq!(relay.delay(), delay);

    let start = Instant::now();
    sock.send(b"ping").await.unwrap();
    assert_eq!(recv(&sock).await, b"ping");
    let rtt = start.elapsed();
    assert!(
        rtt >= 2 * delay,
        "round trip {rtt:?} with a one-way {delay:?}"
    );

    // A burst keeps its order, also when the delay shrinks mid-burst.
    for i in 0u8..10 {
        if i == 5 {
            relay.set_delay(Duration::ZERO);
        }
        sock.send(&[i]).await.unwrap();
    }
    for i in 0u8..10 {
        assert_eq!(recv(&sock).await, [i]);
    }
    until("counters settle", || {
        relay.stats().to_client.forwarded == 11
    })
    .await;
    assert_eq!(
        relay.stats(),
        RelayStats {
            to_agent: flow(11, 11, 0),
            to_client: flow(11, 11, 0),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_follows_the_client_and_can_move_its_agent_side() {
    let (agent, seen) = fake_agent(true).await;
    let relay = Relay::start(agent).unwrap();
    let first = client_socket(&relay).await;
    first.send(b"a").await.unwrap();
    assert_eq!(recv(&first).await, b"a");
    let old_side = relay.agent_side_addr();

    // The agent side moves: the agent sees a new source, answers reach
    // the client.
    let new_side = relay.rebind_agent_side().unwrap();
    assert_ne!(new_side, old_side);
    assert_eq!(relay.agent_side_addr(), new_side);
    first.send(b"b").await.unwrap();
    assert_eq!(recv(&first).await, b"b");
    assert_eq!(seen.lock().unwrap()[1].1, new_side);

    // The client moves: answers follow it.
    let second = client_socket(&relay).await;
    second.send(b"c").await.unwrap();
    assert_eq!(recv(&second).await, b"c");
    assert_eq!(relay.client_addr(), Some(second.local_addr().unwrap()));
    silent(&first, "the old client address").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relay_forwards_nothing() {
    let (agent, seen) = fake_agent(true).await;
    let relay = Relay::start(agent).unwrap();
    let sock = client_socket(&relay).await;
    sock.send(b"a").await.unwrap();
    assert_eq!(recv(&sock).await, b"a");
    let clone = relay.clone();
    clone.stop();
    clone.stop(); // idempotent
    assert!(relay.rebind_agent_side().is_err());
    // A closed port may answer with an ICMP error; either way no echo.
    let _ = sock.send(b"b").await;
    let mut buf = [0u8; 16];
    if let Ok(Ok(n)) = timeout(Duration::from_millis(300), sock.recv(&mut buf)).await {
        panic!("received {:?} from a stopped relay", &buf[..n]);
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------- baton-net through the relay

fn ack(p: u64) -> Message {
    Message::Ack(Ack {
        session: SessionId(1),
        durable: Some(StateRef::new(Point(p), Digest([p as u8; 32]))),
    })
}

struct Setup {
    agent: Agent,
    agent_id: Identity,
    client: Client,
    relay: Relay,
}

fn setup(config: NetConfig) -> Setup {
    let agent_id = Identity::generate(Role::Agent).unwrap();
    let client_id = Identity::generate(Role::Client).unwrap();
    let mut list = AuthorizedClients::default();
    list.insert(client_id.fingerprint());
    let agent = Agent::bind(local(), &agent_id, ClientPolicy::Authorized(list), config).unwrap();
    let relay = Relay::start(agent.local_addr().unwrap()).unwrap();
    let client = Client::bind(local(), client_id, config).unwrap();
    Setup {
        agent,
        agent_id,
        client,
        relay,
    }
}

/// Connects the client to the agent through the relay.
async fn connect(s: &Setup) -> (Conn, Conn) {
    let (c, a) = bounded("connect via relay", async {
        tokio::join!(
            s.client
                .connect(s.relay.client_side_addr(), s.agent_id.fingerprint()),
            async {
                bounded("accept", s.agent.accept())
                    .await
                    .expect("agent open")
                    .establish()
                    .await
            }
        )
    })
    .await;
    (c.unwrap(), a.unwrap())
}

/// One message each way.
async fn round_trip(c: &Conn, a: &Conn, p: u64) {
    c.send(&ack(p)).await.unwrap();
    assert_eq!(
        bounded("agent recv", a.recv()).await.unwrap(),
        (Channel::Control, ack(p))
    );
    a.send(&ack(p + 1)).await.unwrap();
    assert_eq!(
        bounded("client recv", c.recv()).await.unwrap(),
        (Channel::Control, ack(p + 1))
    );
}

fn timed_out(err: &NetError) -> bool {
    matches!(
        err,
        NetError::ConnectionLost(quinn::ConnectionError::TimedOut)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_cut_times_out_both_sides_and_a_new_connection_works_after_heal() {
    let disconnect_after = Duration::from_millis(500);
    let s = setup(NetConfig::with_disconnect_after(disconnect_after));
    let (c, a) = connect(&s).await;
    round_trip(&c, &a, 1).await;
    assert_eq!(a.remote_address(), s.relay.agent_side_addr());

    s.relay.cut();
    let cut_at = Instant::now();
    let (ce, ae) = bounded("both sides notice", async {
        tokio::join!(c.recv(), a.recv())
    })
    .await;
    let (ce, ae) = (ce.unwrap_err(), ae.unwrap_err());
    assert!(timed_out(&ce), "client: {ce}");
    assert!(timed_out(&ae), "agent: {ae}");
    eprintln!("both sides noticed the cut after {:?}", cut_at.elapsed());
    let dropped = s.relay.stats();
    assert!(
        dropped.to_agent.dropped + dropped.to_client.dropped > 0,
        "{dropped:?}"
    );

    s.relay.heal();
    let (c2, a2) = connect(&s).await;
    for p in (10..20).step_by(2) {
        round_trip(&c2, &a2, p).await;
    }
    let stats = s.relay.stats();
    assert!(stats.to_agent.forwarded > 0 && stats.to_client.forwarded > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_survives_the_relay_moving_its_agent_side() {
    let s = setup(NetConfig::with_disconnect_after(Duration::from_secs(5)));
    let (c, a) = connect(&s).await;
    round_trip(&c, &a, 1).await;
    let before = a.remote_address();
    assert_eq!(before, s.relay.agent_side_addr());

    let after = s.relay.rebind_agent_side().unwrap();
    assert_ne!(after, before);
    for p in (10..30).step_by(2) {
        round_trip(&c, &a, p).await;
    }
    assert_eq!(
        a.remote_address(),
        after,
        "the agent did not follow the new address"
    );
    assert!(a.quinn().close_reason().is_none());
    assert!(c.quinn().close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_through_a_delaying_lossy_relay() {
    let s = setup(NetConfig::with_disconnect_after(Duration::from_secs(5)));
    let (c, a) = connect(&s).await;
    s.relay.set_delay(Duration::from_millis(20));
    s.relay.set_drop(0.1, 7);
    for p in (100..140).step_by(2) {
        round_trip(&c, &a, p).await;
    }
    assert!(c.rtt() >= Duration::from_millis(20), "rtt {:?}", c.rtt());
}
