//! What a driver feeds into a stub besides messages and ticks.
//!
//! Owns [`ExecutorEvent`] (news from the task runtime) and [`LinkEvent`]
//! (news from the transport). Plain data.

use crate::state::{Blob, Checkpoint, FailKind, Outcome, StateRef};

/// News from the side's executor (the task runtime driven by the driver).
///
/// The executor contract: after every step the executor stops at the point
/// and reports [`ExecutorEvent::Reached`]; it runs the next step only when
/// the stub says [`crate::Action::Continue`] (or `Run`). So "pause at the next
/// point" is simply the stub not saying `Continue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorEvent {
    /// A step ended: the executor is paused at `state`. `output` is what the
    /// step wrote (stdout and stderr, framed by the driver).
    Reached {
        /// The point reached and its digest.
        state: StateRef,
        /// The step's output.
        output: Blob,
    },
    /// The last step ended and the task finished with `outcome` at `state`.
    Finished {
        /// The final point and its digest.
        state: StateRef,
        /// The last step's output.
        output: Blob,
        /// The exit status (or failure).
        outcome: Outcome,
    },
    /// The step after `at` failed (a trap or a limit). By determinism it
    /// would fail the same way anywhere, so this ends the task.
    Failed {
        /// The point the failed step started from.
        at: StateRef,
        /// What stopped it.
        kind: FailKind,
        /// Why, for the user.
        reason: String,
    },
    /// The answer to [`crate::Action::Capture`].
    Captured(Checkpoint),
    /// [`crate::Action::Capture`] of `state` could not be done (the store
    /// moved on to a newer state before the request was served). The stub
    /// forgets the request and asks again for whatever it holds then.
    CaptureFailed {
        /// The state that was asked for.
        state: StateRef,
    },
}

/// News from the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A connection to the peer is up (the local side may now say `Hello`).
    Connected,
    /// The connection is gone (closed, reset or timed out). The stub treats
    /// the session as lost at once.
    Lost,
}
