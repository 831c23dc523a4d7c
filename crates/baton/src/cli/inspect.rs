//! `baton inspect`: a human summary of a journaled task, a checkpoint file,
//! or a running agent's data directory (its `status.json`).
//!
//! Reads only; never changes a journal.

use std::path::PathBuf;

use anyhow::{Context, Result};
use baton_task::checkpoint::{self, Kind, Summary};
use clap::Args;

use crate::journal::Journal;
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
    let r = journal.record();
    let state = match journal.finished()? {
        Some(f) => format!("finished, status {}", f.exit_status),
        None => "stopped: `baton resume` continues it".to_string(),
    };
    let limits = checkpoint::Limits {
        max_memory: r.max_memory,
        ..Default::default()
    };
    if let (Some(spec), Some(f)) = (&r.remote, journal.finished()?) {
        return Ok(TaskLine {
            id: id.to_string(),
            kind: format!("remote {}", spec.agent),
            runs: "-".to_string(),
            point: Some(f.points),
            state,
        });
    }
    match &r.remote {
        Some(spec) => {
            let rec = crate::store::TaskLog::read(journal.dir(), &limits)?;
            let local = rec
                .record
                .as_deref()
                .and_then(|b| baton_proto::LocalRecord::decode(b).ok());
            let runs = match &local {
                Some(l) => format!(
                    "{} executes, {} responsible",
                    l.agreement.assignment.executor.as_str(),
                    l.agreement.assignment.responsible.as_str()
                ),
                None => "-".to_string(),
            };
            Ok(TaskLine {
                id: id.to_string(),
                kind: format!("remote {}", spec.agent),
                runs,
                point: rec.state.map(|(s, _)| s.point.0),
                state,
            })
        }
        None => {
            let log = std::fs::read(journal.dir().join("points.log")).unwrap_or_default();
            let (_, newest) = scan_log(&log);
            let point = match newest {
                Some(s) => Some(s.point),
                None => std::fs::read(journal.dir().join("base.ckpt"))
                    .ok()
                    .and_then(|b| checkpoint::summarize(&b).ok())
                    .map(|s| s.point),
            };
            Ok(TaskLine {
                id: id.to_string(),
                kind: "local".to_string(),
                runs: "here".to_string(),
                point,
                state,
            })
        }
    }
}

fn show_task(state_dir: &std::path::Path, id: &str) -> Result<()> {
    let journal = Journal::open_to_read(state_dir, id)?;
    let r = journal.record();
    println!("task       {}", r.id);
    println!(
        "module     {} ({})",
        r.module_path,
        &r.module_digest[..12.min(r.module_digest.len())]
    );
    if let Some(spec) = &r.remote {
        let line = task_line(state_dir, id)?;
        println!("remote     {} ({})", spec.agent, spec.fingerprint);
        println!("runs       {}", line.runs);
        println!(
            "point      {} (newest held here)",
            line.point.map_or("-".to_string(), |p| p.to_string())
        );
        println!("state      {}", line.state);
        return Ok(());
    }
    match journal.finished()? {
        Some(f) => println!(
            "state      finished at point {} with status {} (digest {})",
            f.points, f.exit_status, f.digest
        ),
        None => println!(
            "state      stopped; continue with `baton resume {id} --state-dir {}`",
            state_dir.display()
        ),
    }
    let base = journal.dir().join("base.ckpt");
    match std::fs::read(&base)
        .map_err(anyhow::Error::from)
        .and_then(|b| checkpoint::summarize(&b).map_err(anyhow::Error::from))
    {
        Ok(s) => {
            println!("base.ckpt");
            print_summary(&s);
        }
        Err(e) => println!("base.ckpt  unusable: {e:#}"),
    }
    let log = std::fs::read(journal.dir().join("points.log")).unwrap_or_default();
    let (records, newest) = scan_log(&log);
    match newest {
        Some(s) => {
            println!("points.log ({records} points after the base; the newest:)");
            print_summary(&s);
        }
        None => println!("points.log (no points after the base)"),
    }
    Ok(())
}

/// Counts the intact records of a journal log and summarises the last one.
fn scan_log(log: &[u8]) -> (usize, Option<Summary>) {
    let (mut pos, mut count, mut last) = (0usize, 0, None);
    while let Some(len) = log.get(pos..pos + 8) {
        let mut n = [0u8; 8];
        n.copy_from_slice(len);
        let Some(end) = usize::try_from(u64::from_le_bytes(n))
            .ok()
            .and_then(|n| (pos + 8).checked_add(n))
            .filter(|&e| e <= log.len())
        else {
            break;
        };
        match checkpoint::summarize(&log[pos + 8..end]) {
            Ok(s) => last = Some(s),
            Err(_) => break,
        }
        count += 1;
        pos = end;
    }
    (count, last)
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
