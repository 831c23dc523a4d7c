//! Golden bytes: frames written by earlier releases still decode, and the
//! current encoding does not change unnoticed.
//!
//! The legacy frames below were produced by the release before
//! [`FailKind`] existed, when a failure crossed the wire as
//! `Outcome::Failed(String)` with the kind as a text prefix (`"[trap] "`).
//! Journals on disk hold such frames; they must keep decoding. Never edit
//! a legacy constant: add a new one when the encoding changes again.

use baton_proto::journal::{LocalRecord, RemoteRecord};
use baton_proto::message::{Finish, FinishedMsg, WireTiming};
use baton_proto::{
    Agreement, Assignment, Digest, Epoch, FailKind, Limits, Message, Mode, Outcome, Point,
    SessionId, Side, StateRef,
};

// ----- frames written by the release before `FailKind`, byte for byte -----

/// A `LocalRecord` that finished with `Failed("[trap] unreachable")`.
const LEGACY_LOCAL: &str =
    "624a010301000001022222222222222222222222222222222222222222222222222222222222222222000500\
    0107111111111111111111111111111111111111111111111111111111111111111101071111111111111111\
    11111111111111111111111111111111111111111111111101125b747261705d20756e726561636861626c65\
    00";
/// A `RemoteRecord` that finished with `Failed("[trap] unreachable")`.
const LEGACY_REMOTE: &str =
    "624a010301000001022222222222222222222222222222222222222222222222222222222222222222010711\
    1111111111111111111111111111111111111111111111111111111111111106010711111111111111111111\
    1111111111111111111111111111111111111111111101125b747261705d20756e726561636861626c650001\
    80e59a778094ebdc03";
/// `Finished` messages with `Failed("[trap] unreachable")`,
/// `Failed("[limit] step took too long")` and `Failed("no task to step")`.
const LEGACY_MSG_TRAP: &str =
    "6250010b0407111111111111111111111111111111111111111111111111111111111111111101125b747261\
    705d20756e726561636861626c65";
const LEGACY_MSG_LIMIT: &str =
    "6250010b04071111111111111111111111111111111111111111111111111111111111111111011a5b6c696d\
    69745d207374657020746f6f6b20746f6f206c6f6e67";
const LEGACY_MSG_PLAIN: &str =
    "6250010b04071111111111111111111111111111111111111111111111111111111111111111010f6e6f2074\
    61736b20746f2073746570";

// ----- the same values as this release writes them -----

/// The record of `LEGACY_LOCAL` with the typed `Failed { Trap, "unreachable" }`.
const CURRENT_LOCAL: &str =
    "624a010301000001022222222222222222222222222222222222222222222222222222222222222222000500\
    0107111111111111111111111111111111111111111111111111111111111111111101071111111111111111\
    11111111111111111111111111111111111111111111111103000b756e726561636861626c6500";
/// The record of `LEGACY_REMOTE`, likewise.
const CURRENT_REMOTE: &str =
    "624a010301000001022222222222222222222222222222222222222222222222222222222222222222010711\
    1111111111111111111111111111111111111111111111111111111111111106010711111111111111111111\
    1111111111111111111111111111111111111111111103000b756e726561636861626c65000180e59a778094\
    ebdc03";
/// The message of `LEGACY_MSG_TRAP`, likewise.
const CURRENT_MSG_TRAP: &str =
    "6250010b0407111111111111111111111111111111111111111111111111111111111111111103000b756e72\
    6561636861626c65";

/// 32 bytes of 0x11 and of 0x22 (the digests used below).
const D11: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const D22: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// "[trap] unreachable", "[limit] step took too long", "no task to step".
const TRAP_TEXT: &str = "5b747261705d20756e726561636861626c65";
const LIMIT_TEXT: &str = "5b6c696d69745d207374657020746f6f6b20746f6f206c6f6e67";
const PLAIN_TEXT: &str = "6e6f207461736b20746f2073746570";
/// "unreachable".
const UNREACHABLE: &str = "756e726561636861626c65";

/// Joins hex pieces into bytes (the pieces are this file's constants).
fn bytes(pieces: &[&str]) -> Vec<u8> {
    let hex: String = pieces.concat();
    assert!(hex.len().is_multiple_of(2), "odd hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn state() -> StateRef {
    StateRef::new(Point(7), Digest([0x11; 32]))
}

fn agreement() -> Agreement {
    Agreement {
        epoch: Epoch(3),
        assignment: Assignment {
            executor: Side::Remote,
            responsible: Side::Local,
            mode: Mode::Sync,
        },
        anchor: Some(StateRef::new(Point(2), Digest([0x22; 32]))),
    }
}

fn failed(kind: FailKind, reason: &str) -> Finish {
    Finish {
        state: state(),
        outcome: Outcome::Failed {
            kind,
            reason: reason.into(),
        },
    }
}

fn local_record(finish: Finish) -> LocalRecord {
    LocalRecord {
        agreement: agreement(),
        takeover: false,
        minted: 5,
        pending: None,
        durable: Some(state()),
        finished: Some(finish),
        pinned_local: false,
    }
}

fn remote_record(finish: Finish) -> RemoteRecord {
    RemoteRecord {
        agreement: agreement(),
        durable: Some(state()),
        output_acked: Point(6),
        finished: Some(finish),
        handed_back: false,
        has_module: true,
        timing: WireTiming {
            heartbeat_nanos: 250_000_000,
            disconnect_after_nanos: 1_000_000_000,
        },
    }
}

fn finished_msg(finish: Finish) -> Message {
    Message::Finished(FinishedMsg {
        session: SessionId(4),
        finish,
    })
}

// ----- the pieces of each frame, shared by the legacy and current forms -----

/// Journal frame header, then the agreement: epoch 3, executor remote,
/// responsible local, sync, anchor Some(#2:2222…).
const RECORD_HEAD: [&str; 6] = ["624a01", "03", "01", "00", "00", "01"];
const ANCHOR: [&str; 2] = ["02", D22];
/// Some(#7:1111…): a durable state, or the final state of a `Finish`.
const SOME_STATE: [&str; 3] = ["01", "07", D11];

fn local_frame(outcome: &[&str]) -> Vec<u8> {
    let mut p: Vec<&str> = RECORD_HEAD.to_vec();
    p.extend(ANCHOR);
    p.extend(["00", "05", "00"]); // takeover false, minted 5, pending None
    p.extend(SOME_STATE); // durable
    p.extend(SOME_STATE); // finished: Some(Finish { state, .. })
    p.extend(outcome);
    p.push("00"); // pinned_local false
    bytes(&p)
}

fn remote_frame(outcome: &[&str]) -> Vec<u8> {
    let mut p: Vec<&str> = RECORD_HEAD.to_vec();
    p.extend(ANCHOR);
    p.extend(SOME_STATE); // durable
    p.push("06"); // output_acked #6
    p.extend(SOME_STATE); // finished: Some(Finish { state, .. })
    p.extend(outcome);
    p.extend(["00", "01"]); // handed_back false, has_module true
    p.extend(["80e59a77", "8094ebdc03"]); // 250 ms, 1 s
    bytes(&p)
}

/// Message frame header, `Finished` (variant 11), session 4, state #7.
fn finished_frame(outcome: &[&str]) -> Vec<u8> {
    let mut p = vec!["625001", "0b", "04", "07", D11];
    p.extend(outcome);
    bytes(&p)
}

/// Legacy outcome: variant 1, the tagged text (length 18).
const LEGACY_TRAP: [&str; 3] = ["01", "12", TRAP_TEXT];
/// Current outcome: variant 3, kind 0 (trap), the text (length 11).
const TYPED_TRAP: [&str; 4] = ["03", "00", "0b", UNREACHABLE];

// ----- legacy frames decode, with the kind recovered -----

#[test]
fn legacy_local_record_decodes_with_its_kind() {
    let old = bytes(&[LEGACY_LOCAL]);
    assert_eq!(old, local_frame(&LEGACY_TRAP), "the layout above is wrong");
    let want = local_record(failed(FailKind::Trap, "unreachable"));
    assert_eq!(LocalRecord::decode(&old).ok(), Some(want));
}

#[test]
fn legacy_remote_record_decodes_with_its_kind() {
    let old = bytes(&[LEGACY_REMOTE]);
    assert_eq!(old, remote_frame(&LEGACY_TRAP), "the layout above is wrong");
    let want = remote_record(failed(FailKind::Trap, "unreachable"));
    assert_eq!(RemoteRecord::decode(&old).ok(), Some(want));
}

#[test]
fn legacy_finished_messages_decode_with_their_kind() {
    let cases = [
        (LEGACY_MSG_TRAP, TRAP_TEXT, FailKind::Trap, "unreachable"),
        (
            LEGACY_MSG_LIMIT,
            LIMIT_TEXT,
            FailKind::Limit,
            "step took too long",
        ),
        (
            LEGACY_MSG_PLAIN,
            PLAIN_TEXT,
            FailKind::Error,
            "no task to step",
        ),
    ];
    for (golden, text, kind, reason) in cases {
        let old = bytes(&[golden]);
        let len = format!("{:02x}", text.len() / 2);
        assert_eq!(
            old,
            finished_frame(&["01", &len, text]),
            "the layout above is wrong"
        );
        let want = finished_msg(failed(kind, reason));
        assert_eq!(Message::decode(&old, &Limits::default()).ok(), Some(want));
    }
}

// ----- the current encoding -----

#[test]
fn current_encoding_is_pinned() {
    let finish = failed(FailKind::Trap, "unreachable");

    let local = local_record(finish.clone());
    assert_eq!(hex(&local.encode()), CURRENT_LOCAL);
    assert_eq!(local.encode(), local_frame(&TYPED_TRAP));
    assert_eq!(LocalRecord::decode(&local.encode()).ok(), Some(local));

    let remote = remote_record(finish.clone());
    assert_eq!(hex(&remote.encode()), CURRENT_REMOTE);
    assert_eq!(remote.encode(), remote_frame(&TYPED_TRAP));
    assert_eq!(RemoteRecord::decode(&remote.encode()).ok(), Some(remote));

    let msg = finished_msg(finish);
    assert_eq!(hex(&msg.encode()), CURRENT_MSG_TRAP);
    assert_eq!(msg.encode(), finished_frame(&TYPED_TRAP));
    let decoded = Message::decode(&msg.encode(), &Limits::default()).ok();
    assert_eq!(decoded, Some(msg));
}

#[test]
fn each_kind_has_its_byte() {
    for (kind, byte) in [
        (FailKind::Trap, "00"),
        (FailKind::Limit, "01"),
        (FailKind::Error, "02"),
    ] {
        let msg = finished_msg(failed(kind, "unreachable"));
        let want = finished_frame(&["03", byte, "0b", UNREACHABLE]);
        assert_eq!(msg.encode(), want, "{kind:?}");
        let decoded = Message::decode(&want, &Limits::default()).ok();
        assert_eq!(decoded, Some(msg));
    }
}

#[test]
fn a_typed_failure_text_over_the_limit_is_refused() {
    let msg = finished_msg(failed(FailKind::Limit, &"x".repeat(5000)));
    assert!(Message::decode(&msg.encode(), &Limits::default()).is_err());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
