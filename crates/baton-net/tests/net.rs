//! End-to-end tests of the transport on loopback: identities, pinned and
//! authorized handshakes, channels, hostile peers and idle timeouts. Every
//! wait is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_net::endpoint::Pending;
use baton_net::{
    tls, Agent, AuthorizedClients, Client, ClientPolicy, Conn, Fingerprint, Identity, KnownAgents,
    NetConfig, NetError, Relay, Role,
};
use baton_proto::message::{Ack, CheckpointMsg, ExecStatus, Heartbeat, OutputMsg, Summary};
use baton_proto::{
    Assignment, Blob, Channel, Checkpoint, Digest, Epoch, Message, Mode, OutputChunk, Point,
    SessionId, StateRef,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// The bound on every single wait in these tests.
const BOUND: Duration = Duration::from_secs(20);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn config() -> NetConfig {
    NetConfig::with_disconnect_after(Duration::from_secs(5))
}

fn heartbeat(seq: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        session: SessionId(1),
        seq,
        echo: None,
        summary: Summary {
            epoch: Epoch(1),
            assignment: Assignment::local(Mode::Sync),
            durable: None,
            reached: None,
            exec: ExecStatus::Idle,
            quiesce: None,
            quiesced: None,
            output: Point(0),
            finished: None,
            has_module: false,
            draining: false,
            step_nanos: 0,
        },
    })
}

fn state(p: u64) -> StateRef {
    StateRef::new(Point(p), Digest([p as u8; 32]))
}

fn checkpoint(bytes: Vec<u8>) -> Message {
    Message::Checkpoint(CheckpointMsg {
        session: SessionId(1),
        checkpoint: Checkpoint {
            state: state(9),
            base: None,
            bytes: Blob::from(bytes),
        },
    })
}

fn ack(p: u64) -> Message {
    Message::Ack(Ack {
        session: SessionId(1),
        durable: Some(state(p)),
    })
}

struct Setup {
    agent: Agent,
    agent_id: Identity,
    client_id: Identity,
}

fn setup(policy_has_client: bool, config: NetConfig) -> Setup {
    let agent_id = Identity::generate(Role::Agent).unwrap();
    let client_id = Identity::generate(Role::Client).unwrap();
    let mut list = AuthorizedClients::default();
    if policy_has_client {
        list.insert(client_id.fingerprint());
    }
    let agent = Agent::bind(local(), &agent_id, ClientPolicy::Authorized(list), config).unwrap();
    Setup {
        agent,
        agent_id,
        client_id,
    }
}

async fn accept(agent: &Agent) -> Pending {
    bounded("agent accept", agent.accept())
        .await
        .expect("agent open")
}

/// Connects `client` while the agent accepts; returns both sides' results.
async fn connect_pair(
    agent: &Agent,
    client: &Client,
    expected: Fingerprint,
) -> (Result<Conn, NetError>, Result<Conn, NetError>) {
    let addr = agent.local_addr().unwrap();
    bounded("connect", async {
        tokio::join!(client.connect(addr, expected), async {
            accept(agent).await.establish().await
        })
    })
    .await
}

// ---------------------------------------------------------------- identity

#[test]
fn identity_is_made_once_then_reloaded_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent");
    let first = Identity::load_or_create(&path, Role::Agent).unwrap();
    let second = Identity::load_or_create(&path, Role::Agent).unwrap();
    assert_eq!(first.fingerprint(), second.fingerprint());
    assert_eq!(first.cert_der(), second.cert_der());
    let mode = std::fs::metadata(path.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "key mode {mode:o}");
    let printed = std::fs::read_to_string(path.join("fingerprint")).unwrap();
    assert_eq!(printed, format!("{}\n", first.fingerprint()));
    assert!(printed.starts_with("sha256:") && printed.trim().len() == 7 + 64);
    // A different directory is a different identity.
    let other = Identity::load_or_create(&dir.path().join("other"), Role::Agent).unwrap();
    assert_ne!(other.fingerprint(), first.fingerprint());
}

#[test]
fn a_damaged_key_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    Identity::load_or_create(dir.path(), Role::Client).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nnope\n",
    )
    .unwrap();
    let err = Identity::load_or_create(dir.path(), Role::Client).unwrap_err();
    assert!(matches!(err, NetError::DamagedIdentity { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("key.pem") && text.contains("damaged"),
        "{text}"
    );

    // A valid key of another identity does not match the certificate.
    let dir2 = tempfile::tempdir().unwrap();
    Identity::generate(Role::Client)
        .unwrap()
        .save(dir2.path())
        .unwrap();
    Identity::generate(Role::Client)
        .unwrap()
        .save(dir.path())
        .unwrap();
    std::fs::copy(dir2.path().join("key.pem"), dir.path().join("key.pem")).unwrap();
    let err = Identity::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");

    // Half an identity is reported, not silently replaced.
    std::fs::remove_file(dir.path().join("cert.pem")).unwrap();
    let err = Identity::load_or_create(dir.path(), Role::Client).unwrap_err();
    assert!(err.to_string().contains("cert.pem"), "{err}");
}

#[test]
fn fingerprints_parse_and_print() {
    let id = Identity::generate(Role::Agent).unwrap();
    let text = id.fingerprint().to_string();
    assert_eq!(text.parse::<Fingerprint>().unwrap(), id.fingerprint());
    assert_eq!(
        text.to_uppercase()
            .replace("SHA256", "sha256")
            .parse::<Fingerprint>()
            .unwrap(),
        id.fingerprint()
    );
    for bad in [
        "",
        "sha256:",
        "md5:00",
        &text[..text.len() - 1],
        &format!("{text}0"),
        &text.replace("sha256:", "sha256:zz")[..71],
    ] {
        let err = bad.parse::<Fingerprint>().unwrap_err();
        assert!(
            err.to_string().contains("invalid fingerprint"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn list_files_parse_and_name_the_bad_line() {
    let a = Identity::generate(Role::Client).unwrap().fingerprint();
    let b = Identity::generate(Role::Client).unwrap().fingerprint();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authorized_clients");
    std::fs::write(&path, format!("# team\n\n{a} alice laptop\n  {b}\n")).unwrap();
    let list = AuthorizedClients::load(&path).unwrap();
    assert!(list.contains(&a) && list.contains(&b) && list.len() == 2);

    std::fs::write(&path, format!("{a}\n# ok\nsha256:1234\n")).unwrap();
    let err = AuthorizedClients::load(&path).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:3:", path.display())),
        "{text}"
    );
    let err = AuthorizedClients::load(&dir.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");

    let known = dir.path().join("known_agents");
    assert_eq!(KnownAgents::load(&known).unwrap(), KnownAgents::default());
    let mut agents = KnownAgents::default();
    agents.insert("127.0.0.1:4000", a);
    agents.insert("agent.example:4000", b);
    agents.save(&known).unwrap();
    let loaded = KnownAgents::load(&known).unwrap();
    assert_eq!(loaded.get("127.0.0.1:4000"), Some(a));
    assert_eq!(loaded.get("agent.example:4000"), Some(b));
    for (text, line, needle) in [
        ("# c\n127.0.0.1:4000\n".to_string(), 2, "found only"),
        (format!("host {a}\n"), 1, "not HOST:PORT"),
        (format!("h:1 {a} extra\n"), 1, "extra words"),
        ("h:1 sha256:00\n".to_string(), 1, "invalid fingerprint"),
        (format!("h:1 {a}\nh:1 {b}\n"), 2, "listed twice"),
    ] {
        let err = KnownAgents::parse(&known, &text).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}:{line}:", known.display())) && msg.contains(needle),
            "{msg}"
        );
    }
}

// ---------------------------------------------------------------- handshake and channels

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_round_trip_and_bulk_do_not_starve_heartbeats() {
    let s = setup(true, config());
    let client = Client::bind(local(), s.client_id.clone(), config()).unwrap();
    let (c, a) = connect_pair(&s.agent, &client, s.agent_id.fingerprint()).await;
    let (client_conn, agent_conn) = (c.unwrap(), a.unwrap());
    assert_eq!(agent_conn.peer_fingerprint(), s.client_id.fingerprint());
    assert_eq!(client_conn.peer_fingerprint(), s.agent_id.fingerprint());

    // The agent: echo heartbeats; on a checkpoint, report how many
    // heartbeats came before it and acknowledge it on control.
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel();
    let agent_side = tokio::spawn(async move {
        let mut heartbeats = 0u64;
        loop {
            let (channel, msg) = match agent_conn.recv().await {
                Ok(m) => m,
                Err(e) => return e,
            };
            match msg {
                Message::Heartbeat(_) => {
                    assert_eq!(channel, Channel::Control);
                    heartbeats += 1;
                    if let Err(e) = agent_conn.send(&msg).await {
                        return e; // the client closed after the ack
                    }
                }
                Message::Checkpoint(ref c) => {
                    assert_eq!(channel, Channel::Bulk);
                    let ok = c
                        .checkpoint
                        .bytes
                        .as_bytes()
                        .iter()
                        .enumerate()
                        .all(|(i, b)| *b == (i % 251) as u8);
                    report_tx
                        .send((heartbeats, c.checkpoint.bytes.len(), ok))
                        .unwrap();
                    agent_conn.send(&ack(9)).await.unwrap();
                }
                Message::Output(_) => {
                    assert_eq!(channel, Channel::Output);
                    agent_conn.send(&msg).await.unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });

    // A control message round-trips, and so does one on the output stream.
    client_conn.send(&heartbeat(0)).await.unwrap();
    let (channel, back) = bounded("echo", client_conn.recv()).await.unwrap();
    assert_eq!((channel, back), (Channel::Control, heartbeat(0)));
    let output = Message::Output(OutputMsg {
        session: SessionId(1),
        chunks: vec![OutputChunk {
            point: Point(1),
            bytes: Blob::from(&b"hello\n"[..]),
        }],
    });
    client_conn.send(&output).await.unwrap();
    let (channel, back) = bounded("output echo", client_conn.recv()).await.unwrap();
    assert_eq!((channel, back), (Channel::Output, output));

    // 64 MiB on a bulk stream while heartbeats ping-pong on control. Every
    // heartbeat below is sent after the bulk send started and the client
    // stops only when the checkpoint is acknowledged, so the heartbeats the
    // agent counted before the checkpoint arrived flowed during the transfer.
    let size = 64 << 20;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let bulk = {
        let conn = client_conn.clone();
        tokio::spawn(async move {
            let msg = checkpoint(payload);
            started_tx.send(()).unwrap();
            conn.send(&msg).await
        })
    };
    bounded("bulk start", started_rx).await.unwrap();
    let mut seq = 1;
    client_conn.send(&heartbeat(seq)).await.unwrap();
    loop {
        let (_, msg) = bounded("heartbeat echo or ack", client_conn.recv())
            .await
            .unwrap();
        match msg {
            Message::Heartbeat(h) => {
                assert_eq!(h.seq, seq);
                seq += 1;
                client_conn.send(&heartbeat(seq)).await.unwrap();
            }
            Message::Ack(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    bounded("bulk send", bulk).await.unwrap().unwrap();
    let (before, len, intact) = bounded("report", report_rx.recv()).await.unwrap();
    assert_eq!(len, size);
    assert!(intact, "checkpoint bytes corrupted");
    // One echo for heartbeat 0 came before the transfer.
    let during = before - 1;
    assert!(
        during >= 3,
        "only {during} heartbeats arrived during the 64 MiB transfer"
    );
    eprintln!("{during} heartbeats round-tripped during the 64 MiB transfer");

    client_conn.close("done");
    let err = bounded("agent sees close", agent_side).await.unwrap();
    assert!(matches!(err, NetError::ConnectionLost(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_agent_fingerprint_names_both() {
    let s = setup(true, config());
    let client = Client::bind(local(), s.client_id.clone(), config()).unwrap();
    let pinned = Identity::generate(Role::Agent).unwrap().fingerprint();
    let addr = s.agent.local_addr().unwrap();
    let (c, a) = bounded("connect", async {
        tokio::join!(client.connect(addr, pinned), async {
            accept(&s.agent).await.establish().await
        })
    })
    .await;
    let err = c.unwrap_err();
    match &err {
        NetError::AgentFingerprintMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(*expected, pinned);
            assert_eq!(*presented, s.agent_id.fingerprint());
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&pinned.to_string()) && text.contains(&s.agent_id.fingerprint().to_string()),
        "{text}"
    );
    assert!(a.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_client_is_refused_and_the_agent_keeps_serving() {
    let s = setup(true, config());
    let stranger =
        Client::bind(local(), Identity::generate(Role::Client).unwrap(), config()).unwrap();
    let (c, a) = connect_pair(&s.agent, &stranger, s.agent_id.fingerprint()).await;
    let err = c.unwrap_err();
    assert!(
        matches!(&err, NetError::ClientRefused { fingerprint, .. } if *fingerprint == stranger.fingerprint()),
        "{err}"
    );
    assert!(err.to_string().contains("refused this client"), "{err}");
    assert!(a.is_err(), "the agent established a refused client");

    let friend = Client::bind(local(), s.client_id.clone(), config()).unwrap();
    let (c, a) = connect_pair(&s.agent, &friend, s.agent_id.fingerprint()).await;
    let (c, a) = (c.unwrap(), a.unwrap());
    c.send(&ack(1)).await.unwrap();
    assert_eq!(
        bounded("recv", a.recv()).await.unwrap(),
        (Channel::Control, ack(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_admits_an_unknown_client() {
    let agent_id = Identity::generate(Role::Agent).unwrap();
    let agent = Agent::bind(local(), &agent_id, ClientPolicy::AllowAny, config()).unwrap();
    let client =
        Client::bind(local(), Identity::generate(Role::Client).unwrap(), config()).unwrap();
    let (c, a) = connect_pair(&agent, &client, agent_id.fingerprint()).await;
    let (c, a) = (c.unwrap(), a.unwrap());
    assert_eq!(a.peer_fingerprint(), client.fingerprint());
    a.send(&ack(2)).await.unwrap();
    assert_eq!(
        bounded("recv", c.recv()).await.unwrap(),
        (Channel::Control, ack(2))
    );
}

// ---------------------------------------------------------------- hostile peers

/// A raw quinn client that passes TLS and then writes `bytes` on a stream
/// of its own making: the control stream (`bidi`) or a unidirectional one.
async fn hostile(s: &Setup, bidi: bool, bytes: Vec<u8>) -> (quinn::Connection, NetError) {
    let tls = tls::client_config(&s.client_id, s.agent_id.fingerprint()).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(config().transport().unwrap()));
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
                // A proper control stream first, so the agent establishes.
                let (mut send, mut recv) = connection.open_bi().await.unwrap();
                baton_net::frame::write_header(&mut send, baton_net::frame::StreamKind::Control)
                    .await
                    .unwrap();
                baton_net::frame::read_header(&mut recv, Channel::Control)
                    .await
                    .unwrap();
                if bidi {
                    send.write_all(&bytes).await.unwrap();
                } else {
                    let mut uni = connection.open_uni().await.unwrap();
                    uni.write_all(&bytes).await.unwrap();
                    let _ = uni.finish();
                }
                // Keep the streams alive until the agent reacts.
                let _closed = connection.closed().await;
                drop((send, recv));
                connection
            },
            async { accept(&s.agent).await.establish().await.unwrap() }
        )
    })
    .await;
    let err = bounded("agent recv", agent_conn.recv()).await.unwrap_err();
    (connection, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_that_connection_and_the_agent_serves_on() {
    let mut cfg = config();
    cfg.limits.bulk = 1 << 20;
    let s = setup(true, cfg);
    let bulk_header = [b'b', b'N', 1, 1];
    let cases: Vec<(bool, Vec<u8>, &str)> = vec![
        (true, u32::MAX.to_be_bytes().to_vec(), "exceeds the limit"),
        (
            true,
            [&8u32.to_be_bytes()[..], b"garbage!"].concat(),
            "Control frame",
        ),
        (
            false,
            [&bulk_header[..], &((2u32 << 20).to_be_bytes())[..]].concat(),
            "exceeds the limit",
        ),
        (false, b"GET / HTTP/1.1\r\n".to_vec(), "protocol violation"),
        (
            false,
            [
                &bulk_header[..],
                &ack(1).encode().len().to_be_bytes()[4..],
                &ack(1).encode()[..],
            ]
            .concat(),
            "arrived on the Bulk stream",
        ),
    ];
    for (bidi, bytes, needle) in cases {
        let (connection, err) = hostile(&s, bidi, bytes).await;
        assert!(
            err.is_peer_violation() && err.to_string().contains(needle),
            "{needle}: {err}"
        );
        match connection.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(close)) => {
                assert_eq!(
                    close.error_code,
                    quinn::VarInt::from_u32(baton_net::conn::CLOSE_PROTOCOL_VIOLATION)
                );
            }
            other => panic!("hostile connection not closed as a violation: {other:?}"),
        }
    }
    // The agent still serves a well-behaved client.
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c, a) = connect_pair(&s.agent, &client, s.agent_id.fingerprint()).await;
    let (c, a) = (c.unwrap(), a.unwrap());
    c.send(&heartbeat(5)).await.unwrap();
    assert_eq!(
        bounded("recv", a.recv()).await.unwrap(),
        (Channel::Control, heartbeat(5))
    );
}

// ---------------------------------------------------------------- idle timeout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_notices_a_vanished_client_after_disconnect_after() {
    let disconnect_after = Duration::from_millis(500);
    let cfg = NetConfig::with_disconnect_after(disconnect_after);
    let s = setup(true, cfg);
    let relay = Relay::start(s.agent.local_addr().unwrap()).unwrap();
    let via = relay.client_side_addr();
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c, a) = bounded("connect via relay", async {
        tokio::join!(client.connect(via, s.agent_id.fingerprint()), async {
            accept(&s.agent).await.establish().await
        })
    })
    .await;
    let (c, a) = (c.unwrap(), a.unwrap());
    c.send(&ack(3)).await.unwrap();
    assert_eq!(
        bounded("recv", a.recv()).await.unwrap(),
        (Channel::Control, ack(3))
    );

    // Quiet but healthy: keep-alives hold the connection past the timeout.
    tokio::time::sleep(disconnect_after * 2).await;
    assert!(a.quinn().close_reason().is_none(), "a quiet link timed out");

    relay.cut();
    let cut_at = Instant::now();
    let err = bounded("agent notices", a.recv()).await.unwrap_err();
    let noticed = cut_at.elapsed();
    assert!(
        matches!(
            err,
            NetError::ConnectionLost(quinn::ConnectionError::TimedOut)
        ),
        "{err}"
    );
    assert!(
        noticed >= disconnect_after / 2,
        "noticed after only {noticed:?}"
    );
    assert!(
        noticed <= disconnect_after * 10,
        "noticed after {noticed:?}"
    );
    eprintln!("agent noticed the vanished client after {noticed:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_is_a_handshake_error_not_a_hang() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind(local()).await.unwrap();
    let cfg = NetConfig::with_disconnect_after(Duration::from_millis(300));
    let client = Client::bind(local(), Identity::generate(Role::Client).unwrap(), cfg).unwrap();
    let pinned = Identity::generate(Role::Agent).unwrap().fingerprint();
    let err = bounded(
        "connect",
        client.connect(silent.local_addr().unwrap(), pinned),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, NetError::Handshake { .. }), "{err}");
    drop(silent);
}

// ---------------------------------------------------------------- migration and local limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_changes_address_keeps_its_connection() {
    let s = setup(true, config());
    let client = Client::bind(local(), s.client_id.clone(), config()).unwrap();
    let (c, a) = connect_pair(&s.agent, &client, s.agent_id.fingerprint()).await;
    let (c, a) = (c.unwrap(), a.unwrap());
    let before = a.remote_address();
    assert_eq!(before, client.local_addr().unwrap());

    client
        .rebind(std::net::UdpSocket::bind(local()).unwrap())
        .unwrap();
    let after = client.local_addr().unwrap();
    assert_ne!(after, before);
    c.send(&ack(4)).await.unwrap();
    assert_eq!(
        bounded("recv after rebind", a.recv()).await.unwrap(),
        (Channel::Control, ack(4))
    );
    a.send(&ack(5)).await.unwrap();
    assert_eq!(
        bounded("reply after rebind", c.recv()).await.unwrap(),
        (Channel::Control, ack(5))
    );
    assert_eq!(
        a.remote_address(),
        after,
        "the agent did not follow the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_is_refused_before_sending() {
    let mut cfg = config();
    cfg.limits.bulk = 1 << 10;
    let s = setup(true, cfg);
    let client = Client::bind(local(), s.client_id.clone(), cfg).unwrap();
    let (c, a) = connect_pair(&s.agent, &client, s.agent_id.fingerprint()).await;
    let (c, a) = (c.unwrap(), a.unwrap());
    let err = c.send(&checkpoint(vec![0; 2 << 10])).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::FrameTooLarge {
                channel: Channel::Bulk,
                ..
            }
        ),
        "{err}"
    );
    // The connection is still fine.
    c.send(&checkpoint(vec![7; 100])).await.unwrap();
    assert_eq!(
        bounded("recv", a.recv()).await.unwrap(),
        (Channel::Bulk, checkpoint(vec![7; 100]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_bulk_send_is_dropped_and_the_connection_lives_on() {
    let s = setup(true, config());
    let client = Client::bind(local(), s.client_id.clone(), config()).unwrap();
    let (c, a) = connect_pair(&s.agent, &client, s.agent_id.fingerprint()).await;
    let (c, a) = (c.unwrap(), a.unwrap());
    let big = checkpoint(vec![1; 64 << 20]);
    // 64 MiB cannot be handed to QUIC in 10 ms (the send window is far
    // smaller), so this send is cancelled mid-message.
    let cancelled = timeout(Duration::from_millis(10), c.send(&big)).await;
    assert!(cancelled.is_err(), "the 64 MiB send finished in 10 ms");
    c.send(&ack(6)).await.unwrap();
    assert_eq!(
        bounded("recv", a.recv()).await.unwrap(),
        (Channel::Control, ack(6))
    );
    // A later bulk message still arrives, and nothing of the cancelled one.
    c.send(&checkpoint(vec![2; 1000])).await.unwrap();
    c.send(&ack(7)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(bounded("recv", a.recv()).await.unwrap());
    }
    got.sort_by_key(|(channel, _)| *channel == Channel::Bulk);
    assert_eq!(
        got,
        vec![
            (Channel::Control, ack(7)),
            (Channel::Bulk, checkpoint(vec![2; 1000]))
        ]
    );
}
