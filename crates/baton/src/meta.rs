//! What the client tells the agent about a task besides its state: the
//! limits and clock it runs under, carried in `Hello.meta`.
//!
//! Owns [`TaskMeta`] and its encoding (JSON, bounded by the protocol's meta
//! limit). It must not decide whether the agent admits the task: that is
//! the agent's.

use std::time::Duration;

use baton_task::wasi::ClockMode;
use baton_task::Limits;
use serde::{Deserialize, Serialize};

/// Largest encoded meta accepted.
const MAX_META: usize = 4096;

/// Settings a task keeps wherever it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// `--max-memory`: part of the task's behaviour (memory.grow fails
    /// beyond it), so an agent must honour it exactly or refuse the task.
    pub max_memory: u64,
    /// `--max-step-time` in milliseconds.
    pub max_step_time_ms: Option<u64>,
    /// `None` for the wall clock, else the virtual clock's start.
    pub virtual_clock_start_ns: Option<u64>,
}

impl TaskMeta {
    /// The meta of a task with these limits and clock.
    pub fn new(limits: Limits, clock: ClockMode) -> TaskMeta {
        TaskMeta {
            max_memory: limits.max_memory,
            max_step_time_ms: limits.max_step_time.map(|d| d.as_millis() as u64),
            virtual_clock_start_ns: match clock {
                ClockMode::Virtual { start_realtime_ns } => Some(start_realtime_ns),
                ClockMode::Wall => None,
            },
        }
    }

    /// Encodes for `Hello.meta`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes `Hello.meta`.
    ///
    /// # Errors
    ///
    /// A text saying what is wrong, for the client.
    pub fn decode(bytes: &[u8]) -> Result<TaskMeta, String> {
        if bytes.len() > MAX_META {
            return Err(format!("task settings too large ({} bytes)", bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable task settings: {e}"))
    }

    /// The task's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_memory: self.max_memory,
            max_step_time: self.max_step_time_ms.map(Duration::from_millis),
        }
    }

    /// The task's clock.
    pub fn clock(&self) -> ClockMode {
        match self.virtual_clock_start_ns {
            Some(start_realtime_ns) => ClockMode::Virtual { start_realtime_ns },
            None => ClockMode::Wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_input() {
        let m = TaskMeta::new(
            Limits {
                max_memory: 1 << 20,
                max_step_time: Some(Duration::from_millis(250)),
            },
            ClockMode::Virtual {
                start_realtime_ns: 7,
            },
        );
        assert_eq!(TaskMeta::decode(&m.encode()).unwrap(), m);
        assert!(TaskMeta::decode(b"{").is_err());
        assert!(TaskMeta::decode(&vec![b' '; MAX_META + 1]).is_err());
        assert!(TaskMeta::decode(br#"{"max_memory":-1}"#).is_err());
    }
}
