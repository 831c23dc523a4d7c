//! Which agent a run extends onto, and who we are to it.
//!
//! Owns turning `--remote`, `--agent-fingerprint` and `--identity` into a
//! [`Remote`] (a resolved address, a pinned fingerprint, our identity): the
//! fingerprint comes from the option (and is then remembered in the
//! known-agents file) or from that file; the identity is made on first use.
//! It must not connect to anything.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use baton_net::{Fingerprint, Identity, KnownAgents, Role};

use crate::cli::identity::{config_dir, identity_dir};
use crate::client::console::Console;
use crate::client::net_config;
use crate::client::session::Remote;
use crate::spec::{Policy, Target};

/// Resolves an agent as given on the command line. Returns it, and what
/// the spec records of it.
///
/// # Errors
///
/// An address that does not resolve, an unknown agent identity, an
/// unusable client identity.
pub fn resolve(
    addr: &str,
    fp: Option<&str>,
    identity: Option<&PathBuf>,
    policy: &Policy,
) -> Result<(Remote, Target)> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("--remote `{addr}` is not HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--remote `{addr}` does not resolve to an address"))?;
    let fingerprint = pinned(addr, fp)?;
    let identity_path = identity_dir(identity);
    let identity_key = Identity::load_or_create(&identity_path, Role::Client)?;
    let remote = Remote {
        addr: sock,
        fingerprint,
        identity: identity_key,
        net: net_config(policy),
    };
    let target = Target {
        agent: addr.to_string(),
        fingerprint: fingerprint.to_string(),
        identity: identity.cloned(),
    };
    Ok((remote, target))
}

/// Resolves the agent a journaled spec names.
///
/// # Errors
///
/// As [`resolve`].
pub fn resolve_spec(t: &Target, policy: &Policy) -> Result<Remote> {
    resolve(&t.agent, Some(&t.fingerprint), t.identity.as_ref(), policy).map(|(r, _)| r)
}

/// The agent's pinned fingerprint: the option (remembered for next time),
/// else the known-agents file.
fn pinned(addr: &str, fp: Option<&str>) -> Result<Fingerprint> {
    let known_path = config_dir().join("known_agents");
    let mut known = KnownAgents::load(&known_path)?;
    let Some(text) = fp else {
        return known.get(addr).ok_or_else(|| {
            anyhow::anyhow!(
                "the identity of agent {addr} is unknown: pass --agent-fingerprint sha256:<hex> as `baton agent` printed it"
            )
        });
    };
    let fp: Fingerprint = text.parse()?;
    if known.get(addr) != Some(fp) {
        known.insert(addr, fp);
        let saved = std::fs::create_dir_all(config_dir())
            .map_err(anyhow::Error::from)
            .and_then(|()| known.save(&known_path).map_err(anyhow::Error::from));
        if let Err(e) = saved {
            Console::global().line(&format!(
                "baton: warning: cannot remember the agent's fingerprint in {}: {e:#}",
                known_path.display()
            ));
        }
    }
    Ok(fp)
}
