//! Every message of the protocol, as Rust types.
//!
//! Owns [`Message`] and its payloads. Messages are plain data with a
//! versioned binary encoding (see [`crate::codec`]); this module must not
//! decide anything: what a stub does with a message lives in the stubs.
//!
//! Almost every message names the session it belongs to; the receiver drops
//! messages of other sessions. Messages are idempotent: a duplicate or a late
//! copy is harmless, which is what lets the protocol run over a link that
//! loses, duplicates and reorders.

use serde::{Deserialize, Serialize};

use crate::roles::{Assignment, Epoch, SessionId};
use crate::state::{Blob, Checkpoint, Digest, Outcome, OutputChunk, Point, StateRef};

/// The name of a task, chosen by the user (`--name`) or made up by the local
/// side. At most [`crate::codec::Limits::max_text`] bytes on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId(pub String);

/// A content-addressed module: its digest and size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRef {
    /// Digest of the module's bytes.
    pub digest: Digest,
    /// Size of the module in bytes.
    pub size: u64,
}

/// What a side's executor is doing, as reported in a [`Summary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecStatus {
    /// Not executing.
    Idle,
    /// Running the step after `from`.
    Running {
        /// The point the step started from.
        from: Point,
    },
    /// Stopped at a point, waiting for the stub's go-ahead.
    Paused {
        /// The state it is paused at.
        at: StateRef,
    },
}

/// How a task finished, with the final state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    /// The final state (the last point).
    pub state: StateRef,
    /// The outcome.
    pub outcome: Outcome,
}

/// Everything a side tells the other about itself, in every `Hello`,
/// `Welcome` and `Heartbeat`.
///
/// A summary doubles as a cumulative acknowledgement: anything a lost
/// `Ack` or `Accept` would have said is also here, so a lost message costs
/// at most one heartbeat interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The epoch of the sender's agreement.
    pub epoch: Epoch,
    /// The sender's agreed assignment.
    pub assignment: Assignment,
    /// The newest state the sender holds durably.
    pub durable: Option<StateRef>,
    /// The newest point the sender's executor reached (live, maybe not
    /// durable).
    pub reached: Option<StateRef>,
    /// What the sender's executor is doing.
    pub exec: ExecStatus,
    /// Local → remote: "keep your executor still until you agree to an epoch
    /// newer than this one" (the local is reconfiguring).
    pub quiesce: Option<Epoch>,
    /// Remote → local: "my executor is still (paused or idle) and stays so
    /// until I agree to an epoch newer than this one".
    pub quiesced: Option<Epoch>,
    /// Local: output delivered through this point. Remote: output produced
    /// through this point.
    pub output: Point,
    /// The task finished on the sender's side (remote) or the local side has
    /// everything and finished (local).
    pub finished: Option<Finish>,
    /// Remote: it holds the module.
    pub has_module: bool,
    /// Remote: the agent drains and wants to hand the task back.
    pub draining: bool,
    /// The sender's measured mean step time in nanoseconds (0: unknown).
    pub step_nanos: u64,
}

/// An echo of the peer's heartbeat, to measure the round-trip time without
/// comparing clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The `seq` of the peer's message being echoed.
    pub seq: u64,
    /// How long the sender held it before this reply, in nanoseconds.
    pub held_nanos: u64,
}

/// The timing the local side dictates for a session (the remote adopts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTiming {
    /// Interval between heartbeats, in nanoseconds.
    pub heartbeat_nanos: u64,
    /// Silence after which a session counts as lost, in nanoseconds.
    pub disconnect_after_nanos: u64,
}

/// Local → remote: open (or re-open) a session for a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The task.
    pub task: TaskId,
    /// The task's module.
    pub module: ModuleRef,
    /// The new session's id (minted by the local side, never reused).
    pub session: SessionId,
    /// Sequence number of this summary within the session.
    pub seq: u64,
    /// Heartbeat and disconnection timing for the session.
    pub timing: WireTiming,
    /// The local side's summary: its epoch, newest point and digest, executor.
    pub summary: Summary,
    /// Opaque bytes for the driver (for example task limits); bounded.
    pub meta: Blob,
}

/// Remote → local: the session is open; here is the remote's summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The session being answered.
    pub session: SessionId,
    /// Sequence number of this summary within the session.
    pub seq: u64,
    /// Echo of the `Hello`, for the round-trip time.
    pub echo: Option<Echo>,
    /// The remote's summary.
    pub summary: Summary,
}

/// Either way, periodically: "I am here", with a summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The session.
    pub session: SessionId,
    /// Sequence number within the session; older summaries are ignored.
    pub seq: u64,
    /// Echo of the newest peer message with a sequence number.
    pub echo: Option<Echo>,
    /// The sender's summary.
    pub summary: Summary,
}

/// Either way: the sender considers the session lost (it timed out). The
/// receiver stops waiting and handles the disconnection at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// The session that ended.
    pub session: SessionId,
}

/// Local → remote, bulk: the module's bytes (sent only if the remote lacks
/// them: modules are content-addressed and sent once per agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleData {
    /// The session.
    pub session: SessionId,
    /// Which module.
    pub module: ModuleRef,
    /// The module's bytes.
    pub bytes: Blob,
}

/// Either way, bulk: a state of the task (full or delta).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMsg {
    /// The session.
    pub session: SessionId,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// Either way: "I now durably hold this state" (sent only after the state
/// is durable). Also sent to tell a sender which base a delta must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The session.
    pub session: SessionId,
    /// The newest state the sender holds durably.
    pub durable: Option<StateRef>,
}

/// Remote → local: output of steps the remote executed, in point order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputMsg {
    /// The session.
    pub session: SessionId,
    /// Output chunks; the local side delivers each point exactly once.
    pub chunks: Vec<OutputChunk>,
}

/// Local → remote: a new agreement to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The session it is valid in (only).
    pub session: SessionId,
    /// The new epoch (newer than any the remote has agreed to).
    pub epoch: Epoch,
    /// Who does what from the anchor on.
    pub assignment: Assignment,
    /// The state the new executor starts from; both executors are still
    /// when it is proposed.
    pub anchor: StateRef,
}

/// Remote → local: the proposal with this epoch is durably recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The session.
    pub session: SessionId,
    /// The accepted epoch.
    pub epoch: Epoch,
}

/// Why the remote refused a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The epoch is not newer than the one the remote holds.
    Stale,
    /// The remote holds a state newer than the anchor.
    NewerState(StateRef),
    /// The remote cannot execute: it lacks the module.
    NoModule,
}

/// Remote → local: the proposal with this epoch will never be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The session.
    pub session: SessionId,
    /// The refused epoch.
    pub epoch: Epoch,
    /// Why.
    pub reason: RejectReason,
}

/// Remote → local: the task finished on the remote side. The final state
/// follows as a checkpoint and the output as `Output` messages; the local
/// side finishes once it holds both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedMsg {
    /// The session.
    pub session: SessionId,
    /// The final state and outcome.
    pub finish: Finish,
}

/// What went wrong, in an [`ErrorMsg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The receiver knows no such task.
    UnknownTask,
    /// The lineages diverge (a digest mismatch at a common point).
    Divergence,
    /// Unsupported request or version.
    Unsupported,
    /// A limit was hit (message size, memory, tasks per client, …).
    Limit,
    /// Anything else.
    Internal,
}

/// Either way: a fatal error for this task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// The session.
    pub session: SessionId,
    /// The kind of error.
    pub code: ErrorCode,
    /// A human-readable explanation (bounded).
    pub text: String,
}

/// A protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Local → remote: open a session.
    Hello(Hello),
    /// Remote → local: the session is open.
    Welcome(Welcome),
    /// Either way: liveness and summary.
    Heartbeat(Heartbeat),
    /// Either way: the sender dropped the session.
    Goodbye(Goodbye),
    /// Local → remote: module bytes.
    Module(ModuleData),
    /// Either way: a state.
    Checkpoint(CheckpointMsg),
    /// Either way: durable acknowledgement of a state.
    Ack(Ack),
    /// Remote → local: output.
    Output(OutputMsg),
    /// Local → remote: a new agreement.
    Propose(Proposal),
    /// Remote → local: agreement recorded.
    Accept(Accept),
    /// Remote → local: proposal refused.
    Reject(Reject),
    /// Remote → local: the task finished remotely.
    Finished(FinishedMsg),
    /// Either way: fatal error.
    Error(ErrorMsg),
}

/// Which logical stream a message travels on. The driver maps each to its
/// own transport stream so that bulk state never starves heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Small, latency-sensitive messages: hello, heartbeats, acks,
    /// agreements, errors.
    Control,
    /// Large messages: modules and checkpoints.
    Bulk,
    /// Task output, in order.
    Output,
}

impl Message {
    /// The session the message belongs to.
    pub fn session(&self) -> SessionId {
        match self {
            Message::Hello(m) => m.session,
            Message::Welcome(m) => m.session,
            Message::Heartbeat(m) => m.session,
            Message::Goodbye(m) => m.session,
            Message::Module(m) => m.session,
            Message::Checkpoint(m) => m.session,
            Message::Ack(m) => m.session,
            Message::Output(m) => m.session,
            Message::Propose(m) => m.session,
            Message::Accept(m) => m.session,
            Message::Reject(m) => m.session,
            Message::Finished(m) => m.session,
            Message::Error(m) => m.session,
        }
    }

    /// The channel the message should travel on.
    pub fn channel(&self) -> Channel {
        match self {
            Message::Module(_) | Message::Checkpoint(_) => Channel::Bulk,
            Message::Output(_) => Channel::Output,
            _ => Channel::Control,
        }
    }

    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Heartbeat(_) => "Heartbeat",
            Message::Goodbye(_) => "Goodbye",
            Message::Module(_) => "Module",
            Message::Checkpoint(_) => "Checkpoint",
            Message::Ack(_) => "Ack",
            Message::Output(_) => "Output",
            Message::Propose(_) => "Propose",
            Message::Accept(_) => "Accept",
            Message::Reject(_) => "Reject",
            Message::Finished(_) => "Finished",
            Message::Error(_) => "Error",
        }
    }
}
