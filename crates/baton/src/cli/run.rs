//! `baton run`: start a task from a module file and drive it to the end.
//!
//! Owns the options of `baton run` and how they become one [`TaskSpec`];
//! the run itself is [`crate::client::start`].

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_proto::SyncEvery;
use baton_task::wasi::Preopen;
use clap::Args;

use crate::client::console::Console;
use crate::client::events::EventLog;
use crate::client::session::Ending;
use crate::client::{self, target, Loaded, NewTask};
use crate::spec::{Clock, ModuleInfo, Policy, TaskLimits, TaskSpec, SPEC_VERSION};
use crate::store::journal::{check_id, default_state_dir};
use crate::units::{parse_bytes, parse_duration};

/// Largest stdin read at task creation.
const MAX_STDIN: u64 = 256 * 1024 * 1024;

/// How a run extends onto an agent: the options `baton run` and `baton
/// resume --remote` share.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The agent's pinned identity, as `baton agent` prints it (remembered in the known-agents file for later runs).
    #[arg(long, value_name = "FP", requires = "remote")]
    pub agent_fingerprint: Option<String>,
    /// When to move the task to the agent: start, never, point:N, after:DURATION or auto.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "start",
        requires = "remote"
    )]
    pub migrate: Migrate,
    /// Which side keeps executing if the link drops: local, remote or auto.
    #[arg(long, value_name = "SIDE", default_value = "auto", requires = "remote")]
    pub responsible: Responsible,
    /// State sync: sync (the other side holds every point before the next step), async, or auto.
    #[arg(long, value_name = "MODE", default_value = "auto", requires = "remote")]
    pub mode: ModeChoice,
    /// Silence after which the link counts as lost.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub disconnect_after: Duration,
    /// When the agent is responsible and stays away this long, continue here.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub takeover_after: Duration,
    /// Do not send state ahead while the task runs here (every migration then sends the whole state).
    #[arg(long, requires = "remote")]
    pub no_precopy: bool,
    /// The client identity directory (default: ~/.config/baton/identity).
    #[arg(long, value_name = "DIR")]
    pub identity: Option<PathBuf>,
    /// How often the side that executes the task journals a point and, in
    /// async mode, ships it to the other side: auto (syncing costs about 5 %
    /// of the run, at most every 250ms), 0 (every point), or a duration.
    /// Points in between are run through and never captured.
    #[arg(long, value_name = "DURATION", default_value = "auto")]
    pub sync_every: SyncEvery,
}

impl PolicyArgs {
    /// The policy these options give.
    pub fn policy(&self) -> Policy {
        Policy {
            migrate: self.migrate.clone(),
            responsible: self.responsible.clone(),
            mode: self.mode,
            disconnect_after_ms: self.disconnect_after.as_millis() as u64,
            takeover_after_ms: self.takeover_after.as_millis() as u64,
            precopy: !self.no_precopy,
            sync_every: self.sync_every,
        }
    }
}

/// Options of `baton run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task: a WASI module (a step task exporting `baton_step`, or a command with `_start`).
    pub module: PathBuf,
    /// Arguments for the task (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Seed of the task's random number generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// An environment variable for the task (repeatable); nothing is inherited.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Give the task a host directory at a guest path (repeatable). Its files
    /// are loaded at the start; files the task creates or changes are written
    /// back when it finishes.
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    pub dirs: Vec<String>,
    /// Largest memory the task may use (memory.grow fails beyond it).
    #[arg(long, value_name = "BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub max_memory: u64,
    /// Longest a single step may run; a longer step is stopped with an error.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_step_time: Option<Duration>,
    /// How often a program without the step ABI (any WASI command) reaches
    /// a point of its own accord [default: 100ms]. Migration, Ctrl-C and
    /// hand-back ask for one at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub point_every: Option<Duration>,
    /// Journal every point under this directory, for `baton resume`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The task's id (default: made up from the module name).
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,
    /// Write events as JSON Lines to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Let the task see the real clock instead of the virtual one. Output may
    /// then differ between runs and after a restore.
    #[arg(long)]
    pub wall_clock: bool,
    /// Where the virtual clock starts: seconds since the Unix epoch, or `now`
    /// for the time the task is created. The default, 0, keeps two runs of
    /// the same task identical to the byte even when it prints the time.
    #[arg(long, value_name = "SECS|now", default_value = "0")]
    pub clock_start: String,
    /// Agent to extend onto (without it: local only).
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: Option<String>,
    /// How the task extends onto the agent.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

impl RunArgs {
    /// Runs the task.
    ///
    /// # Errors
    ///
    /// Bad options, an unreadable or rejected module, a task failure.
    pub fn execute(self) -> Result<Ending> {
        let start = std::time::Instant::now();
        let policy = self.policy.policy();
        let remote = match &self.remote {
            Some(addr) => Some(target::resolve(
                addr,
                self.policy.agent_fingerprint.as_deref(),
                self.policy.identity.as_ref(),
                &policy,
            )?),
            None => None,
        };
        let bytes = std::fs::read(&self.module)
            .with_context(|| format!("cannot read module {}", self.module.display()))?;
        // A run with no agent never leaves this machine's architecture: its
        // NaNs may be the CPU's own, at no cost.
        let nans = match remote {
            Some(_) => baton_task::Nans::Canonical,
            None => baton_task::Nans::Native,
        };
        let loaded = Loaded::new(bytes, self.max_step_time.is_some(), nans)
            .with_context(|| format!("cannot load {}", self.module.display()))?;
        let name = module_name(&self.module);
        let id = match &self.name {
            Some(id) => {
                check_id(id)?;
                id.clone()
            }
            None => make_id(&name),
        };
        // A run with an agent is always journaled (the agent may hold the
        // only copy of the task's progress while this side is away).
        let state_dir = match (&self.state_dir, &self.remote) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(_)) => Some(default_state_dir()?),
            (None, None) => None,
        };
        let clock = self.clock()?;
        let mut args = vec![name];
        args.extend(self.args.iter().cloned());
        let spec = TaskSpec {
            version: SPEC_VERSION,
            id,
            module: ModuleInfo {
                path: self.module.display().to_string(),
                digest: loaded.program.digest().to_string(),
                size: loaded.bytes.len() as u64,
            },
            args,
            env: parse_env(&self.env)?,
            dirs: parse_dirs(&self.dirs)?
                .into_iter()
                .map(|p| (p.host, p.guest))
                .collect(),
            seed: self.seed,
            clock,
            limits: TaskLimits {
                max_memory: self.max_memory,
                max_step_time_ms: self.max_step_time.map(|d| d.as_millis() as u64),
                point_every_ms: self.point_every.map(|d| d.as_millis().max(1) as u64),
            },
            policy,
            remote: remote.as_ref().map(|(_, t)| t.clone()),
            nans,
        };
        let events = EventLog::open_optional(self.events.as_deref(), start)?;
        client::start(NewTask {
            spec,
            loaded,
            stdin: read_stdin()?,
            state_dir: state_dir.as_deref(),
            remote: remote.map(|(r, _)| r),
            named: self.name.is_some(),
            events,
        })
    }

    /// The task's clock, from `--wall-clock` and `--clock-start`.
    fn clock(&self) -> Result<Clock> {
        if self.wall_clock {
            Console::global().line("baton: warning: --wall-clock lets the task see real time; its output may differ between runs and after a restore");
            return Ok(Clock::Wall);
        }
        let start_s = match self.clock_start.as_str() {
            "now" => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            s => s.parse::<u64>().map_err(|_| {
                anyhow::anyhow!("--clock-start `{s}` is not a number of seconds or `now`")
            })?,
        };
        Ok(Clock::Virtual {
            start_ns: start_s.saturating_mul(1_000_000_000),
        })
    }
}

/// The module's file name, as the task's argv[0].
fn module_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "task.wasm".to_string())
}

/// A fresh task id: the module's stem and six hex digits.
fn make_id(name: &str) -> String {
    let stem: String = name
        .trim_end_matches(".wasm")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(32)
        .collect();
    let stem = if stem.is_empty() {
        "task".to_string()
    } else {
        stem
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&now.to_le_bytes())
        .update(&std::process::id().to_le_bytes());
    format!("{stem}-{}", &h.finalize().to_hex()[..6])
}

fn parse_env(list: &[String]) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--env `{kv}` is not K=V"),
        })
        .collect()
}

/// Parses `HOST::GUEST` pairs; the host directory must exist.
fn parse_dirs(list: &[String]) -> Result<Vec<Preopen>> {
    list.iter()
        .map(|spec| {
            let Some((host, guest)) = spec.split_once("::") else {
                bail!("--dir `{spec}` is not HOST::GUEST (for example --dir ./out::/out)");
            };
            if host.is_empty() || guest.is_empty() {
                bail!("--dir `{spec}` needs both a host and a guest path");
            }
            let host = PathBuf::from(host);
            if !host.is_dir() {
                bail!("--dir `{spec}`: {} is not a directory", host.display());
            }
            let host = host
                .canonicalize()
                .with_context(|| format!("--dir `{spec}`"))?;
            Ok(Preopen {
                host,
                guest: guest.to_string(),
            })
        })
        .collect()
}

/// Reads all of stdin unless it is a terminal (a task cannot wait for a
/// person: its input must be complete at creation so restores never need it).
fn read_stdin() -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Vec::new());
    }
    let mut buf = Vec::new();
    stdin
        .lock()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buf)
        .context("cannot read stdin")?;
    if buf.len() as u64 > MAX_STDIN {
        bail!("stdin is larger than {MAX_STDIN} bytes; pass large inputs with --dir instead");
    }
    Ok(buf)
}
