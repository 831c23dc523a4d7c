//! QUIC endpoints: the agent's listener and the client's connector.
//!
//! Owns the quinn configuration (transport tuning from
//! [`NetConfig::disconnect_after`], stream bounds), each endpoint's store of
//! partial bulk transfers (made here, kept by `bulk`, shared by the
//! endpoint's connections) and connection setup: the
//! handshake, the client opening the control stream right after it (both
//! sides exchange a stream header on it before a [`Conn`] is handed out),
//! and turning handshake failures into clear errors
//! ([`NetError::AgentFingerprintMismatch`], [`NetError::ClientRefused`]).
//! This module must not frame or route messages (`conn`, `frame`) or decide
//! trust (`tls`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::Channel;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::bulk::{PartialStats, Partials, ResumeLimits};
use crate::conn::Conn;
use crate::error::NetError;
use crate::frame::{self, FrameLimits, StreamKind};
use crate::identity::{Fingerprint, Identity};
use crate::tls::{self, ClientPolicy, SERVER_NAME};

/// Transport settings shared by agents and clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Silence after which a connection counts as lost: the QUIC idle
    /// timeout. Keep-alives are sent every third of it, so a healthy but
    /// quiet link never times out. The effective timeout is the smaller of
    /// the two sides' values.
    pub disconnect_after: Duration,
    /// Most bidirectional streams the peer may have open at once: the
    /// control stream plus resumable bulk transfers in flight. At least 2.
    pub max_concurrent_bidi_streams: u32,
    /// Most unidirectional streams (small bulk messages plus the output
    /// stream) the peer may have open at once.
    pub max_concurrent_uni_streams: u32,
    /// Frame size limits per channel.
    pub limits: FrameLimits,
    /// Bounds on the partial bulk transfers kept for resumption.
    pub resume: ResumeLimits,
}

impl Default for NetConfig {
    /// 5 s disconnect-after (DESIGN §12's default is the binary's choice),
    /// 17 bidirectional (control and 16 bulk) and 16 unidirectional
    /// streams, default frame limits and resume bounds.
    fn default() -> NetConfig {
        NetConfig {
            disconnect_after: Duration::from_secs(5),
            max_concurrent_bidi_streams: 17,
            max_concurrent_uni_streams: 16,
            limits: FrameLimits::default(),
            resume: ResumeLimits::default(),
        }
    }
}

impl NetConfig {
    /// A default configuration with this `disconnect_after`.
    pub fn with_disconnect_after(disconnect_after: Duration) -> NetConfig {
        NetConfig {
            disconnect_after,
            ..NetConfig::default()
        }
    }

    /// The quinn transport configuration these settings describe.
    ///
    /// # Errors
    ///
    /// [`NetError::Config`] if `disconnect_after` is zero or too large for
    /// QUIC, a stream bound is too small, a frame limit is out of range, or
    /// `resume.max_per_peer` is zero.
    pub fn transport(&self) -> Result<TransportConfig, NetError> {
        self.limits.check()?;
        if self.disconnect_after < Duration::from_millis(3) {
            return Err(NetError::Config(format!(
                "disconnect-after {:?} is too short (at least 3 ms)",
                self.disconnect_after
            )));
        }
        if self.max_concurrent_bidi_streams < 2 || self.max_concurrent_uni_streams == 0 {
            // One bidirectional stream is the control stream; without a
            // second, a resumable bulk send would wait forever.
            return Err(NetError::Config(
                "stream bounds must be at least 2 bidirectional and 1 unidirectional".to_owned(),
            ));
        }
        if self.resume.max_per_peer == 0 {
            return Err(NetError::Config(
                "resume.max_per_peer must be at least 1".to_owned(),
            ));
        }
        let idle = IdleTimeout::try_from(self.disconnect_after).map_err(|_| {
            NetError::Config(format!(
                "disconnect-after {:?} is too long for QUIC",
                self.disconnect_after
            ))
        })?;
        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.disconnect_after / 3))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams));
        Ok(transport)
    }
}

/// The QUIC/TLS error code of a TLS alert.
fn alert_code(alert: rustls::AlertDescription) -> quinn::TransportErrorCode {
    quinn::TransportErrorCode::crypto(u8::from(alert))
}

/// True if the error is the agent refusing our certificate.
fn is_refusal(err: &quinn::ConnectionError) -> bool {
    let code = match err {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(e) => e.code,
        _ => return false,
    };
    [
        rustls::AlertDescription::AccessDenied,
        rustls::AlertDescription::CertificateRequired,
        rustls::AlertDescription::BadCertificate,
        rustls::AlertDescription::CertificateUnknown,
    ]
    .into_iter()
    .any(|alert| code == alert_code(alert))
}

/// An agent's listening endpoint.
#[derive(Debug)]
pub struct Agent {
    endpoint: quinn::Endpoint,
    fingerprint: Fingerprint,
    config: NetConfig,
    partials: Arc<Partials>,
}

impl Agent {
    /// Listens on `addr` (port 0: any free port) as `identity`, admitting
    /// clients by `policy`.
    ///
    /// # Errors
    ///
    /// [`NetError::Config`] or [`NetError::Tls`] for bad settings;
    /// [`NetError::Bind`] if the socket cannot be bound.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        policy: ClientPolicy,
        config: NetConfig,
    ) -> Result<Agent, NetError> {
        let tls = tls::server_config(identity, policy)?;
        let crypto = QuicServerConfig::try_from(tls)
            .map_err(|e| NetError::Config(format!("TLS for QUIC: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(config.transport()?));
        // Clients keep their session when their address changes.
        server.migration(true);
        let endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|source| NetError::Bind { addr, source })?;
        let partials = Partials::new(config.resume);
        Partials::spawn_sweeper(&partials);
        Ok(Agent {
            endpoint,
            fingerprint: identity.fingerprint(),
            config,
            partials,
        })
    }

    /// The address the agent listens on.
    ///
    /// # Errors
    ///
    /// [`NetError::Bind`] if the socket cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })
    }

    /// The agent's fingerprint, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Waits for the next incoming connection attempt; `None` once the
    /// agent is closed. Call [`Pending::establish`] on it, in its own task
    /// so that a slow client does not hold up the others.
    pub async fn accept(&self) -> Option<Pending> {
        let incoming = self.endpoint.accept().await?;
        Some(Pending {
            incoming,
            config: self.config,
            partials: self.partials.clone(),
        })
    }

    /// What the agent holds of partial bulk transfers from its clients
    /// (kept across connections for resumption).
    pub fn partials(&self) -> PartialStats {
        self.partials.stats()
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint.close(
            VarInt::from_u32(crate::conn::CLOSE_NORMAL),
            b"agent closing",
        );
    }
}

/// A connection attempt the agent has not completed yet.
#[derive(Debug)]
pub struct Pending {
    incoming: quinn::Incoming,
    config: NetConfig,
    partials: Arc<Partials>,
}

impl Pending {
    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Completes the handshake (the client must be admitted by the policy)
    /// and waits, at most `disconnect_after`, for the client to open the
    /// control stream.
    ///
    /// # Errors
    ///
    /// [`NetError::Handshake`] if the handshake fails (including a refused
    /// client, which the client is told with an `access_denied` alert);
    /// [`NetError::SetupTimeout`] or a peer violation if the control stream
    /// does not come or is malformed (the connection is then closed).
    pub async fn establish(self) -> Result<Conn, NetError> {
        let addr = self.incoming.remote_address();
        let limits = self.config.limits;
        let wait = self.config.disconnect_after;
        let connection = self
            .incoming
            .await
            .map_err(|source| NetError::Handshake { addr, source })?;
        let peer = connection
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|certs| certs.first().map(|c| Fingerprint::of_der(c)))
            .ok_or_else(|| NetError::Protocol("the client presented no certificate".into()))?;
        let setup = async {
            let (mut send, mut recv) = connection
                .accept_bi()
                .await
                .map_err(NetError::ConnectionLost)?;
            let kind = frame::read_header(&mut recv, Channel::Control).await?;
            if kind != StreamKind::Control {
                return Err(NetError::Protocol(format!(
                    "the first stream is a {kind:?} stream, expected the control stream"
                )));
            }
            frame::write_header(&mut send, StreamKind::Control).await?;
            Ok((send, recv))
        };
        let result = match tokio::time::timeout(wait, setup).await {
            Ok(result) => result,
            Err(_) => Err(NetError::SetupTimeout {
                addr,
                waited_ms: wait.as_millis(),
            }),
        };
        match result {
            Ok((send, recv)) => {
                tracing::debug!(client = %peer, %addr, "client connected");
                Ok(Conn::new(
                    connection,
                    peer,
                    limits,
                    (send, recv),
                    self.partials,
                ))
            }
            Err(e) => {
                connection.close(
                    VarInt::from_u32(crate::conn::CLOSE_PROTOCOL_VIOLATION),
                    b"control stream setup failed",
                );
                Err(e)
            }
        }
    }
}

/// A client's endpoint: one UDP socket, any number of connections.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    identity: Identity,
    config: NetConfig,
    partials: Arc<Partials>,
}

impl Client {
    /// Binds a client endpoint on `addr` (usually port 0) as `identity`.
    ///
    /// # Errors
    ///
    /// [`NetError::Config`] for bad settings; [`NetError::Bind`] if the
    /// socket cannot be bound.
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: NetConfig,
    ) -> Result<Client, NetError> {
        config.transport()?;
        let endpoint =
            quinn::Endpoint::client(addr).map_err(|source| NetError::Bind { addr, source })?;
        let partials = Partials::new(config.resume);
        Partials::spawn_sweeper(&partials);
        Ok(Client {
            endpoint,
            identity,
            config,
            partials,
        })
    }

    /// What the client holds of partial bulk transfers from its agents
    /// (kept across connections for resumption).
    pub fn partials(&self) -> PartialStats {
        self.partials.stats()
    }

    /// This client's fingerprint (what the agent must authorize).
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    /// The local address of the client's socket.
    ///
    /// # Errors
    ///
    /// [`NetError::Bind`] if the socket cannot say.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })
    }

    /// Moves the client to a new UDP socket (a new local address). Open
    /// connections migrate: the agent follows the new address.
    ///
    /// # Errors
    ///
    /// [`NetError::Bind`] if the socket cannot be used.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> Result<(), NetError> {
        let addr = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.endpoint
            .rebind(socket)
            .map_err(|source| NetError::Bind { addr, source })
    }

    /// Connects to the agent at `agent`, which must present the certificate
    /// with fingerprint `expected`, opens the control stream and waits for
    /// the agent to answer on it (at most about `disconnect_after` for each
    /// of handshake and setup).
    ///
    /// # Errors
    ///
    /// [`NetError::AgentFingerprintMismatch`] naming both fingerprints;
    /// [`NetError::ClientRefused`] if the agent does not admit this client;
    /// [`NetError::Handshake`] if the agent is unreachable or the handshake
    /// fails otherwise; [`NetError::SetupTimeout`] if the agent does not
    /// answer on the control stream.
    pub async fn connect(
        &self,
        agent: SocketAddr,
        expected: Fingerprint,
    ) -> Result<Conn, NetError> {
        let (tls, seen) = tls::client_config_inner(&self.identity, expected)?;
        let crypto = QuicClientConfig::try_from(tls)
            .map_err(|e| NetError::Config(format!("TLS for QUIC: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(self.config.transport()?));
        let own = self.identity.fingerprint();
        let handshake_error = |source: quinn::ConnectionError| {
            if let Some(presented) = seen.mismatch() {
                NetError::AgentFingerprintMismatch {
                    addr: agent,
                    expected,
                    presented,
                }
            } else if is_refusal(&source) {
                NetError::ClientRefused {
                    addr: agent,
                    fingerprint: own,
                }
            } else {
                NetError::Handshake {
                    addr: agent,
                    source,
                }
            }
        };
        let connecting = self
            .endpoint
            .connect_with(client, agent, SERVER_NAME)
            .map_err(|source| NetError::Connect {
                addr: agent,
                source,
            })?;
        let connection = connecting.await.map_err(handshake_error)?;
        // In TLS 1.3 the client finishes its handshake before the agent has
        // checked the client's certificate; a refusal arrives as a close
        // afterwards. Waiting for the agent's answer on the control stream
        // turns that into an error here instead of a dead connection later.
        let setup = async {
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(NetError::ConnectionLost)?;
            frame::write_header(&mut send, StreamKind::Control).await?;
            let kind = frame::read_header(&mut recv, Channel::Control).await?;
            if kind != StreamKind::Control {
                return Err(NetError::Protocol(format!(
                    "the agent answered with a {kind:?} stream header"
                )));
            }
            Ok((send, recv))
        };
        let wait = self.config.disconnect_after;
        let result = match tokio::time::timeout(wait, setup).await {
            Ok(result) => result,
            Err(_) => Err(NetError::SetupTimeout {
                addr: agent,
                waited_ms: wait.as_millis(),
            }),
        };
        match result {
            Ok((send, recv)) => Ok(Conn::new(
                connection,
                expected,
                self.config.limits,
                (send, recv),
                self.partials.clone(),
            )),
            Err(e) => {
                if let Some(reason) = connection.close_reason() {
                    return Err(handshake_error(reason));
                }
                connection.close(
                    VarInt::from_u32(crate::conn::CLOSE_PROTOCOL_VIOLATION),
                    b"control stream setup failed",
                );
                Err(e)
            }
        }
    }

    /// Closes every connection of this client (the agents are told).
    pub fn close(&self) {
        self.endpoint.close(
            VarInt::from_u32(crate::conn::CLOSE_NORMAL),
            b"client closing",
        );
    }
}
