//! The one error type of the transport, [`NetError`].
//!
//! Owns the wording of every transport failure: each message says what
//! happened and, where it helps, what to do. This module must not decide
//! anything (retries, exit codes): the binary does that.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use baton_proto::{Channel, DecodeError};
use thiserror::Error;

use crate::identity::Fingerprint;

/// Everything that can go wrong in the transport.
#[derive(Debug, Error)]
pub enum NetError {
    /// A file or directory of an identity or a list could not be read or
    /// written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An identity's key or certificate file is present but unusable.
    #[error("{path}: damaged identity file ({reason}); remove the identity directory's key.pem and cert.pem to make a new identity (its fingerprint will change)")]
    DamagedIdentity {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key pair or certificate could not be generated.
    #[error("could not generate an identity: {0}")]
    Generate(String),
    /// A line of a known-agents or authorized-clients file is invalid.
    #[error("{path}:{line}: {reason}")]
    ListLine {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A text is not a fingerprint of the form `sha256:<64 hex digits>`.
    #[error("invalid fingerprint {text:?}: expected sha256: followed by 64 hex digits")]
    BadFingerprint {
        /// The text that was given.
        text: String,
    },
    /// A TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A transport setting is out of range.
    #[error("invalid transport setting: {0}")]
    Config(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// The connection attempt could not even start.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The agent's address.
        addr: SocketAddr,
        /// The underlying error.
        source: quinn::ConnectError,
    },
    /// The agent's certificate does not have the pinned fingerprint.
    #[error("agent fingerprint mismatch: expected {expected}, the agent at {addr} presented {presented}; check --agent-fingerprint (the agent prints its fingerprint when it starts)")]
    AgentFingerprintMismatch {
        /// The agent's address.
        addr: SocketAddr,
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The fingerprint the agent presented.
        presented: Fingerprint,
    },
    /// The agent does not admit this client's certificate.
    #[error("the agent at {addr} refused this client (fingerprint {fingerprint} is not authorized); add it to the agent's authorized-clients file")]
    ClientRefused {
        /// The agent's address.
        addr: SocketAddr,
        /// This client's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The QUIC or TLS handshake failed for another reason (unreachable,
    /// timed out, incompatible peer).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// The underlying error.
        source: quinn::ConnectionError,
    },
    /// The peer did not open or answer the control stream in time.
    #[error("the peer at {addr} did not set up the control stream within {waited_ms} ms")]
    SetupTimeout {
        /// The peer's address.
        addr: SocketAddr,
        /// How long we waited, in milliseconds.
        waited_ms: u128,
    },
    /// The connection is gone (closed by either side, timed out, reset).
    #[error("connection lost: {0}")]
    ConnectionLost(quinn::ConnectionError),
    /// A stream failed while reading or writing.
    #[error("{channel:?} stream: {source}")]
    Stream {
        /// The stream's channel.
        channel: Channel,
        /// The underlying error.
        source: io::Error,
    },
    /// A frame's length prefix is larger than the channel's limit. Checked
    /// before anything is allocated.
    #[error("{channel:?} frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The stream's channel.
        channel: Channel,
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame could not be decoded as a message.
    #[error("{channel:?} frame: {source}")]
    Decode {
        /// The stream's channel.
        channel: Channel,
        /// The decode failure.
        source: DecodeError,
    },
    /// A message arrived on a stream of another channel than its own.
    #[error("{kind} message arrived on the {got:?} stream (it belongs on {expected:?})")]
    WrongChannel {
        /// The message's kind.
        kind: &'static str,
        /// The channel it belongs on.
        expected: Channel,
        /// The channel it arrived on.
        got: Channel,
    },
    /// The peer broke the stream layout (bad stream header, unexpected
    /// stream).
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl NetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> NetError {
        NetError::Io {
            path: path.into(),
            source,
        }
    }

    /// True for errors caused by what the peer sent (oversize or malformed
    /// frames, layout violations): the connection is closed as a protocol
    /// violation.
    pub fn is_peer_violation(&self) -> bool {
        matches!(
            self,
            NetError::FrameTooLarge { .. }
                | NetError::Decode { .. }
                | NetError::WrongChannel { .. }
                | NetError::Protocol(_)
        )
    }
}
