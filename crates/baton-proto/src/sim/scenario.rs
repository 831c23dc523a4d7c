//! One seed's world: the task, the settings and the fault schedule, all
//! drawn from the seed.

use core::time::Duration;

use crate::policy::{AutoMigrate, CostModel, Migrate, ModeChoice, Responsible};
use crate::roles::Side;
use crate::sim::rng::Rng;
use crate::state::Point;

const MS: u64 = 1_000_000;

/// A fault (or user command) at a moment of the run.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Cut the link in one direction (`Some(0)`: local → remote, `Some(1)`:
    /// remote → local) or both (`None`), healing after `heal` (or never).
    Cut {
        dir: Option<usize>,
        heal: Option<u64>,
    },
    /// Kill a side (losing everything not persisted); restart after the
    /// delay, or never.
    Crash { side: Side, restart: Option<u64> },
    /// A side's clock jumps forward.
    ClockJump { side: Side, by: u64 },
    /// A side stops processing for a while (laptop lid closed).
    Freeze { side: Side, dur: u64 },
    /// The client's address changes: what is in flight is lost, and the
    /// connection may be reset.
    AddressChange { reset: bool },
    /// The user asks the task to run on a side.
    Migrate(Side),
    /// The agent drains.
    Drain,
}

/// Everything one seed decided.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) steps: u64,
    pub(crate) step_ns: u64,
    pub(crate) remote_speed: f64,
    pub(crate) latency_ns: u64,
    pub(crate) jitter_ns: u64,
    pub(crate) loss: f64,
    pub(crate) dup: f64,
    pub(crate) spike: f64,
    pub(crate) spike_ns: u64,
    pub(crate) bandwidth: u64,
    pub(crate) full_bytes: u64,
    pub(crate) delta_bytes: u64,
    pub(crate) persist_ns: u64,
    pub(crate) disconnect_after: Duration,
    pub(crate) takeover_after: Duration,
    pub(crate) migrate: Migrate,
    pub(crate) responsible: Responsible,
    pub(crate) mode: ModeChoice,
    pub(crate) precopy: bool,
    pub(crate) faults: Vec<(u64, Fault)>,
    pub(crate) faults_end: u64,
}

impl Scenario {
    pub(crate) fn draw(rng: &mut Rng) -> Scenario {
        let steps = rng.range(20, 100);
        let step_ns = rng.range(5, 60) * MS;
        let remote_speed = 0.3 + rng.f64() * 1.2;
        let latency_ns = rng.range(200_000, 30 * MS);
        let jitter_ns = latency_ns / rng.range(2, 10);
        let loss = if rng.chance(0.4) {
            0.0
        } else {
            rng.f64() * 0.05
        };
        let dup = if rng.chance(0.5) {
            0.0
        } else {
            rng.f64() * 0.06
        };
        let spike = if rng.chance(0.5) {
            0.0
        } else {
            rng.f64() * 0.02
        };
        let spike_ns = rng.range(100, 5000) * MS;
        let bandwidth = rng.range(5, 200) * 1_000_000;
        let full_bytes = rng.range(64 << 10, 16 << 20);
        let delta_bytes = (full_bytes as f64 * (0.01 + rng.f64() * 0.3)) as u64;
        let persist_ns = rng.range(50_000, 5 * MS);
        let disconnect_after =
            Duration::from_millis([100, 200, 400, 1000][rng.range(0, 3) as usize]);
        let takeover_after = disconnect_after * rng.range(2, 8) as u32;
        let migrate = match rng.weighted(&[40, 20, 15, 15, 10]) {
            0 => Migrate::Start,
            1 => Migrate::AtPoint(Point(rng.range(1, steps / 2))),
            2 => Migrate::After(Duration::from_nanos(rng.range(1, steps / 2) * step_ns)),
            3 => Migrate::Auto(AutoMigrate {
                min_local: Duration::from_nanos(step_ns * 5),
                min_speedup: 1.2,
            }),
            _ => Migrate::Never,
        };
        let responsible = match rng.weighted(&[35, 35, 30]) {
            0 => Responsible::Local,
            1 => Responsible::Remote,
            _ => Responsible::Auto(CostModel {
                prior: Duration::from_secs(5),
                hysteresis: 1.25,
                min_dwell: Duration::from_secs(1),
            }),
        };
        let mode = match rng.weighted(&[60, 20, 20]) {
            0 => ModeChoice::Auto,
            1 => ModeChoice::Sync,
            _ => ModeChoice::Async,
        };
        let precopy = rng.chance(0.8);

        // Faults fall within the task's undisturbed run time, plus a margin.
        let run = steps * step_ns;
        let window = run + run / 2 + 500 * MS;
        let d = disconnect_after.as_nanos() as u64;
        let t = takeover_after.as_nanos() as u64;
        let count = rng.weighted(&[5, 15, 20, 20, 15, 10, 8, 7]);
        let mut faults = Vec::new();
        for _ in 0..count {
            let at = rng.range(0, window);
            let side = if rng.chance(0.5) {
                Side::Local
            } else {
                Side::Remote
            };
            let fault = match rng.weighted(&[40, 20, 8, 8, 8, 10, 4]) {
                0 => {
                    let dir = match rng.weighted(&[70, 15, 15]) {
                        0 => None,
                        1 => Some(0),
                        _ => Some(1),
                    };
                    let heal = match rng.weighted(&[35, 35, 25, 5]) {
                        0 => Some(rng.range(d / 10, d)),
                        1 => Some(rng.range(d, 3 * d)),
                        2 => Some(rng.range(t, 3 * t)),
                        _ => None,
                    };
                    Fault::Cut { dir, heal }
                }
                1 => {
                    let restart = if rng.chance(0.08) {
                        None
                    } else {
                        Some(rng.range(0, 3 * d + t))
                    };
                    Fault::Crash { side, restart }
                }
                2 => Fault::ClockJump {
                    side,
                    by: rng.range(d / 2, 4 * t),
                },
                3 => Fault::Freeze {
                    side,
                    dur: rng.range(d / 4, 2 * t),
                },
                4 => Fault::AddressChange {
                    reset: rng.chance(0.5),
                },
                5 => Fault::Migrate(if rng.chance(0.6) {
                    Side::Local
                } else {
                    Side::Remote
                }),
                _ => Fault::Drain,
            };
            faults.push((at, fault));
        }
        faults.sort_by_key(|(at, _)| *at);
        let faults_end = faults
            .iter()
            .map(|(at, f)| match f {
                Fault::Cut { heal: Some(h), .. } => at + h,
                Fault::Crash {
                    restart: Some(r), ..
                } => at + r,
                Fault::Freeze { dur, .. } => at + dur,
                _ => *at,
            })
            .max()
            .unwrap_or(0);
        Scenario {
            steps,
            step_ns,
            remote_speed,
            latency_ns,
            jitter_ns,
            loss,
            dup,
            spike,
            spike_ns,
            bandwidth,
            full_bytes,
            delta_bytes,
            persist_ns,
            disconnect_after,
            takeover_after,
            migrate,
            responsible,
            mode,
            precopy,
            faults,
            faults_end,
        }
    }
}
