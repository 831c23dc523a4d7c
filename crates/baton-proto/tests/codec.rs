//! Property tests of the wire encoding: every message round-trips, and
//! random or truncated bytes give an error, never a panic.

use baton_proto::journal::{LocalRecord, RemoteRecord};
use baton_proto::message::{
    Accept, Ack, CheckpointMsg, Echo, ErrorCode, ErrorMsg, ExecStatus, Finish, FinishedMsg,
    Goodbye, Heartbeat, Hello, ModuleData, OutputMsg, Proposal, Reject, RejectReason, Summary,
    Welcome, WireTiming,
};
use baton_proto::{
    Agreement, Assignment, Blob, Checkpoint, Digest, Epoch, FailKind, Limits, Message, Mode,
    ModuleRef, Outcome, OutputChunk, Point, SessionId, Side, StateRef, TaskId,
};
use proptest::prelude::*;

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Local), Just(Side::Remote)]
}

fn state() -> impl Strategy<Value = StateRef> {
    (any::<u64>(), any::<[u8; 32]>()).prop_map(|(p, d)| StateRef::new(Point(p), Digest(d)))
}

fn blob() -> impl Strategy<Value = Blob> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Blob::from)
}

fn assignment() -> impl Strategy<Value = Assignment> {
    (side(), side(), any::<bool>()).prop_map(|(executor, responsible, sync)| Assignment {
        executor,
        responsible,
        mode: if sync { Mode::Sync } else { Mode::Async },
    })
}

fn fail_kind() -> impl Strategy<Value = FailKind> {
    prop_oneof![
        Just(FailKind::Trap),
        Just(FailKind::Limit),
        Just(FailKind::Error)
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        any::<i32>().prop_map(Outcome::Exit),
        (fail_kind(), ".{0,20}").prop_map(|(kind, reason)| Outcome::Failed { kind, reason }),
        any::<u64>().prop_map(|p| Outcome::Diverged { point: Point(p) }),
    ]
}

fn exec() -> impl Strategy<Value = ExecStatus> {
    prop_oneof![
        Just(ExecStatus::Idle),
        any::<u64>().prop_map(|p| ExecStatus::Running { from: Point(p) }),
        state().prop_map(|at| ExecStatus::Paused { at }),
    ]
}

fn summary() -> impl Strategy<Value = Summary> {
    (
        (
            any::<u64>(),
            assignment(),
            proptest::option::of(state()),
            proptest::option::of(state()),
            exec(),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            any::<u64>(),
        ),
        (
            proptest::option::of((state(), outcome())),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((e, assignment, durable, reached, exec), (q, qd, out), (fin, m, dr, step))| Summary {
                epoch: Epoch(e),
                assignment,
                durable,
                reached,
                exec,
                quiesce: q.map(Epoch),
                quiesced: qd.map(Epoch),
                output: Point(out),
                finished: fin.map(|(state, outcome)| Finish { state, outcome }),
                has_module: m,
                draining: dr,
                step_nanos: step,
            },
        )
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    (state(), proptest::option::of(state()), blob()).prop_map(|(state, base, bytes)| Checkpoint {
        state,
        base,
        bytes,
    })
}

fn message() -> impl Strategy<Value = Message> {
    let s = || any::<u64>().prop_map(SessionId);
    prop_oneof![
        (
            "[a-z0-9-]{0,30}",
            any::<[u8; 32]>(),
            any::<u64>(),
            s(),
            any::<u64>(),
            1..u64::MAX,
            1..u64::MAX,
            summary(),
            blob()
        )
            .prop_map(
                |(t, d, size, session, seq, hb, da, summary, meta)| Message::Hello(Hello {
                    task: TaskId(t),
                    module: ModuleRef {
                        digest: Digest(d),
                        size
                    },
                    session,
                    seq,
                    timing: WireTiming {
                        heartbeat_nanos: hb,
                        disconnect_after_nanos: da
                    },
                    summary,
                    meta,
                })
            ),
        (
            s(),
            any::<u64>(),
            proptest::option::of((any::<u64>(), any::<u64>())),
            summary()
        )
            .prop_map(|(session, seq, e, summary)| Message::Welcome(Welcome {
                session,
                seq,
                echo: e.map(|(seq, held_nanos)| Echo { seq, held_nanos }),
                summary
            })),
        (s(), any::<u64>(), summary()).prop_map(|(session, seq, summary)| Message::Heartbeat(
            Heartbeat {
                session,
                seq,
                echo: None,
                summary
            }
        )),
        s().prop_map(|session| Message::Goodbye(Goodbye { session })),
        (s(), any::<[u8; 32]>(), blob()).prop_map(|(session, d, bytes)| Message::Module(
            ModuleData {
                session,
                module: ModuleRef {
                    digest: Digest(d),
                    size: bytes.len() as u64
                },
                bytes
            }
        )),
        (s(), checkpoint()).prop_map(|(session, checkpoint)| Message::Checkpoint(CheckpointMsg {
            session,
            checkpoint
        })),
        (s(), proptest::option::of(state()))
            .prop_map(|(session, durable)| Message::Ack(Ack { session, durable })),
        (s(), proptest::collection::vec((any::<u64>(), blob()), 0..5)).prop_map(|(session, c)| {
            Message::Output(OutputMsg {
                session,
                chunks: c
                    .into_iter()
                    .map(|(p, bytes)| OutputChunk {
                        point: Point(p),
                        bytes,
                    })
                    .collect(),
            })
        }),
        (s(), any::<u64>(), assignment(), state()).prop_map(|(session, e, assignment, anchor)| {
            Message::Propose(Proposal {
                session,
                epoch: Epoch(e),
                assignment,
                anchor,
            })
        }),
        (s(), any::<u64>()).prop_map(|(session, e)| Message::Accept(Accept {
            session,
            epoch: Epoch(e)
        })),
        (
            s(),
            any::<u64>(),
            prop_oneof![
                Just(RejectReason::Stale),
                Just(RejectReason::NoModule),
                state().prop_map(RejectReason::NewerState)
            ]
        )
            .prop_map(|(session, e, reason)| Message::Reject(Reject {
                session,
                epoch: Epoch(e),
                reason
            })),
        (s(), state(), outcome()).prop_map(|(session, state, outcome)| Message::Finished(
            FinishedMsg {
                session,
                finish: Finish { state, outcome }
            }
        )),
        (s(), ".{0,40}").prop_map(|(session, text)| Message::Error(ErrorMsg {
            session,
            code: ErrorCode::Internal,
            text
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn messages_round_trip(m in message()) {
        let bytes = m.encode();
        prop_assert_eq!(Message::decode(&bytes, &Limits::default()).ok(), Some(m));
    }

    #[test]
    fn truncated_messages_are_errors(m in message(), cut in any::<prop::sample::Index>()) {
        let bytes = m.encode();
        let cut = cut.index(bytes.len());
        prop_assert!(Message::decode(&bytes[..cut], &Limits::default()).is_err());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes, &Limits::default());
        let mut framed = b"bP\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = Message::decode(&framed, &Limits::default());
        let _ = LocalRecord::decode(&bytes);
        let _ = RemoteRecord::decode(&bytes);
    }

    #[test]
    fn corrupted_messages_never_panic(m in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = m.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Message::decode(&bytes, &Limits::default());
    }

    #[test]
    fn records_round_trip(a in assignment(), e in any::<u64>(), d in proptest::option::of(state()), minted in any::<u64>()) {
        let agreement = Agreement { epoch: Epoch(e), assignment: a, anchor: d };
        let l = LocalRecord { agreement, takeover: false, minted, pending: None, durable: d, finished: None, pinned_local: true };
        prop_assert_eq!(LocalRecord::decode(&l.encode()).ok(), Some(l));
        let r = RemoteRecord {
            agreement,
            durable: d,
            output_acked: Point(minted),
            finished: None,
            handed_back: false,
            has_module: true,
            timing: WireTiming { heartbeat_nanos: 1, disconnect_after_nanos: 2 },
        };
        prop_assert_eq!(RemoteRecord::decode(&r.encode()).ok(), Some(r));
    }
}

#[test]
fn hostile_lengths_do_not_allocate() {
    // A checkpoint claiming 2^60 bytes of payload in a 20-byte frame.
    let mut bytes = b"bP\x01".to_vec();
    bytes.push(5); // Message::Checkpoint
    bytes.extend_from_slice(&[1, 0]); // session 1, point 0
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Message::decode(&bytes, &Limits::default()).is_err());
}
