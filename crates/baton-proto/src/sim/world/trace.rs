//! A failing seed's trace: the scenario, the faults, and the last events
//! of each side, formatted only when needed.

use super::*;

impl World {
    // ----- trace -----------------------------------------------------------------

    pub(super) fn format_trace(&self) -> String {
        let mut out = String::new();
        let sc = &self.sc;
        let _ = writeln!(
            out,
            "seed {}: {} steps of ~{}ms, remote x{:.2}; latency {}us, loss {:.3}, dup {:.3}, spikes {:.3}; \
             disconnect-after {:?}, takeover-after {:?}; migrate {}, responsible {}, mode {}, precopy {}",
            self.seed,
            sc.steps,
            sc.step_ns / 1_000_000,
            sc.remote_speed,
            sc.latency_ns / 1000,
            sc.loss,
            sc.dup,
            sc.spike,
            sc.disconnect_after,
            sc.takeover_after,
            sc.migrate,
            sc.responsible,
            sc.mode,
            sc.precopy
        );
        let _ = writeln!(out, "faults:");
        for (at, f) in &sc.faults {
            let _ = writeln!(out, "  {:>10.3}s {f:?}", *at as f64 / 1e9);
        }
        let _ = writeln!(out, "last world events:");
        for (at, w) in &self.world_trace {
            let _ = writeln!(out, "  {:>10.3}s {w}", *at as f64 / 1e9);
        }
        for h in &self.hosts {
            let _ = writeln!(out, "last {} events of {}:", h.trace.len(), h.side);
            for (at, t) in &h.trace {
                let line = match t {
                    Tr::Recv(m) => format!("<- {}", brief(m)),
                    Tr::Send(m) => format!("-> {}", brief(m)),
                    Tr::Act(a) => format!("action {}", brief_action(a)),
                    Tr::Ev(e) => format!("event {e:?}"),
                    Tr::Note(n) => n.clone(),
                };
                let _ = writeln!(out, "  {:>10.3}s {line}", *at as f64 / 1e9);
            }
        }
        out
    }
}

fn brief(m: &Message) -> String {
    match m {
        Message::Heartbeat(h) => format!(
            "Heartbeat s{} #{} epoch {} {:?} durable {:?} reached {:?} exec {:?} quiesce {:?}/{:?} out {:?} module {} fin {}",
            h.session.0,
            h.seq,
            h.summary.epoch.0,
            h.summary.assignment,
            h.summary.durable,
            h.summary.reached,
            h.summary.exec,
            h.summary.quiesce,
            h.summary.quiesced,
            h.summary.output,
            h.summary.has_module,
            h.summary.finished.is_some()
        ),
        Message::Hello(h) => format!("Hello s{} epoch {}", h.session.0, h.summary.epoch.0),
        Message::Welcome(w) => format!(
            "Welcome s{} epoch {} durable {:?} exec {:?}",
            w.session.0, w.summary.epoch.0, w.summary.durable, w.summary.exec
        ),
        Message::Checkpoint(c) => format!("Checkpoint s{} {:?}", c.session.0, c.checkpoint),
        Message::Output(o) => format!(
            "Output s{} points {:?}..{:?}",
            o.session.0,
            o.chunks.first().map(|c| c.point),
            o.chunks.last().map(|c| c.point)
        ),
        Message::Module(m) => format!("Module s{}", m.session.0),
        other => format!("{other:?}"),
    }
}

fn brief_action(a: &Action) -> String {
    match a {
        Action::Persist(p) => format!("Persist #{} {:?}", p.seq, p.state),
        Action::Deliver(c) => format!("Deliver {:?}", c.point),
        other => format!("{other:?}"),
    }
}
