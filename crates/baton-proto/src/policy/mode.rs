//! How state flows from the executor to the other side.
//!
//! Owns [`ModePolicy`] and the built-in [`ModeChoice`].

use core::fmt;
use core::str::FromStr;

use super::ParsePolicyError;
use crate::roles::{Mode, Side};

/// Decides the mode for an assignment.
pub trait ModePolicy: fmt::Debug + Send + Sync {
    /// The mode to use when `executor` executes and `responsible` is
    /// responsible.
    fn choose(&self, executor: Side, responsible: Side) -> Mode;
}

/// The built-in mode policies (`--mode`). Default: `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeChoice {
    /// Always sync: the executor waits at every point until the peer
    /// durably holds it.
    Sync,
    /// Always async: the executor never waits.
    Async,
    /// Mode follows responsibility: sync when the local side is responsible
    /// while the remote executes (the local must hold the freshest state to
    /// continue without loss), async otherwise (a responsible executor holds
    /// the freshest state itself, so waiting would protect nothing).
    #[default]
    Auto,
}

impl ModePolicy for ModeChoice {
    fn choose(&self, executor: Side, responsible: Side) -> Mode {
        match self {
            ModeChoice::Sync => Mode::Sync,
            ModeChoice::Async => Mode::Async,
            ModeChoice::Auto => {
                if responsible == Side::Local && executor == Side::Remote {
                    Mode::Sync
                } else {
                    Mode::Async
                }
            }
        }
    }
}

impl FromStr for ModeChoice {
    type Err = ParsePolicyError;

    /// Parses `sync`, `async` or `auto`.
    fn from_str(s: &str) -> Result<ModeChoice, ParsePolicyError> {
        match s {
            "sync" => Ok(ModeChoice::Sync),
            "async" => Ok(ModeChoice::Async),
            "auto" => Ok(ModeChoice::Auto),
            _ => Err(ParsePolicyError::new("--mode", s, "sync, async or auto")),
        }
    }
}

impl fmt::Display for ModeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeChoice::Sync => "sync",
            ModeChoice::Async => "async",
            ModeChoice::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_responsibility() {
        let a = ModeChoice::Auto;
        assert_eq!(a.choose(Side::Remote, Side::Local), Mode::Sync);
        assert_eq!(a.choose(Side::Remote, Side::Remote), Mode::Async);
        assert_eq!(a.choose(Side::Local, Side::Local), Mode::Async);
        assert_eq!(
            ModeChoice::Sync.choose(Side::Local, Side::Local),
            Mode::Sync
        );
        assert_eq!("async".parse(), Ok(ModeChoice::Async));
        assert!("fast".parse::<ModeChoice>().is_err());
    }
}
