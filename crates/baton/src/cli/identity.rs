//! `baton identity`: show this machine's client identity (made on first
//! use), so that an agent's administrator can authorize it.
//!
//! Owns where client identities and the known-agents file live by default.

use std::path::PathBuf;

use anyhow::Result;
use baton_net::{Identity, Role};
use clap::Args;

/// Options of `baton identity`.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The client identity directory (default: ~/.config/baton/identity).
    #[arg(long, value_name = "DIR")]
    pub identity: Option<PathBuf>,
}

/// baton's per-user configuration directory: `$BATON_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/baton`, else `~/.config/baton`.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BATON_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("baton");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config").join("baton")
}

/// The client identity directory: `dir` if given, else under [`config_dir`].
pub fn identity_dir(dir: Option<&PathBuf>) -> PathBuf {
    dir.cloned()
        .unwrap_or_else(|| config_dir().join("identity"))
}

impl IdentityArgs {
    /// Prints the fingerprint.
    ///
    /// # Errors
    ///
    /// The identity cannot be made or read.
    pub fn execute(self) -> Result<()> {
        let dir = identity_dir(self.identity.as_ref());
        let id = Identity::load_or_create(&dir, Role::Client)?;
        println!("fingerprint {}", id.fingerprint());
        println!("identity {}", dir.display());
        Ok(())
    }
}
