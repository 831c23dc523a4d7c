//! `baton run`: start a task from a module file and drive it to the end.
//!
//! Owns the options of `baton run` and how they become a [`TaskConfig`];
//! the stepping itself is [`crate::runner`].

use std::io::{IsTerminal, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use baton_task::wasi::{ClockMode, OutStream, Preopen};
use baton_task::{Engine, Limits, Task, TaskConfig};
use clap::Args;

use baton_net::{Fingerprint, Identity, KnownAgents, NetConfig, Role};

use crate::cli::identity::{config_dir, identity_dir};
use crate::console::Console;
use crate::events::EventLog;
use crate::exec::ExecCore;
use crate::journal::{check_id, default_state_dir, Journal, RemoteSpec, TaskRecord};
use crate::remote_run::{local_config, start_log, RemoteRun};
use crate::runner::{catch_interrupt, Ending, Run};
use crate::units::{parse_bytes, parse_duration};

/// Largest stdin read at task creation.
const MAX_STDIN: u64 = 256 * 1024 * 1024;

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
    pub migrate: String,
    /// Which side keeps executing if the link drops: local, remote or auto.
    #[arg(long, value_name = "SIDE", default_value = "auto", requires = "remote")]
    pub responsible: String,
    /// State sync: sync (the other side holds every point before the next step), async, or auto.
    #[arg(long, value_name = "MODE", default_value = "auto", requires = "remote")]
    pub mode: String,
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
}

impl RunArgs {
    /// Runs the task.
    ///
    /// # Errors
    ///
    /// Bad options, an unreadable or rejected module, a task failure.
    pub fn execute(self) -> Result<Ending> {
        let start = Instant::now();
        let remote = match &self.remote {
            Some(addr) => Some(RemoteTarget::resolve(
                addr,
                self.agent_fingerprint.as_deref(),
                self.identity.as_ref(),
            )?),
            None => None,
        };
        let bytes = std::fs::read(&self.module)
            .with_context(|| format!("cannot read module {}", self.module.display()))?;
        // Without a step limit the compiled code needs no epoch checks.
        let engine = Engine::with_step_limits(self.max_step_time.is_some())?;
        let program = engine
            .load(&bytes)
            .with_context(|| format!("cannot load {}", self.module.display()))?;
        let name = module_name(&self.module);
        let id = match &self.name {
            Some(id) => {
                check_id(id)?;
                id.clone()
            }
            None => make_id(&name),
        };
        // A remote run is always journaled (the agent may hold the only
        // copy of the task's progress while this side is away).
        let state_dir = match (&self.state_dir, &self.remote) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Some(_)) => Some(default_state_dir()?),
            (None, None) => None,
        };
        if let Some(dir) = &state_dir {
            Journal::check_free(dir, &id)?;
        }
        let preopens = parse_dirs(&self.dirs)?;
        let env = parse_env(&self.env)?;
        let limits = Limits {
            max_memory: self.max_memory,
            max_step_time: self.max_step_time,
        };
        let console = Console::global().clone();
        let clock = if self.wall_clock {
            console.line("baton: warning: --wall-clock lets the task see real time; its output may differ between runs and after a restore");
            ClockMode::Wall
        } else {
            let start_s = match self.clock_start.as_str() {
                "now" => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                s => s.parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("--clock-start `{s}` is not a number of seconds or `now`")
                })?,
            };
            ClockMode::Virtual {
                start_realtime_ns: start_s.saturating_mul(1_000_000_000),
            }
        };
        let mut args = vec![name.clone()];
        args.extend(self.args.iter().cloned());
        let mut config = TaskConfig::new(&name);
        config.host.args = args;
        config.host.env = env;
        config.host.seed = self.seed;
        config.host.stdin = read_stdin()?;
        config.host.preopens = preopens.clone();
        config.host.clock = clock;
        config.limits = limits;

        let mut events = EventLog::open_optional(self.events.as_deref(), start)?;
        tracing::info!(task = %id, module = %program.digest(), "creating task");
        if let Some(target) = remote {
            // What `_initialize` prints is delivered here, once, before point 0.
            let init: Arc<std::sync::Mutex<crate::remote_run::Writes>> = Arc::default();
            let sink = {
                let init = init.clone();
                Box::new(move |s: OutStream, b: &[u8]| {
                    if let Ok(mut v) = init.lock() {
                        v.push((s, b.to_vec()));
                    }
                })
            };
            let task = Task::create(&engine, &program, config, sink)?;
            let init_output = init.lock().map(|v| v.clone()).unwrap_or_default();
            let (core, initial, base) =
                ExecCore::with_task(engine, program.clone(), clock, limits, task)?;
            let spec = RemoteSpec {
                agent: self.remote.clone().unwrap_or_default(),
                fingerprint: target.fingerprint.to_string(),
                migrate: self.migrate.clone(),
                responsible: self.responsible.clone(),
                mode: self.mode.clone(),
                disconnect_after_ms: self.disconnect_after.as_millis() as u64,
                takeover_after_ms: self.takeover_after.as_millis() as u64,
                precopy: !self.no_precopy,
                identity: self.identity.clone(),
                clock_start_ns: match clock {
                    ClockMode::Virtual { start_realtime_ns } => Some(start_realtime_ns),
                    ClockMode::Wall => None,
                },
            };
            let cfg = local_config(&spec, &id, &bytes, &program, limits, clock)?;
            let Some(dir) = &state_dir else {
                bail!("a remote run needs a state directory");
            };
            let mut journal = Journal::create(
                dir,
                self.task_record(&id, &program, &preopens, Some(spec)),
                &bytes,
                &base,
            )?;
            let durable = start_log(journal.dir(), &cfg, initial, &base)?;
            if console.shows_status() || self.name.is_none() {
                console.line(&format!(
                    "baton: task {id}, extending onto {}; if it stops, continue it with `baton resume {id}`",
                    target.addr
                ));
            }
            let ending = RemoteRun {
                id: &id,
                agent: target.addr,
                fingerprint: target.fingerprint,
                identity: target.identity,
                net: NetConfig::with_disconnect_after(self.disconnect_after),
                config: cfg,
                core,
                initial,
                events: &mut events,
                console: &console,
                preopens: &preopens,
                module: program.digest().to_string(),
                capture: None,
                init_output,
                resume: None,
                durable: Some(durable),
                journal: Some(&mut journal),
            }
            .drive()?;
            if let Ending::Interrupted(point) = ending {
                interrupted_hint(&console, &id, point, true);
            }
            return Ok(ending);
        }
        let mut task = Task::create(&engine, &program, config, console.sink())?;
        let mut journal = match &state_dir {
            Some(dir) => {
                let base = task.checkpoint()?;
                Some(Journal::create(
                    dir,
                    self.task_record(&id, &program, &preopens, None),
                    &bytes,
                    &base,
                )?)
            }
            None => None,
        };
        if journal.is_some() && (console.shows_status() || self.name.is_none()) {
            console.line(&format!(
                "baton: task {id} is journaled; if it stops, continue it with `baton resume {id}`"
            ));
        }
        catch_interrupt();
        let ending = Run {
            id: &id,
            journal: journal.as_mut(),
            events: &mut events,
            console: &console,
            preopens: &preopens,
            resumed_from: None,
        }
        .drive(&mut task)?;
        if let Ending::Interrupted(point) = ending {
            interrupted_hint(&console, &id, point, journal.is_some());
        }
        Ok(ending)
    }
}

impl RunArgs {
    /// What the journal records about how the task was started.
    fn task_record(
        &self,
        id: &str,
        program: &baton_task::Program,
        preopens: &[Preopen],
        remote: Option<RemoteSpec>,
    ) -> TaskRecord {
        TaskRecord {
            version: 1,
            id: id.to_string(),
            module_path: self.module.display().to_string(),
            module_digest: program.digest().to_string(),
            dirs: preopens
                .iter()
                .map(|p| (p.host.clone(), p.guest.clone()))
                .collect(),
            max_memory: self.max_memory,
            max_step_time_ms: self.max_step_time.map(|d| d.as_millis() as u64),
            wall_clock: self.wall_clock,
            remote,
        }
    }
}

/// The agent to extend onto, resolved from the options.
pub struct RemoteTarget {
    /// Its address.
    pub addr: SocketAddr,
    /// Its pinned identity.
    pub fingerprint: Fingerprint,
    /// Our identity.
    pub identity: Identity,
}

impl RemoteTarget {
    /// Resolves the address, the pinned fingerprint (the option, else the
    /// known-agents file) and the client identity (made on first use).
    ///
    /// # Errors
    ///
    /// An address that does not resolve, an unknown agent identity, an
    /// unusable client identity.
    pub fn resolve(
        addr: &str,
        fp: Option<&str>,
        identity: Option<&PathBuf>,
    ) -> Result<RemoteTarget> {
        let sock = addr
            .to_socket_addrs()
            .with_context(|| format!("--remote `{addr}` is not HOST:PORT"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("--remote `{addr}` does not resolve to an address"))?;
        let known_path = config_dir().join("known_agents");
        let mut known = KnownAgents::load(&known_path)?;
        let fingerprint = match fp {
            Some(text) => {
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
                fp
            }
            None => known.get(addr).ok_or_else(|| {
                anyhow::anyhow!(
                    "the identity of agent {addr} is unknown: pass --agent-fingerprint sha256:<hex> as `baton agent` printed it"
                )
            })?,
        };
        let identity = Identity::load_or_create(&identity_dir(identity), Role::Client)?;
        Ok(RemoteTarget {
            addr: sock,
            fingerprint,
            identity,
        })
    }
}

/// Tells the user what Ctrl-C did.
pub fn interrupted_hint(console: &Console, id: &str, point: u64, journaled: bool) {
    if journaled {
        console.line(&format!(
            "baton: stopped at point {point}; continue with `baton resume {id}`"
        ));
    } else {
        console.line(&format!(
            "baton: stopped at point {point}; run with --state-dir to be able to resume"
        ));
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
pub fn parse_dirs(list: &[String]) -> Result<Vec<Preopen>> {
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
