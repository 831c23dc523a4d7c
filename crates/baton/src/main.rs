//! `baton`: extend a machine's computing power onto remote machines,
//! seamlessly across unreliable links.
//!
//! This file owns the command-line entry: parsing, logging set-up, and the
//! one decision of the process's exit status and error line.

use std::process::ExitCode;

use baton::cli::{Cli, Command};
use baton::client::console::Console;
use baton::client::session::{Ending, TaskFailed};
use baton::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_LIMIT, EXIT_TRAP};
use baton_proto::FailKind;
use baton_task::TaskError;
use clap::Parser;

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
        Command::Inspect(_) | Command::List(_) | Command::Demo(_)
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
    };
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Ending::Finished(status))) => ExitCode::from(status as u8),
        Ok(Some(Ending::Interrupted(_))) => ExitCode::from(EXIT_INTERRUPTED),
        Err(e) => {
            // Through the console: it erases the status line and starts a
            // fresh line if the task left stderr mid-line.
            Console::global().line(&format!("baton: error: {}", one_line(&e)));
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
        if let Some(f) = cause.downcast_ref::<TaskFailed>() {
            return match f.kind {
                FailKind::Trap => EXIT_TRAP,
                FailKind::Limit => EXIT_LIMIT,
                FailKind::Error => EXIT_ERROR,
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
