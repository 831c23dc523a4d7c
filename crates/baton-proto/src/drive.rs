//! The one drain every driver runs after every input.
//!
//! Owns [`Stub`] (what the local and the remote stub have in common, as seen
//! by a driver), [`Sink`] (what a driver does with each output) and
//! [`drain`], the only place where the order of the `poll_*` calls is
//! written down. Drivers (the async ones in `baton`, the simulator) call
//! [`drain`] instead of polling by hand, so that none can get the order
//! wrong. This module holds no state and does no IO: it only moves outputs
//! from a stub to a sink.

use crate::input::{ExecutorEvent, LinkEvent};
use crate::local::LocalStub;
use crate::message::Message;
use crate::output::{Action, Event, Transmit};
use crate::remote::RemoteStub;
use crate::time::Time;

/// A side of a task as a driver sees it: inputs in, outputs out.
///
/// Implemented by [`LocalStub`] and [`RemoteStub`]; each method is the
/// inherent method of the same name. Side-specific commands (such as
/// [`LocalStub::migrate`] or [`RemoteStub::drain`]) stay inherent.
pub trait Stub {
    /// A message from the peer arrived.
    fn handle_message(&mut self, now: Time, msg: Message);
    /// The side's executor reports.
    fn handle_executor(&mut self, now: Time, ev: ExecutorEvent);
    /// Every persist request through `seq` is durable.
    fn handle_persisted(&mut self, now: Time, seq: u64);
    /// The transport reports.
    fn handle_link(&mut self, now: Time, ev: LinkEvent);
    /// The time from [`Stub::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Time);
    /// The next thing the driver must do.
    #[must_use]
    fn poll_action(&mut self) -> Option<Action>;
    /// The next message to send.
    #[must_use]
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next event for the log.
    #[must_use]
    fn poll_event(&mut self) -> Option<Event>;
    /// When to call [`Stub::handle_timeout`] next.
    #[must_use]
    fn poll_timeout(&self) -> Option<Time>;
}

/// What a driver does with each output of a stub, called by [`drain`].
///
/// A sink has no access to the stub: it cannot feed an answer (an executor
/// event, a completed write) back while the drain runs. It records what it
/// started, and the driver feeds the answers after [`drain`] returns, each
/// followed by another [`drain`].
pub trait Sink {
    /// Do this [`Action`] (drive the executor, persist, deliver, finish).
    /// Actions come in the order the stub emitted them and must be done in
    /// that order: writes complete in sequence, output is delivered in order.
    fn action(&mut self, action: Action);
    /// Send this message on its [`Transmit::channel`].
    fn transmit(&mut self, t: Transmit);
    /// Log this event (`--events`).
    fn event(&mut self, e: Event);
}

/// Moves every pending output of `stub` into `sink`, in the order every
/// driver must follow, and returns when to call [`Stub::handle_timeout`].
///
/// The order is: every action, then every transmit, then every event, then
/// [`Stub::poll_timeout`]. Actions go first so that what the stub asked of
/// its own side (stop the executor, start a write, run the next step) is
/// under way before the peer can react to a message of the same drain;
/// events go last because they report what the outputs before them did.
///
/// Call it after **every** input (`handle_*`). Answers that the sink's
/// actions produce (executor events, completed writes) are fed back only
/// after it returns, and each such input is followed by another `drain`.
/// Until then the driver sleeps until the returned time (if any) or the
/// next input, whichever comes first.
pub fn drain<S: Stub + ?Sized, K: Sink + ?Sized>(stub: &mut S, sink: &mut K) -> Option<Time> {
    while let Some(a) = stub.poll_action() {
        sink.action(a);
    }
    while let Some(t) = stub.poll_transmit() {
        sink.transmit(t);
    }
    while let Some(e) = stub.poll_event() {
        sink.event(e);
    }
    stub.poll_timeout()
}

/// Forwards the [`Stub`] methods to the inherent ones of the same name.
macro_rules! impl_stub {
    ($t:ty) => {
        impl Stub for $t {
            fn handle_message(&mut self, now: Time, msg: Message) {
                <$t>::handle_message(self, now, msg)
            }
            fn handle_executor(&mut self, now: Time, ev: ExecutorEvent) {
                <$t>::handle_executor(self, now, ev)
            }
            fn handle_persisted(&mut self, now: Time, seq: u64) {
                <$t>::handle_persisted(self, now, seq)
            }
            fn handle_link(&mut self, now: Time, ev: LinkEvent) {
                <$t>::handle_link(self, now, ev)
            }
            fn handle_timeout(&mut self, now: Time) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_action(&mut self) -> Option<Action> {
                <$t>::poll_action(self)
            }
            fn poll_transmit(&mut self) -> Option<Transmit> {
                <$t>::poll_transmit(self)
            }
            fn poll_event(&mut self) -> Option<Event> {
                <$t>::poll_event(self)
            }
            fn poll_timeout(&self) -> Option<Time> {
                <$t>::poll_timeout(self)
            }
        }
    };
}

impl_stub!(LocalStub);
impl_stub!(RemoteStub);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::LocalConfig;
    use crate::message::{ModuleRef, TaskId};
    use crate::policy::Migrate;
    use crate::state::{Blob, Digest, Point, StateRef};

    /// Records the kind of each call, to check the order.
    #[derive(Default)]
    struct Log(Vec<&'static str>);

    impl Sink for Log {
        fn action(&mut self, _: Action) {
            self.0.push("action");
        }
        fn transmit(&mut self, _: Transmit) {
            self.0.push("transmit");
        }
        fn event(&mut self, _: Event) {
            self.0.push("event");
        }
    }

    /// A stub whose queues are given up front.
    struct Canned {
        actions: Vec<Action>,
        transmits: Vec<Transmit>,
        events: Vec<Event>,
        timeout: Option<Time>,
    }

    impl Stub for Canned {
        fn handle_message(&mut self, _: Time, _: Message) {}
        fn handle_executor(&mut self, _: Time, _: ExecutorEvent) {}
        fn handle_persisted(&mut self, _: Time, _: u64) {}
        fn handle_link(&mut self, _: Time, _: LinkEvent) {}
        fn handle_timeout(&mut self, _: Time) {}
        fn poll_action(&mut self) -> Option<Action> {
            self.actions.pop()
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.transmits.pop()
        }
        fn poll_event(&mut self) -> Option<Event> {
            self.events.pop()
        }
        fn poll_timeout(&self) -> Option<Time> {
            self.timeout
        }
    }

    #[test]
    fn drains_actions_then_transmits_then_events() {
        let goodbye = Message::Goodbye(crate::message::Goodbye {
            session: crate::roles::SessionId(1),
        });
        let mut stub = Canned {
            actions: vec![
                Action::Continue {
                    batch: crate::output::Batch::ONE,
                },
                Action::Stop,
            ],
            transmits: vec![Transmit::new(goodbye)],
            events: vec![Event::Divergence {
                point: Point(1),
                local: Digest([1; 32]),
                remote: Digest([2; 32]),
            }],
            timeout: Some(Time::from_nanos(5)),
        };
        let mut log = Log::default();
        assert_eq!(drain(&mut stub, &mut log), Some(Time::from_nanos(5)));
        assert_eq!(log.0, ["action", "action", "transmit", "event"]);
        // Nothing is left, and a second drain finds nothing.
        let mut again = Log::default();
        assert_eq!(drain(&mut stub, &mut again), Some(Time::from_nanos(5)));
        assert!(again.0.is_empty());
    }

    #[test]
    fn works_through_a_trait_object() {
        let mut cfg = LocalConfig::new(
            TaskId("t".into()),
            ModuleRef {
                digest: Digest([0; 32]),
                size: 0,
            },
            Blob::default(),
        );
        cfg.migrate = Arc::new(Migrate::Never);
        let start = StateRef::new(Point(0), Digest([0; 32]));
        let mut local = LocalStub::new(cfg, Time::ZERO, start);
        let stub: &mut dyn Stub = &mut local;
        let sink: &mut dyn Sink = &mut Log::default();
        let _ = drain(stub, sink);
        assert!(stub.poll_action().is_none());
        assert!(stub.poll_transmit().is_none());
        assert!(stub.poll_event().is_none());
    }
}
