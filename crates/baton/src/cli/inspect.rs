//! `baton inspect`: a human summary of a journaled task, a checkpoint file,
//! or a running agent's data directory (its `status.json`).
//!
//! Reads only; never changes a journal.

use std::path::PathBuf;

use anyhow::{Context, Result};
use baton_task::checkpoint::{self, Kind, Summary};
use clap::Args;

use crate::store::journal::Journal;
use crate::units::human_bytes;

/// Options of `baton inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A checkpoint file, a task's journal directory, a state directory
    /// (with --id, or to list every task in it), or an agent's data directory.
    pub path: PathBuf,
    /// With a state directory: the task to show.
    #[arg(long)]
    pub id: Option<String>,
}

impl InspectArgs {
    /// Prints the summary.
    ///
    /// # Errors
    ///
    /// Unreadable or damaged files.
    pub fn execute(self) -> Result<()> {
        if self.path.is_file() {
            let bytes = std::fs::read(&self.path)
                .with_context(|| format!("cannot read {}", self.path.display()))?;
            let s = checkpoint::summarize(&bytes)
                .with_context(|| format!("{} is not a usable checkpoint", self.path.display()))?;
            println!("checkpoint {}", self.path.display());
            print_summary(&s);
            return Ok(());
        }
        if let Some(id) = &self.id {
            return show_task(&self.path, id);
        }
        if self.path.join("status.json").is_file() {
            return show_agent(&self.path);
        }
        if self.path.join("task.json").is_file() {
            let id = self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parent = self.path.parent().map(PathBuf::from).unwrap_or_default();
            return show_task(&parent, &id);
        }
        let mut ids: Vec<String> = std::fs::read_dir(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("task.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        if ids.is_empty() {
            println!("no journaled tasks in {}", self.path.display());
        }
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                println!();
            }
            if let Err(e) = show_task(&self.path, id) {
                println!("task {id}: {e:#}");
            }
        }
        Ok(())
    }
}

/// An agent's status, as it last wrote it.
fn show_agent(dir: &std::path::Path) -> Result<()> {
    let path = dir.join("status.json");
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let st: crate::agent::AgentStatus = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an agent status file", path.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let age = now.saturating_sub(st.updated_unix_ms) as f64 / 1000.0;
    println!("agent      {} (pid {})", st.listening, st.pid);
    println!("identity   {}", st.fingerprint);
    println!("workers    {}", st.workers);
    if age > 5.0 {
        println!("updated    {age:.0} s ago: the agent is probably not running");
    } else {
        println!("updated    {age:.1} s ago");
    }
    println!("tasks      {}", st.tasks.len());
    for t in &st.tasks {
        let client = t.client.get(..19).unwrap_or(&t.client);
        let state = match (&t.finished, t.executing) {
            (Some(f), _) => format!("finished {f}"),
            (None, true) => "executing".to_string(),
            (None, false) => "idle".to_string(),
        };
        println!(
            "  {}  client {client}…  point {}  {} executes, {} responsible, {}, epoch {}  {state}  {}",
            t.task,
            t.point.map_or("-".to_string(), |p| p.to_string()),
            t.executor,
            t.responsible,
            t.mode,
            t.epoch,
            if t.connected { "connected" } else { "client away" },
        );
    }
    Ok(())
}

/// How a task run on this machine finds the pages a step changed (what a
/// `baton resume` here would use).
fn dirty_pages_here() -> String {
    match baton_task::DirtyTracking::best() {
        (t, None) => format!("pages: {} on this machine", t.describe()),
        (t, Some(why)) => format!("pages: {} on this machine ({why})", t.describe()),
    }
}

/// One journaled task, as `baton list` shows it.
pub struct TaskLine {
    /// The task's id.
    pub id: String,
    /// `local`, or the agent it extends onto.
    pub kind: String,
    /// Where it runs (remote runs: the agreed executor, and who is
    /// responsible).
    pub runs: String,
    /// The newest point journaled here.
    pub point: Option<u64>,
    /// finished / stopped (resumable).
    pub state: String,
}

/// Summarises one journaled task without changing its journal.
///
/// # Errors
///
/// An unreadable or damaged journal.
pub fn task_line(state_dir: &std::path::Path, id: &str) -> Result<TaskLine> {
    let journal = Journal::open_to_read(state_dir, id)?;
    let spec = journal.spec();
    let kind = match &spec.remote {
        Some(t) => format!("remote {}", t.agent),
        None => "local".to_string(),
    };
    if let Some(f) = journal.finished()? {
        return Ok(TaskLine {
            id: id.to_string(),
            kind,
            runs: "-".to_string(),
            point: Some(f.points),
            state: format!("finished, status {}", f.exit_status),
        });
    }
    let rec = journal.read_log()?;
    let local = rec
        .record
        .as_deref()
        .and_then(|b| baton_proto::LocalRecord::decode(b).ok());
    let runs = match (&local, &spec.remote) {
        (Some(l), Some(_)) => format!(
            "{} executes, {} responsible",
            l.agreement.assignment.executor.as_str(),
            l.agreement.assignment.responsible.as_str()
        ),
        (_, None) => "here".to_string(),
        (None, Some(_)) => "-".to_string(),
    };
    Ok(TaskLine {
        id: id.to_string(),
        kind,
        runs,
        point: rec.state.map(|(s, _)| s.point.0),
        state: "stopped: `baton resume` continues it".to_string(),
    })
}

fn show_task(state_dir: &std::path::Path, id: &str) -> Result<()> {
    let journal = Journal::open_to_read(state_dir, id)?;
    let spec = journal.spec();
    println!("task       {}", spec.id);
    println!(
        "module     {} ({})",
        spec.module.path,
        &spec.module.digest[..12.min(spec.module.digest.len())]
    );
    println!("args       {}", spec.args.join(" "));
    println!(
        "limits     memory {}, step time {}",
        human_bytes(spec.limits.max_memory),
        spec.limits
            .max_step_time_ms
            .map_or("unlimited".to_string(), |ms| format!("{ms} ms"))
    );
    if let Some(t) = &spec.remote {
        println!("remote     {} ({})", t.agent, t.fingerprint);
    }
    println!("sync       every {}", spec.policy.sync_every);
    println!("dirty      {}", dirty_pages_here());
    if let Some(f) = journal.finished()? {
        println!(
            "state      finished at point {} with status {}",
            f.points, f.exit_status
        );
        println!("  point    {}", f.points);
        println!("  digest   {}", f.digest);
        if let Some(m) = f.memory {
            println!("  memory   {}", human_bytes(m));
        }
        return Ok(());
    }
    let line = task_line(state_dir, id)?;
    println!("runs       {}", line.runs);
    println!(
        "state      stopped; continue with `baton resume {id} --state-dir {}`",
        state_dir.display()
    );
    let rec = journal.read_log()?;
    if let Some(d) = &rec.damage {
        println!("log        damaged: {d} (a resume goes on from the newest intact point)");
    }
    match &rec.state {
        Some((r, st)) => {
            println!("newest state in the log");
            println!("  point    {}", r.point.0);
            println!("  digest   {}", r.digest);
            println!("  memory   {}", human_bytes(st.memory().len() as u64));
            if let Some(status) = st.finished {
                println!("  finished with status {status}");
            }
            println!("  output   shown through point {}", rec.delivered.0);
        }
        None => println!("log        holds no usable state"),
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    println!("  point    {}", s.point);
    println!("  digest   {}", s.digest);
    println!("  module   {}", s.module);
    println!("  memory   {}", human_bytes(s.memory_len));
    match s.kind {
        Kind::Full => println!("  kind     full ({} non-zero pages)", s.page_count),
        Kind::Delta { base } => println!(
            "  kind     delta of {} pages against {}",
            s.page_count,
            base.short()
        ),
    }
    if let Some(status) = s.finished {
        println!("  finished with status {status}");
    }
    println!("  size     {}", human_bytes(s.encoded_len as u64));
}
