//! `baton`: extend a machine's computing power onto remote machines,
//! seamlessly across unreliable links.
//!
//! This file owns the command-line entry: parsing, logging set-up, and the
//! one decision of the process's exit status and error line.

mod agent;
mod cli;
mod console;
mod events;
mod exec;
mod journal;
mod link;
mod meta;
mod remote_run;
mod runner;
mod store;
mod units;
mod worker;

use std::process::ExitCode;

use baton_task::TaskError;
use clap::{Parser, Subcommand};

/// Exit status when a step trapped (as a native program killed by SIGABRT).
pub const EXIT_TRAP: u8 = 134;
/// Exit status when a limit (--max-step-time, --max-memory) stopped the task.
pub const EXIT_LIMIT: u8 = 124;
/// Exit status for baton's own errors (bad options, unreadable or invalid
/// module, damaged journal, I/O).
pub const EXIT_ERROR: u8 = 125;
/// Exit status after Ctrl-C stopped the task at a point.
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Run WebAssembly tasks that can stop at any point and continue anywhere, byte-identical."
)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a task (a WASI module) to the end.
    Run(cli::run::RunArgs),
    /// Continue a task journaled with --state-dir from its newest point.
    Resume(cli::resume::ResumeArgs),
    /// Summarise a checkpoint file, journaled tasks or an agent's data dir.
    Inspect(cli::inspect::InspectArgs),
    /// List journaled tasks: where each runs, its point, its state.
    List(cli::list::ListArgs),
    /// Show baton at work on example tasks.
    Demo(cli::demo::DemoArgs),
    /// Serve tasks that clients extend onto this machine.
    Agent(cli::agent::AgentArgs),
    /// Show this machine's client identity (for an agent's authorized-clients file).
    Identity(cli::identity::IdentityArgs),
    /// Measure migration downtime, failover time and sync overhead (BENCHMARKS.md).
    #[command(hide = true)]
    BenchRemote(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message is several lines; the contract is one.
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("bad command line");
            let first = first.trim_start_matches("error:").trim();
            // "…were not provided:" names them on the next line.
            let line = match (first.ends_with(':'), lines.next()) {
                (true, Some(next)) => format!("{first} {next}"),
                _ => first.to_string(),
            };
            eprintln!("baton: error: {line} (see `baton --help`)");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!(
                    "baton={level},baton_task={level},baton_proto={level},baton_net={level}"
                ))
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    if matches!(
        cli.command,
        Command::Inspect(_) | Command::List(_) | Command::Demo(_) | Command::BenchRemote(_)
    ) {
        // These only print: when the reader goes away (`| head`), end
        // quietly as other Unix tools do, instead of failing on every line.
        // `run` keeps SIGPIPE ignored so that a closed stdout does not kill a
        // task; its console then drops the output and says so.
        // SAFETY: restoring the default disposition of a signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Run(args) => args.execute().map(Some),
        Command::Resume(args) => args.execute().map(Some),
        Command::Inspect(args) => args.execute().map(|()| None),
        Command::List(args) => args.execute().map(|()| None),
        Command::Demo(args) => args.execute().map(|()| None),
        Command::Agent(args) => args.execute().map(|()| None),
        Command::Identity(args) => args.execute().map(|()| None),
        Command::BenchRemote(args) => args.execute().map(|()| None),
    };
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(runner::Ending::Finished(status))) => ExitCode::from(status as u8),
        Ok(Some(runner::Ending::Interrupted(_))) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            // Through the console: it erases the status line and starts a
            // fresh line if the task left stderr mid-line.
            console::Console::global().line(&format!("baton: error: {}", one_line(&e)));
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The error and its causes on one line, with what to do where we know it.
/// Control characters (which a module's function names or a trap message
/// could carry) are escaped so that they cannot move the cursor or recolour
/// the terminal.
fn one_line(e: &anyhow::Error) -> String {
    let text: String = format!("{e:#}")
        .chars()
        .flat_map(|c| match c {
            '\n' => " ".chars().collect::<Vec<_>>(),
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect();
    match e.downcast_ref::<TaskError>() {
        Some(TaskError::Trap { .. }) => format!("{text}; this is a bug in the task (or its input)"),
        _ => text,
    }
}

fn exit_status(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<remote_run::TaskFailed>() {
            return match f.kind {
                exec::FailKind::Trap => EXIT_TRAP,
                exec::FailKind::Limit => EXIT_LIMIT,
                exec::FailKind::Error => EXIT_ERROR,
            };
        }
        if let Some(t) = cause.downcast_ref::<TaskError>() {
            return match t {
                TaskError::Trap { .. } => EXIT_TRAP,
                TaskError::StepTimeout { .. }
                | TaskError::MemoryLimit { .. }
                | TaskError::OutOfMemory { .. } => EXIT_LIMIT,
                _ => EXIT_ERROR,
            };
        }
    }
    EXIT_ERROR
}
