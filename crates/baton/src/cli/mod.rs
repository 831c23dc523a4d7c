//! The command line: one module per subcommand, each an `Args` struct with
//! `execute()`, shared option groups flattened in. Parsing only: the work
//! is the library's, and exit statuses are decided in the binary's `main`.

pub mod agent;
pub mod demo;
pub mod identity;
pub mod inspect;
pub mod list;
pub mod resume;
pub mod run;

use clap::{Parser, Subcommand};

/// `baton`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Run WebAssembly tasks that can stop at any point and continue anywhere, byte-identical."
)]
pub struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task (a WASI module) to the end.
    Run(run::RunArgs),
    /// Continue a journaled task from its newest point (here, or on an agent).
    Resume(resume::ResumeArgs),
    /// Summarise a checkpoint file, journaled tasks or an agent's data dir.
    Inspect(inspect::InspectArgs),
    /// List journaled tasks: where each runs, its point, its state.
    List(list::ListArgs),
    /// Show baton at work on example tasks.
    Demo(demo::DemoArgs),
    /// Serve tasks that clients extend onto this machine.
    Agent(agent::AgentArgs),
    /// Show this machine's client identity (for an agent's authorized-clients file).
    Identity(identity::IdentityArgs),
}
