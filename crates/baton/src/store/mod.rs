//! What outlives the process, on both sides.
//!
//! - [`log`]: the one log format ([`log::TaskLog`]) behind every protocol
//!   stub: a local run's journal, a remote run's client and each task an
//!   agent holds. Its durability is a setting ([`log::Durability`]).
//! - [`journal`]: the client's task directories under `--state-dir`.
//! - [`fs`]: the one atomic write and the one directory lock everything
//!   here (and the agent's data dir) uses.
//!
//! Nothing here runs a task or talks to the network.

pub mod fs;
pub mod journal;
pub mod log;
