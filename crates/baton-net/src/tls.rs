//! rustls configurations that trust by fingerprint only.
//!
//! Owns the TLS policy: TLS 1.3 only, the `ring` crypto provider, ALPN
//! [`ALPN`], and two verifiers. The agent presents its certificate, requires
//! a client certificate and admits it only if its fingerprint is authorized
//! (or anyone, under [`ClientPolicy::AllowAny`]). The client presents its
//! certificate and accepts the agent only if the certificate has the pinned
//! fingerprint. No certificate authority, name or validity period is
//! consulted; the handshake signatures are still verified, so a peer must
//! hold the private key of the certificate it presents. This module must not
//! open sockets: `endpoint` wraps these configurations in quinn.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::NetError;
use crate::identity::{AuthorizedClients, Fingerprint, Identity};

/// The ALPN protocol name of baton's transport, version 1.
pub const ALPN: &[u8] = b"baton/1";

/// The TLS server name a client asks for. Only the fingerprint is checked;
/// the name is a constant so that SNI reveals nothing.
pub const SERVER_NAME: &str = "baton-agent";

/// Which clients an agent admits.
#[derive(Clone, Debug)]
pub enum ClientPolicy {
    /// Only clients whose certificate fingerprint is listed.
    Authorized(AuthorizedClients),
    /// Any client that proves it holds the key of the certificate it
    /// presents (`--allow-any-client`; the caller should warn).
    AllowAny,
}

impl ClientPolicy {
    /// True if a client with this fingerprint is admitted.
    pub fn admits(&self, fp: &Fingerprint) -> bool {
        match self {
            ClientPolicy::Authorized(list) => list.contains(fp),
            ClientPolicy::AllowAny => true,
        }
    }
}

/// The crypto provider used everywhere: rustls' `ring` provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
}

/// The agent's client-certificate verifier.
struct ClientVerifier {
    policy: ClientPolicy,
    provider: Arc<CryptoProvider>,
    refusals: RefusalLog,
}

/// Refused clients, logged at most once per [`RefusalLog::EVERY`] with a
/// count of those in between: anyone can knock, and each knock must not
/// cost a line of the agent's log.
#[derive(Default)]
struct RefusalLog(std::sync::Mutex<Option<(std::time::Instant, u64)>>);

impl RefusalLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn refused(&self, fp: &Fingerprint) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *last {
            Some((at, quiet)) if at.elapsed() < Self::EVERY => {
                *quiet += 1;
                tracing::debug!(client = %fp, "refused a client that is not authorized");
            }
            _ => {
                let quiet = last.map_or(0, |(_, q)| q);
                tracing::warn!(
                    client = %fp,
                    refused_since_last_line = quiet,
                    "refused a client that is not authorized"
                );
                *last = Some((std::time::Instant::now(), 0));
            }
        }
    }
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = Fingerprint::of_der(end_entity);
        if self.policy.admits(&fp) {
            Ok(ClientCertVerified::assertion())
        } else {
            self.refusals.refused(&fp);
            // Sent to the client as an `access_denied` alert.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the client's verifier saw, for the error message after a failed
/// handshake.
#[derive(Clone, Debug, Default)]
pub(crate) struct SeenAgent(Arc<Mutex<Option<Fingerprint>>>);

impl SeenAgent {
    /// The fingerprint the agent presented, if it was checked and did not
    /// match.
    pub(crate) fn mismatch(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client's server-certificate verifier: pinned fingerprint only.
struct PinnedAgent {
    expected: Fingerprint,
    seen: SeenAgent,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinnedAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedAgent")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PinnedAgent {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity);
        if presented == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            *self.seen.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(presented);
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The agent's TLS configuration: presents `identity`, requires a client
/// certificate admitted by `policy`, TLS 1.3 only, ALPN [`ALPN`].
///
/// # Errors
///
/// [`NetError::Tls`] if rustls rejects the key or certificate.
pub fn server_config(
    identity: &Identity,
    policy: ClientPolicy,
) -> Result<rustls::ServerConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(ClientVerifier {
        policy,
        provider: provider.clone(),
        refusals: RefusalLog::default(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert_der().clone()], identity.private_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT data could be replayed; the protocol does not need it.
    config.max_early_data_size = 0;
    Ok(config)
}

/// [`client_config`], plus a [`SeenAgent`] that reports a mismatching
/// fingerprint after a failed handshake.
pub(crate) fn client_config_inner(
    identity: &Identity,
    expected: Fingerprint,
) -> Result<(rustls::ClientConfig, SeenAgent), NetError> {
    let provider = provider();
    let seen = SeenAgent::default();
    let verifier = Arc::new(PinnedAgent {
        expected,
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert_der().clone()], identity.private_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok((config, seen))
}

/// The client's TLS configuration for one agent: presents `identity`,
/// accepts the agent only if its certificate has fingerprint `expected`,
/// TLS 1.3 only, ALPN [`ALPN`].
///
/// # Errors
///
/// [`NetError::Tls`] if rustls rejects the key or certificate.
pub fn client_config(
    identity: &Identity,
    expected: Fingerprint,
) -> Result<rustls::ClientConfig, NetError> {
    client_config_inner(identity, expected).map(|(config, _)| config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_between_log_lines() {
        let log = RefusalLog::default();
        let fp = Fingerprint::of_der(&CertificateDer::from(vec![1, 2, 3]));
        log.refused(&fp);
        log.refused(&fp);
        log.refused(&fp);
        let seen = *log.0.lock().unwrap();
        // One line written, two refusals counted for the next one.
        assert_eq!(seen.map(|(_, quiet)| quiet), Some(2));
    }
}
