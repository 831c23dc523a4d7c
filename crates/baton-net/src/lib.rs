//! baton's transport: QUIC (quinn) with TLS 1.3 (rustls, `ring`), where
//! agents and clients know each other by certificate fingerprint, as in SSH.
//!
//! This crate is the tokio/quinn boundary. It knows identities, TLS,
//! streams and frames of [`baton_proto::Message`]s; it knows nothing of
//! tasks, stubs or wasmtime. The protocol drivers in `baton` put the stubs
//! on top of [`Conn`].
//!
//! # The pieces
//!
//! - [`identity`]: [`Identity`] (key pair and self-signed certificate, made
//!   on first use in a directory), [`Fingerprint`] (`sha256:<hex>`),
//!   [`KnownAgents`] and [`AuthorizedClients`] files.
//! - [`tls`]: rustls configurations that trust by fingerprint only.
//! - [`endpoint`]: [`Agent`] (listen, accept) and [`Client`] (connect), with
//!   QUIC idle timeout and keep-alive derived from
//!   [`NetConfig::disconnect_after`].
//! - [`conn`]: [`Conn`], one connection: [`Conn::send`] routes a message by
//!   [`Message::channel`](baton_proto::Message::channel) to the control
//!   stream, a bulk stream or the output stream; [`Conn::recv`] yields
//!   `(Channel, Message)`.
//! - [`bulk`]: resumable bulk transfers: [`TransferId`](bulk::TransferId)
//!   (BLAKE3 of the message), the per-endpoint store of partial transfers
//!   bounded by [`ResumeLimits`], and [`BulkStats`].
//! - [`frame`]: the byte layout of streams and the frame size limits.
//! - [`relay`]: [`Relay`], a UDP relay between a client and an agent that
//!   cuts, heals, delays, drops and moves the client's apparent address on
//!   command: fault injection for tests and `baton demo`, never for
//!   production traffic.
//! - [`NetError`]: every failure, worded for the user.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> Result<(), baton_net::NetError> {
//! use baton_net::{Agent, AuthorizedClients, Client, ClientPolicy, Identity, NetConfig, Role};
//!
//! let agent_id = Identity::load_or_create(&dir.join("agent"), Role::Agent)?;
//! let client_id = Identity::load_or_create(&dir.join("client"), Role::Client)?;
//! let policy = ClientPolicy::Authorized([client_id.fingerprint()].into_iter().collect());
//! let agent = Agent::bind("127.0.0.1:0".parse().unwrap(), &agent_id, policy, NetConfig::default())?;
//! let addr = agent.local_addr()?;
//! tokio::spawn(async move {
//!     while let Some(pending) = agent.accept().await {
//!         tokio::spawn(async move {
//!             let conn = pending.establish().await?;
//!             while let Ok((_channel, msg)) = conn.recv().await {
//!                 conn.send(&msg).await?; // echo
//!             }
//!             Ok::<_, baton_net::NetError>(())
//!         });
//!     }
//! });
//! let client = Client::bind("127.0.0.1:0".parse().unwrap(), client_id, NetConfig::default())?;
//! let conn = client.connect(addr, agent_id.fingerprint()).await?;
//! # let _ = conn; Ok(()) }
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod bulk;
pub mod conn;
pub mod endpoint;
mod error;
pub mod frame;
pub mod identity;
pub mod relay;
pub mod tls;

pub use bulk::{BulkStats, PartialStats, ResumeLimits};
pub use conn::Conn;
pub use endpoint::{Agent, Client, NetConfig, Pending};
pub use error::NetError;
pub use frame::FrameLimits;
pub use identity::{AuthorizedClients, Fingerprint, Identity, KnownAgents, Role};
pub use relay::Relay;
pub use tls::ClientPolicy;
