//! `baton agent`: serve tasks that clients extend onto this machine.
//!
//! Owns the agent's options and its process life: prints `fingerprint
//! sha256:<hex>` and `listening on <addr>` once it accepts connections,
//! runs until SIGTERM or Ctrl-C, then hands tasks back to connected clients
//! (bounded by `--drain-timeout`) and exits. The serving is
//! [`crate::agent`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use baton_net::{AuthorizedClients, ClientPolicy};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::agent::{self, AgentLimits, AgentOptions};
use crate::client::console::Console;
use crate::units::{parse_bytes, parse_duration};

/// Options of `baton agent`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    /// Maintenance of a data dir instead of serving.
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// Address to listen on (UDP), e.g. 0.0.0.0:7070 or 127.0.0.1:0 for any free port.
    #[arg(long, value_name = "HOST:PORT", required = true)]
    pub listen: Option<SocketAddr>,
    /// Directory for the agent's identity (made on first start), fingerprint, module cache and tasks.
    #[arg(long, value_name = "DIR", required = true)]
    pub data_dir: Option<PathBuf>,
    /// Admit only clients whose fingerprints are listed in this file (one `sha256:<hex>` per line).
    #[arg(long, value_name = "FILE", conflicts_with = "allow_any_client")]
    pub authorized_clients: Option<PathBuf>,
    /// Admit any client (prints a warning): for trusted networks and tests.
    #[arg(long)]
    pub allow_any_client: bool,
    /// Steps computing at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Largest --max-memory a task may ask for.
    #[arg(long, value_name = "BYTES", default_value = "4GiB", value_parser = parse_bytes)]
    pub max_memory: u64,
    /// Longest step allowed for any task.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_step_time: Option<Duration>,
    /// Most tasks one client may have here at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_tasks_per_client: usize,
    /// Largest module accepted.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_module_size: u64,
    /// On SIGTERM, how long to wait for connected clients to take their tasks back.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long the result of a task that finished here, or a task its client is responsible for, waits for its client (removed at the next start, or by `baton agent gc`, after that).
    #[arg(long, value_name = "DURATION", default_value = "168h", value_parser = parse_duration)]
    pub retention: Duration,
}

/// `baton agent <ACTION>`.
#[derive(Debug, clap::Subcommand)]
pub enum AgentAction {
    /// Remove, from a data dir no agent is using, results never fetched for longer than --older-than and task files set aside as damaged.
    Gc {
        /// The agent's data dir.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Remove tasks left alone at least this long: results of tasks that finished here, and tasks their client is responsible for.
        #[arg(long, value_name = "DURATION", default_value = "168h", value_parser = parse_duration)]
        older_than: Duration,
    },
}

impl AgentArgs {
    /// Runs the agent until SIGTERM or Ctrl-C.
    ///
    /// # Errors
    ///
    /// Bad options, an unusable data dir or identity, an address in use.
    pub fn execute(self) -> Result<()> {
        if let Some(AgentAction::Gc {
            data_dir,
            older_than,
        }) = &self.action
        {
            let r = agent::gc(data_dir, *older_than)?;
            println!(
                "removed {} task(s) left alone longer than {}s (finished, or their client's to continue) and {} damaged task dir(s) from {}",
                r.finished,
                older_than.as_secs(),
                r.damaged,
                data_dir.display()
            );
            return Ok(());
        }
        let (Some(listen), Some(data_dir)) = (self.listen, self.data_dir.clone()) else {
            anyhow::bail!("baton agent needs --listen and --data-dir");
        };
        let policy = match (&self.authorized_clients, self.allow_any_client) {
            (Some(path), _) => ClientPolicy::Authorized(AuthorizedClients::load(path)?),
            (None, true) => {
                Console::global().line("baton: warning: --allow-any-client: any client that can reach this port may run tasks here");
                ClientPolicy::AllowAny
            }
            (None, false) => anyhow::bail!(
                "say who may connect: --authorized-clients <FILE> (fingerprints from `baton identity` on each client) or --allow-any-client"
            ),
        };
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let opts = AgentOptions {
            listen,
            data_dir,
            policy,
            workers,
            limits: AgentLimits {
                max_memory: self.max_memory,
                max_step_time: self.max_step_time,
                max_tasks_per_client: self.max_tasks_per_client,
                max_module_size: self.max_module_size,
            },
            idle_timeout: Duration::from_secs(60),
            retention: self.retention,
            ephemeral: false,
        };
        let drain = self.drain_timeout;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_stack_size(baton_task::TASK_THREAD_STACK)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async move {
            let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
            let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
            let running = agent::start(opts)?;
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "fingerprint {}", running.fingerprint)?;
                writeln!(out, "listening on {}", running.addr)?;
                out.flush()?;
            }
            tracing::info!(workers, "agent ready");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            Console::global().line("baton: agent stopping: handing tasks back to connected clients");
            let left = running.shutdown(drain).await;
            if left > 0 {
                Console::global().line(&format!(
                    "baton: {left} task(s) were not handed back (their clients are away); they stay in the data dir and continue when an agent starts on it again"
                ));
            }
            Ok(())
        })
    }
}
