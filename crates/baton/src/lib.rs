//! `baton`: extend a machine's computing power onto remote machines,
//! seamlessly across unreliable links.
//!
//! This crate is the product around the three cores (`baton-task` runs a
//! task, `baton-proto` decides, `baton-net` carries): the library behind the
//! `baton` binary. Its rooms, and what each owns:
//!
//! - [`spec`]: the one typed, versioned description of a task
//!   ([`spec::TaskSpec`]): parsed once at the command line, journaled,
//!   sent to the agent and read back on resume.
//! - [`drive`]: the one executor ([`drive::exec::ExecCore`] behind a
//!   [`drive::worker::Worker`]) and the one drive loop ([`drive::Driver`]),
//!   generic over the protocol stub, that every run uses: a local run (the
//!   local stub with migration `never` and no dialer), a remote run's
//!   client and each of the agent's tasks.
//! - [`store`]: what outlives the process: the one log format
//!   ([`store::log::TaskLog`]) for both sides and both kinds of run, the
//!   client's task journals ([`store::journal`]), and the one way to lock a
//!   directory and to write a file atomically ([`store::fs`]).
//! - [`client`]: `baton run` and `baton resume`: setting a run up, the
//!   link to an agent, the event log, the terminal.
//! - [`agent`]: `baton agent`: the listener, routing, admission, each
//!   task's actor, and the data dir (recovery, status, gc).
//! - [`lab`]: an agent in-process behind a fault-injecting relay, for
//!   `baton demo` and the benchmarks.
//! - [`cli`]: thin clap commands; the binary's `main` alone decides the
//!   exit status and prints the one error line.

#![warn(missing_docs, unreachable_pub)]

pub mod agent;
pub mod cli;
pub mod client;
pub mod drive;
pub mod lab;
pub mod spec;
pub mod store;
pub mod units;

/// Exit status when a step trapped (as a native program killed by SIGABRT).
pub const EXIT_TRAP: u8 = 134;
/// Exit status when a limit (--max-step-time, --max-memory) stopped the task.
pub const EXIT_LIMIT: u8 = 124;
/// Exit status for baton's own errors (bad options, unreadable or invalid
/// module, damaged journal, I/O).
pub const EXIT_ERROR: u8 = 125;
/// Exit status after Ctrl-C stopped the task at a point.
pub const EXIT_INTERRUPTED: u8 = 130;
