//! End-to-end tests of resumable bulk transfers on loopback: a transfer cut
//! by a dead link resumes on a new connection from the same client, a
//! cancelled send resumes on the same connection, the store's byte budget
//! turns a resume into a restart, and hostile peers (oversize totals, bytes
//! that do not match their id, stray streams) are closed while the agent
//! serves on. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_net::bulk::{TransferId, RESUMABLE_MIN};
use baton_net::frame::{self, StreamKind};
use baton_net::{
    tls, Agent, AuthorizedClients, BulkStats, Client, ClientPolicy, Conn, Identity, NetConfig,
    NetError, PartialStats, Relay, Role,
};
use baton_proto::message::{Ack, CheckpointMsg};
use baton_proto::{Blob, Channel, Checkpoint, Digest, Message, Point, SessionId, StateRef};

mod common;
use common::{bounded, local, until};

fn checkpoint(len: usize) -> Message {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    Message::Checkpoint(CheckpointMsg {
        session: SessionId(1),
        checkpoint: Checkpoint {
            state: StateRef::new(Point(9), Digest([9; 32])),
            base: None,
            bytes: Blob::from(bytes),
        },
    })
}

fn ack(p: u64) -> Message {
    Message::Ack(Ack {
        session: SessionId(1),
        durable: Some(StateRef::new(Point(p), Digest([p as u8; 32]))),
    })
}

struct Setup {
    agent: Agent,
    agent_id: Identity,
    client_id: Identity,
}

fn setup(config: NetConfig) -> Setup {
    let agent_id = Identity::generate(Role::Agent).unwrap();
    let client_id = Identity::generate(Role::Client).unwrap();
    let mut list = AuthorizedClients::default();
    list.insert(client_id.fingerprint());
    let agent = Agent::bind(local(), &agent_id, ClientPolicy::Authorized(list), config).unwrap();
    Setup {
        agent,
        agent_id,
        client_id,
    }
}

/// Connects `client` to `addr` (the agent or a relay in front of it).
async fn connect(s: &Setup, client: &Client, addr: SocketAddr) -> (Conn, Conn) {
    let (c, a) = bounded("connect", async {
        tokio::join!(client.connect(addr, s.agent_id.fingerprint()), async {
            bounded("accept", s.agent.accept())
                .await
                .expect("agent open")
                .establish()
                .await
        })
    })
    .await;
    (c.unwrap(), a.unwrap())
}

async fn recv_bulk(conn: &Conn) -> Message {
    let (channel, msg) = bounded("bulk recv", conn.recv()).await.unwrap();
    assert_eq!(channel, Channel::Bulk);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_by_a_dead_link_resumes_on_a_new_connection() {
    let disconnect_after = Duration::from_millis(800);
    let cfg = NetConfig::with_disconnect_after(disconnect_after);
    let s = setup(cfg);
    let relay = Relay::start(s.agent.local_addr().unwrap()).unwrap();
    let via = relay.client_side_addr();
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c1, a1) = connect(&s, &client, via).await;

    let msg = checkpoint(32 << 20);
    let total = msg.encode().len() as u64;
    let first = {
        let (conn, msg) = (c1.clone(), msg.clone());
        tokio::spawn(async move { conn.send(&msg).await })
    };
    until("8 MiB arrive", || a1.bulk_stats().received_bytes >= 8 << 20).await;
    relay.cut();
    // Both sides notice the dead link; the agent keeps what arrived.
    let err = bounded("agent notices", a1.recv()).await.unwrap_err();
    assert!(matches!(err, NetError::ConnectionLost(_)), "{err}");
    let _ = bounded("client notices", c1.closed()).await;
    // The first send may have handed everything to QUIC before the cut, or
    // failed with the connection: either way the peer lacks part of it.
    let _ = bounded("first send ends", first).await.unwrap();
    until("the partial is parked", || s.agent.partials().active == 0).await;
    let kept = s.agent.partials();
    let got_first = a1.bulk_stats().received_bytes;
    assert_eq!(kept.transfers, 1, "{kept:?}");
    assert_eq!(kept.bytes, got_first);
    assert!(kept.bytes >= 8 << 20 && kept.bytes < total, "{kept:?}");

    // Same client identity, new connection: only the rest travels.
    relay.heal();
    let (c2, a2) = connect(&s, &client, via).await;
    bounded("resend", c2.send(&msg)).await.unwrap();
    assert_eq!(recv_bulk(&a2).await, msg, "the resumed message differs");
    let sent = c2.bulk_stats();
    assert_eq!(
        sent,
        BulkStats {
            sent_bytes: total - kept.bytes,
            resumed_bytes: kept.bytes,
            received_bytes: 0,
        }
    );
    assert_eq!(a2.bulk_stats().received_bytes, total - kept.bytes);
    assert_eq!(s.agent.partials(), PartialStats::default());
    eprintln!(
        "resumed at {} of {total} bytes; the second connection carried {}",
        kept.bytes, sent.sent_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_send_keeps_its_bytes_and_the_next_send_resumes() {
    let cfg = NetConfig::default();
    let s = setup(cfg);
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c, a) = connect(&s, &client, s.agent.local_addr().unwrap()).await;
    let msg = checkpoint(32 << 20);
    let total = msg.encode().len() as u64;

    let first = {
        let (conn, msg) = (c.clone(), msg.clone());
        tokio::spawn(async move { conn.send(&msg).await })
    };
    until("4 MiB arrive", || a.bulk_stats().received_bytes >= 4 << 20).await;
    first.abort(); // dropping the send future resets the stream
    let _ = first.await;
    until("the reset partial is parked", || {
        let p = s.agent.partials();
        p.transfers == 1 && p.active == 0
    })
    .await;
    let kept = s.agent.partials().bytes;
    assert!(kept >= 4 << 20 && kept < total, "kept {kept}");

    // The connection lives on: control works, and the resend resumes.
    c.send(&ack(1)).await.unwrap();
    assert_eq!(
        bounded("ack", a.recv()).await.unwrap(),
        (Channel::Control, ack(1))
    );
    let before = c.bulk_stats();
    bounded("resend", c.send(&msg)).await.unwrap();
    assert_eq!(recv_bulk(&a).await, msg);
    let after = c.bulk_stats();
    assert_eq!(after.resumed_bytes - before.resumed_bytes, kept);
    assert_eq!(after.sent_bytes - before.sent_bytes, total - kept);
    assert_eq!(s.agent.partials(), PartialStats::default());

    // Bulk goes both ways: the agent's resumable send to the client.
    let back = checkpoint(RESUMABLE_MIN);
    a.send(&back).await.unwrap();
    assert_eq!(recv_bulk(&c).await, back);
    assert_eq!(a.bulk_stats().sent_bytes, back.encode().len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_byte_budget_a_partial_is_dropped_and_the_resend_starts_over() {
    let mut cfg = NetConfig::default();
    cfg.resume.max_bytes = 2 << 20;
    let s = setup(cfg);
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c, a) = connect(&s, &client, s.agent.local_addr().unwrap()).await;
    let msg = checkpoint(16 << 20);
    let total = msg.encode().len() as u64;
    let first = {
        let (conn, msg) = (c.clone(), msg.clone());
        tokio::spawn(async move { conn.send(&msg).await })
    };
    // An active transfer may exceed the budget; once parked it may not.
    until("4 MiB arrive", || a.bulk_stats().received_bytes >= 4 << 20).await;
    first.abort();
    let _ = first.await;
    until("the partial is dropped", || {
        s.agent.partials() == PartialStats::default()
    })
    .await;
    bounded("resend", c.send(&msg)).await.unwrap();
    assert_eq!(recv_bulk(&a).await, msg);
    let stats = c.bulk_stats();
    assert_eq!(stats.resumed_bytes, 0);
    assert!(stats.sent_bytes > total, "{stats:?}");
}

// ---------------------------------------------------------------- hostile peers

/// A raw quinn client that passes TLS, sets up a proper control stream,
/// then opens a bidirectional stream and writes `bytes` on it. Returns the
/// connection once the agent closed it, and the agent's `recv` error.
async fn hostile_bidi(s: &Setup, bytes: Vec<u8>) -> (quinn::Connection, NetError) {
    let tls = tls::client_config(&s.client_id, s.agent_id.fingerprint()).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(NetConfig::default().transport().unwrap()));
    let endpoint = quinn::Endpoint::client(local()).unwrap();
    let addr = s.agent.local_addr().unwrap();
    let (connection, agent_conn) = bounded("hostile connect", async {
        tokio::join!(
            async {
                let connection = endpoint
                    .connect_with(cfg, addr, tls::SERVER_NAME)
                    .unwrap()
                    .await
                    .unwrap();
                let (mut send, mut recv) = connection.open_bi().await.unwrap();
                frame::write_header(&mut send, StreamKind::Control)
                    .await
                    .unwrap();
                frame::read_header(&mut recv, Channel::Control)
                    .await
                    .unwrap();
                let (mut bulk, bulk_answer) = connection.open_bi().await.unwrap();
                // The agent may close before all of it is written.
                let _ = bulk.write_all(&bytes).await;
                let _ = bulk.finish();
                let _closed = connection.closed().await;
                drop((send, recv, bulk, bulk_answer));
                connection
            },
            async {
                bounded("accept", s.agent.accept())
                    .await
                    .expect("agent open")
                    .establish()
                    .await
                    .unwrap()
            }
        )
    })
    .await;
    let err = bounded("agent recv", agent_conn.recv()).await.unwrap_err();
    (connection, err)
}

/// A bulk stream opening: header, transfer id, total.
fn opening(id: TransferId, total: u64) -> Vec<u8> {
    [&[b'b', b'N', 1, 1][..], &id.0[..], &total.to_be_bytes()[..]].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bulk_streams_close_that_connection_and_the_agent_serves_on() {
    let mut cfg = NetConfig::default();
    cfg.limits.bulk = 4 << 20;
    let s = setup(cfg);
    let good = checkpoint(1000).encode();
    let ack_bytes = ack(1).encode();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A total over the bulk limit, refused before anything is held.
        (
            opening(TransferId::of(b"x"), (4 << 20) + 1),
            "exceeds the limit",
        ),
        (opening(TransferId::of(b"x"), u64::MAX), "exceeds the limit"),
        (opening(TransferId::of(b"x"), 0), "zero bytes"),
        // Valid message bytes under another id.
        (
            [
                &opening(TransferId::of(b"not these bytes"), good.len() as u64)[..],
                &good[..],
            ]
            .concat(),
            "do not match their BLAKE3 id",
        ),
        // Matching bytes, but a control message.
        (
            [
                &opening(TransferId::of(&ack_bytes), ack_bytes.len() as u64)[..],
                &ack_bytes[..],
            ]
            .concat(),
            "arrived on the Bulk stream",
        ),
        // A second control stream.
        (vec![b'b', b'N', 1, 0], "claims to be a Control stream"),
    ];
    for (bytes, needle) in cases {
        let (connection, err) = hostile_bidi(&s, bytes).await;
        assert!(
            err.is_peer_violation() && err.to_string().contains(needle),
            "{needle}: {err}"
        );
        match connection.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close)) => assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(baton_net::conn::CLOSE_PROTOCOL_VIOLATION)
            ),
            other => panic!("{needle}: not closed as a violation: {other:?}"),
        }
        let kept = s.agent.partials();
        assert_eq!(kept.bytes, 0, "{needle}: {kept:?}");
    }

    // The agent still serves a well-behaved client, resumable bulk included.
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c, a) = connect(&s, &client, s.agent.local_addr().unwrap()).await;
    let msg = checkpoint(2 << 20);
    c.send(&msg).await.unwrap();
    assert_eq!(recv_bulk(&a).await, msg);
    assert_eq!(c.bulk_stats().resumed_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_an_impossible_offset_is_a_violation() {
    // A raw quinn "agent" that answers every bulk stream with an offset
    // larger than the transfer.
    let agent_id = Identity::generate(Role::Agent).unwrap();
    let client_id = Identity::generate(Role::Client).unwrap();
    let tls = tls::server_config(&agent_id, ClientPolicy::AllowAny).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(NetConfig::default().transport().unwrap()));
    let endpoint = quinn::Endpoint::server(server, local()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let connection = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = connection.accept_bi().await.unwrap();
        frame::read_header(&mut recv, Channel::Control)
            .await
            .unwrap();
        frame::write_header(&mut send, StreamKind::Control)
            .await
            .unwrap();
        let (mut bulk_send, mut bulk_recv) = connection.accept_bi().await.unwrap();
        frame::read_header(&mut bulk_recv, Channel::Bulk)
            .await
            .unwrap();
        let (_, total) = frame::read_bulk_open(&mut bulk_recv, usize::MAX)
            .await
            .unwrap();
        frame::write_resume_offset(&mut bulk_send, total + 1)
            .await
            .unwrap();
        let _ = bulk_send.finish();
        connection.closed().await
    });
    let client = Client::bind(local(), client_id, NetConfig::default()).unwrap();
    let c = bounded("connect", client.connect(addr, agent_id.fingerprint()))
        .await
        .unwrap();
    let err = bounded("send", c.send(&checkpoint(RESUMABLE_MIN)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("claims to hold"), "{err}");
    let err = bounded("recv", c.recv()).await.unwrap_err();
    assert!(err.to_string().contains("claims to hold"), "{err}");
    match bounded("fake agent", fake).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            close.error_code,
            quinn::VarInt::from_u32(baton_net::conn::CLOSE_PROTOCOL_VIOLATION)
        ),
        other => panic!("not closed as a violation: {other:?}"),
    }
}
