//! The command line: one module per subcommand, each an `Args` struct with
//! `execute()`. Parsing only; exit statuses are decided in `main`.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod identity;
pub mod inspect;
pub mod list;
pub mod resume;
pub mod run;
