//! The task spec: everything about a task besides its state, in one typed,
//! versioned value.
//!
//! Owns [`TaskSpec`] and its encoding (JSON, `version` first, bounded
//! before parsing). The command line parses its options into a spec once
//! ([`crate::cli::run`]); from then on every part of baton reads that one
//! value: the journal keeps it (`task.json`), the agent receives it (in
//! `Hello.meta`, without the fields that only make sense on this machine),
//! and `baton resume` rebuilds the run from it. A new option that changes
//! how a task behaves is a field here and a flag in the CLI, nothing else.
//!
//! What the task itself can observe (arguments, environment, seed, stdin,
//! files) is also inside its state from point 0 on; the spec keeps it so
//! that a run is described in one readable place. What the state does not
//! hold (the memory limit, the step limit, whether the clock is virtual,
//! the policies) is only here, which is why a resumed or remote task must
//! take it from here and nowhere else.
//!
//! It must not run anything, touch the network or read files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_proto::{Blob, LocalConfig, ModuleRef, SyncEvery, TaskId, Timing};
use baton_task::wasi::{ClockMode, Preopen};
use baton_task::{Limits, TaskConfig};
use serde::{Deserialize, Serialize};

/// The spec format written by this release.
pub const SPEC_VERSION: u32 = 2;

/// Largest encoded spec accepted (the protocol's `Hello.meta` limit).
pub const MAX_SPEC: usize = 64 << 10;

/// Why a spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Larger than [`MAX_SPEC`].
    #[error("task spec too large ({0} bytes; at most {MAX_SPEC})")]
    TooLarge(usize),
    /// Not JSON of the right shape.
    #[error("unreadable task spec: {0}")]
    Malformed(String),
    /// Written by another release, in a format this one does not read.
    #[error(
        "task spec format {found} is not understood by this baton (it reads format {SPEC_VERSION})"
    )]
    Version {
        /// The version found.
        found: u32,
    },
}

/// The module a task runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// The file as given on the command line (informational: the journal
    /// and the agent keep the bytes themselves).
    pub path: String,
    /// BLAKE3 digest of the bytes, as `baton_task::Digest` prints it.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// The task's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Clock {
    /// The virtual clock, starting at this many nanoseconds since the Unix
    /// epoch; its position afterwards is part of the state.
    Virtual {
        /// Where it starts.
        start_ns: u64,
    },
    /// The real clock (`--wall-clock`): output may differ after a restore.
    Wall,
}

/// Limits that are part of the task's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// `--max-memory`: memory.grow fails beyond it.
    pub max_memory: u64,
    /// `--max-step-time` in milliseconds.
    pub max_step_time_ms: Option<u64>,
    /// `--point-every` in milliseconds (a program without the step ABI);
    /// `None` for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_every_ms: Option<u64>,
}

impl TaskLimits {
    /// How often a program without the step ABI takes a point.
    pub fn point_every(&self) -> Duration {
        self.point_every_ms
            .map(|ms| Duration::from_millis(ms.max(1)))
            .unwrap_or(baton_task::DEFAULT_POINT_EVERY)
    }
}

/// How the run extends onto an agent: when, who is responsible, how state
/// flows, and how long silences may last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// `--migrate`.
    #[serde(with = "as_text")]
    pub migrate: Migrate,
    /// `--responsible`.
    #[serde(with = "as_text")]
    pub responsible: Responsible,
    /// `--mode`.
    #[serde(with = "as_text")]
    pub mode: ModeChoice,
    /// `--disconnect-after` in milliseconds.
    pub disconnect_after_ms: u64,
    /// `--takeover-after` in milliseconds.
    pub takeover_after_ms: u64,
    /// Pre-copy on (not `--no-precopy`).
    pub precopy: bool,
    /// `--sync-every`: how often the executing side persists and ships.
    #[serde(default, with = "as_text")]
    pub sync_every: SyncEvery,
}

impl Default for Policy {
    /// The command line's defaults.
    fn default() -> Policy {
        Policy {
            migrate: Migrate::Start,
            responsible: Responsible::default(),
            mode: ModeChoice::Auto,
            disconnect_after_ms: 2000,
            takeover_after_ms: 30_000,
            precopy: true,
            sync_every: SyncEvery::default(),
        }
    }
}

/// The agent a task extends onto.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `--remote` as given (HOST:PORT).
    pub agent: String,
    /// The pinned fingerprint (`sha256:<hex>`).
    pub fingerprint: String,
    /// `--identity`, if given.
    pub identity: Option<PathBuf>,
}

/// Everything about a task besides its state. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Format version ([`SPEC_VERSION`]).
    pub version: u32,
    /// The task's id.
    pub id: String,
    /// The module.
    pub module: ModuleInfo,
    /// The task's arguments, `argv[0]` (the module's file name) first.
    pub args: Vec<String>,
    /// Its environment (`--env`); nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Preopened directories as (host path, guest path).
    pub dirs: Vec<(PathBuf, String)>,
    /// Seed of its random number generator.
    pub seed: u64,
    /// Its clock.
    pub clock: Clock,
    /// Its limits.
    pub limits: TaskLimits,
    /// How it extends onto an agent (migration `never` for a local run).
    pub policy: Policy,
    /// The agent, for a run that extends; `None` for a local one.
    pub remote: Option<Target>,
    /// NaN results: as the CPU makes them for a run that never leaves this
    /// machine's architecture (no agent), canonical otherwise. Journals of
    /// earlier releases were canonical.
    #[serde(default)]
    pub nans: baton_task::Nans,
}

impl TaskSpec {
    /// The NaNs a run of this spec uses now: canonical whenever it has an
    /// agent (which may be of another architecture), else as recorded.
    pub fn nans_now(&self) -> baton_task::Nans {
        match self.remote {
            Some(_) => baton_task::Nans::Canonical,
            None => self.nans,
        }
    }

    /// Encodes as JSON (what `task.json` holds).
    pub fn encode(&self) -> Vec<u8> {
        // A spec is plain data (strings, numbers, paths as text): JSON
        // encoding cannot fail for it; a path that is not UTF-8 is written
        // lossily by serde, which `baton run` refuses before getting here.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Decodes a spec, checking its size and version before anything else.
    ///
    /// # Errors
    ///
    /// [`SpecError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<TaskSpec, SpecError> {
        if bytes.len() > MAX_SPEC {
            return Err(SpecError::TooLarge(bytes.len()));
        }
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))?;
        if v.version != SPEC_VERSION {
            return Err(SpecError::Version { found: v.version });
        }
        serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))
    }

    /// What the agent is told: the spec without what only means something
    /// on this machine (host directories, the client's identity path).
    pub fn for_agent(&self) -> TaskSpec {
        TaskSpec {
            dirs: Vec::new(),
            remote: self.remote.as_ref().map(|t| Target {
                identity: None,
                ..t.clone()
            }),
            ..self.clone()
        }
    }

    /// The runtime's limits.
    pub fn task_limits(&self) -> Limits {
        Limits {
            max_memory: self.limits.max_memory,
            max_step_time: self.limits.max_step_time_ms.map(Duration::from_millis),
            point_every: self.limits.point_every(),
        }
    }

    /// The runtime's clock.
    pub fn clock_mode(&self) -> ClockMode {
        match self.clock {
            Clock::Virtual { start_ns } => ClockMode::Virtual {
                start_realtime_ns: start_ns,
            },
            Clock::Wall => ClockMode::Wall,
        }
    }

    /// The preopened directories.
    pub fn preopens(&self) -> Vec<Preopen> {
        self.dirs
            .iter()
            .map(|(host, guest)| Preopen {
                host: host.clone(),
                guest: guest.clone(),
            })
            .collect()
    }

    /// How to create the task at point 0, with this stdin.
    pub fn task_config(&self, stdin: Vec<u8>) -> TaskConfig {
        let name = self.args.first().map_or("task.wasm", String::as_str);
        let mut config = TaskConfig::new(name);
        config.host.args = self.args.clone();
        config.host.env = self.env.clone();
        config.host.seed = self.seed;
        config.host.stdin = stdin;
        config.host.preopens = self.preopens();
        config.host.clock = self.clock_mode();
        config.limits = self.task_limits();
        config
    }

    /// The local stub's configuration: the policies (migration `never`
    /// when there is no agent), the timing, and this spec, as the agent
    /// should see it, in `Hello.meta`.
    pub fn local_config(&self, module: &[u8], digest: baton_proto::Digest) -> LocalConfig {
        let mut cfg = LocalConfig::new(
            TaskId(self.id.clone()),
            ModuleRef {
                digest,
                size: module.len() as u64,
            },
            Blob::from(module),
        );
        let p = &self.policy;
        cfg.timing = Timing::new(
            Duration::from_millis(p.disconnect_after_ms),
            Duration::from_millis(p.takeover_after_ms),
        );
        cfg.migrate = Arc::new(match self.remote {
            Some(_) => p.migrate.clone(),
            None => Migrate::Never,
        });
        cfg.responsible = Arc::new(p.responsible.clone());
        cfg.mode = Arc::new(p.mode);
        cfg.precopy = p.precopy;
        cfg.sync_every = p.sync_every;
        cfg.hello_meta = Blob::from(self.for_agent().encode());
        cfg
    }
}

/// What an agent needs of a task: its limits and clock. Read from a
/// client's `Hello.meta`, which holds the client's [`TaskSpec`] (or, from a
/// client of the release before the spec, just these three fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    /// `--max-memory`: an agent must honour it exactly or refuse the task.
    pub max_memory: u64,
    /// `--max-step-time` in milliseconds.
    pub max_step_time_ms: Option<u64>,
    /// `None` for the wall clock, else the virtual clock's start.
    pub virtual_clock_start_ns: Option<u64>,
    /// `--point-every` in milliseconds; `None` for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_every_ms: Option<u64>,
    /// `--sync-every` (`auto` when the client did not say).
    #[serde(default, with = "as_text")]
    pub sync_every: SyncEvery,
}

impl AgentSettings {
    /// Reads `Hello.meta`.
    ///
    /// # Errors
    ///
    /// A text saying what is wrong, for the client.
    pub fn from_meta(bytes: &[u8]) -> Result<AgentSettings, String> {
        match TaskSpec::decode(bytes) {
            Ok(spec) => Ok(AgentSettings {
                max_memory: spec.limits.max_memory,
                max_step_time_ms: spec.limits.max_step_time_ms,
                point_every_ms: spec.limits.point_every_ms,
                sync_every: spec.policy.sync_every,
                virtual_clock_start_ns: match spec.clock {
                    Clock::Virtual { start_ns } => Some(start_ns),
                    Clock::Wall => None,
                },
            }),
            Err(SpecError::TooLarge(n)) => Err(format!("task settings too large ({n} bytes)")),
            // A client of the release before the spec sent only these.
            Err(e) => {
                serde_json::from_slice(bytes).map_err(|_| format!("unreadable task settings: {e}"))
            }
        }
    }

    /// The task's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_memory: self.max_memory,
            max_step_time: self.max_step_time_ms.map(Duration::from_millis),
            point_every: TaskLimits {
                max_memory: self.max_memory,
                max_step_time_ms: self.max_step_time_ms,
                point_every_ms: self.point_every_ms,
            }
            .point_every(),
        }
    }

    /// The task's clock.
    pub fn clock(&self) -> ClockMode {
        match self.virtual_clock_start_ns {
            Some(start_realtime_ns) => ClockMode::Virtual { start_realtime_ns },
            None => ClockMode::Wall,
        }
    }
}

/// Serde through `Display` and `FromStr`: policies are journaled as the
/// words the command line takes (`point:5`, `after:2s`, `auto`).
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            version: SPEC_VERSION,
            id: "t-1".into(),
            module: ModuleInfo {
                path: "examples/pi.wasm".into(),
                digest: "ab".repeat(32),
                size: 1234,
            },
            args: vec!["pi.wasm".into(), "10".into()],
            env: vec![("K".into(), "V=W".into())],
            dirs: vec![(PathBuf::from("/tmp/out"), "/out".into())],
            seed: 7,
            clock: Clock::Virtual { start_ns: 5 },
            limits: TaskLimits {
                max_memory: 1 << 20,
                max_step_time_ms: Some(250),
                point_every_ms: None,
            },
            policy: Policy {
                migrate: "after:1500ms".parse().unwrap(),
                responsible: Responsible::Remote,
                mode: ModeChoice::Async,
                disconnect_after_ms: 750,
                takeover_after_ms: 9000,
                precopy: false,
                sync_every: SyncEvery::Interval(Duration::from_millis(40)),
            },
            remote: Some(Target {
                agent: "127.0.0.1:7070".into(),
                fingerprint: format!("sha256:{}", "cd".repeat(32)),
                identity: Some(PathBuf::from("/home/u/.config/baton/identity")),
            }),
            nans: baton_task::Nans::Canonical,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let s = spec();
        assert_eq!(TaskSpec::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn the_agent_sees_no_host_paths_but_every_setting() {
        let a = spec().for_agent();
        assert!(a.dirs.is_empty());
        assert_eq!(a.remote.as_ref().and_then(|t| t.identity.clone()), None);
        let settings = AgentSettings::from_meta(&a.encode()).unwrap();
        assert_eq!(settings.max_memory, 1 << 20);
        assert_eq!(settings.max_step_time_ms, Some(250));
        assert_eq!(
            settings.clock(),
            ClockMode::Virtual {
                start_realtime_ns: 5
            }
        );
    }

    #[test]
    fn a_client_of_the_release_before_is_still_understood() {
        let old = br#"{"max_memory":1048576,"max_step_time_ms":250,"virtual_clock_start_ns":7}"#;
        let s = AgentSettings::from_meta(old).unwrap();
        assert_eq!(s.max_memory, 1 << 20);
        assert_eq!(
            s.clock(),
            ClockMode::Virtual {
                start_realtime_ns: 7
            }
        );
    }

    #[test]
    fn hostile_or_foreign_specs_are_refused_with_a_reason() {
        assert!(matches!(
            TaskSpec::decode(&vec![b' '; MAX_SPEC + 1]),
            Err(SpecError::TooLarge(_))
        ));
        assert!(matches!(
            TaskSpec::decode(b"{"),
            Err(SpecError::Malformed(_))
        ));
        let mut v3 = spec();
        v3.version = 3;
        assert!(matches!(
            TaskSpec::decode(&v3.encode()),
            Err(SpecError::Version { found: 3 })
        ));
        let text = String::from_utf8(spec().encode()).unwrap();
        let bad = text.replace("after:1500ms", "sometimes");
        assert!(matches!(
            TaskSpec::decode(bad.as_bytes()),
            Err(SpecError::Malformed(_))
        ));
        assert!(AgentSettings::from_meta(b"[1,2]").is_err());
    }

    #[test]
    fn a_local_run_never_migrates_whatever_the_policy_says() {
        let mut s = spec();
        s.remote = None;
        let cfg = s.local_config(b"\0asm", baton_proto::Digest([1; 32]));
        assert_eq!(
            format!("{:?}", cfg.migrate),
            format!("{:?}", Migrate::Never)
        );
    }
}
