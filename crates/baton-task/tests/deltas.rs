//! Checkpoint encoding properties: base + delta == full for random memories
//! and random changes (including memory growth and pages set back to zero);
//! full checkpoints round-trip; decoding random, truncated, bit-flipped or
//! forged bytes is an error, never a panic and never a silently different
//! state; a delta applied to the wrong base is `WrongBase`.

use baton_task::checkpoint::{self, CheckpointError, Decoded, Kind, Limits};
use baton_task::module::GlobalKind;
use baton_task::state::{GlobalValue, PAGE_SIZE, WASM_PAGE_SIZE};
use baton_task::wasi::{ClockMode, HostConfig, HostState};
use baton_task::{Digest, State};
use proptest::collection::vec;
use proptest::prelude::*;

/// Small, deterministic filler for memories (proptest generates the seed).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn global() -> impl Strategy<Value = GlobalValue> {
    (0u8..5, any::<u128>()).prop_map(|(k, bits)| {
        let (kind, bits) = match k {
            0 => (GlobalKind::I32, bits & u128::from(u32::MAX)),
            1 => (GlobalKind::I64, bits & u128::from(u64::MAX)),
            2 => (GlobalKind::F32, bits & u128::from(u32::MAX)),
            3 => (GlobalKind::F64, bits & u128::from(u64::MAX)),
            _ => (GlobalKind::V128, bits),
        };
        GlobalValue { kind, bits }
    })
}

fn host_config(
    seed: u64,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
) -> HostConfig {
    HostConfig {
        args,
        env,
        seed,
        stdin,
        preopens: Vec::new(),
        clock: ClockMode::Virtual {
            start_realtime_ns: seed.rotate_left(7),
        },
        max_fs_bytes: 1 << 20,
    }
}

fn host() -> impl Strategy<Value = HostState> {
    (
        any::<u64>(),
        vec("[a-z0-9 ]{0,8}", 1..4),
        vec(("[A-Z]{1,5}", "[a-z0-9=]{0,5}"), 0..3),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(seed, args, env, stdin)| {
            HostState::new(&host_config(seed, args, env, stdin)).unwrap()
        })
}

/// A random state: 1–8 wasm pages of random bytes, with random 4 KiB pages
/// left zero (full checkpoints skip those), random globals and host state.
fn state() -> impl Strategy<Value = State> {
    (
        any::<[u8; 32]>(),
        0u64..1_000_000,
        1usize..=8,
        any::<u64>(),
        vec(any::<bool>(), 8 * WASM_PAGE_SIZE / PAGE_SIZE),
        vec(global(), 0..5),
        host(),
    )
        .prop_map(|(module, point, wasm_pages, seed, zero, globals, host)| {
            let mut memory = vec![0u8; wasm_pages * WASM_PAGE_SIZE];
            let mut rng = SplitMix(seed);
            for (i, page) in memory.chunks_mut(PAGE_SIZE).enumerate() {
                if !zero[i] {
                    rng.fill(page);
                }
            }
            State::new(Digest(module), point, None, memory, globals, host).unwrap()
        })
}

/// What changes between a base and a later state.
#[derive(Clone, Debug)]
struct Change {
    /// Wasm pages added.
    grow: usize,
    /// Single bytes written, at (offset modulo the new memory size, value).
    writes: Vec<(usize, u8)>,
    /// 4 KiB pages (modulo the page count) overwritten with random bytes.
    pages: Vec<usize>,
    /// 4 KiB pages (modulo the page count) set to zero.
    zeroed: Vec<usize>,
    seed: u64,
    steps: u64,
    finished: Option<i32>,
    /// Replace the globals (same kinds) if set.
    globals: Option<Vec<u128>>,
    /// Replace the host state if set.
    host: Option<HostState>,
}

fn change() -> impl Strategy<Value = Change> {
    (
        0usize..=3,
        vec((any::<usize>(), any::<u8>()), 0..40),
        vec(any::<usize>(), 0..6),
        vec(any::<usize>(), 0..4),
        any::<u64>(),
        0u64..5,
        prop_oneof![Just(None), (0i32..126).prop_map(Some)],
        prop::option::of(vec(any::<u128>(), 5)),
        prop::option::of(host()),
    )
        .prop_map(
            |(grow, writes, pages, zeroed, seed, steps, finished, globals, host)| Change {
                grow,
                writes,
                pages,
                zeroed,
                seed,
                steps,
                finished,
                globals,
                host,
            },
        )
}

fn apply_change(base: &State, c: &Change) -> State {
    let mut memory = base.memory().to_vec();
    memory.resize(memory.len() + c.grow * WASM_PAGE_SIZE, 0);
    let len = memory.len();
    let npages = len / PAGE_SIZE;
    let mut rng = SplitMix(c.seed);
    for &p in &c.pages {
        let p = p % npages;
        rng.fill(&mut memory[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]);
    }
    for &p in &c.zeroed {
        let p = p % npages;
        memory[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(0);
    }
    for &(at, v) in &c.writes {
        memory[at % len] = v;
    }
    let globals = match &c.globals {
        None => base.globals.clone(),
        Some(bits) => base
            .globals
            .iter()
            .zip(bits)
            .map(|(g, b)| {
                let mask = match g.kind {
                    GlobalKind::I32 | GlobalKind::F32 => u128::from(u32::MAX),
                    GlobalKind::I64 | GlobalKind::F64 => u128::from(u64::MAX),
                    GlobalKind::V128 => u128::MAX,
                };
                GlobalValue {
                    kind: g.kind,
                    bits: b & mask,
                }
            })
            .collect(),
    };
    let host = c.host.clone().unwrap_or_else(|| base.host.clone());
    State::new(
        base.module,
        base.point + c.steps,
        c.finished,
        memory,
        globals,
        host,
    )
    .unwrap()
}

fn changed_pages(base: &State, new: &State) -> usize {
    new.memory()
        .chunks(PAGE_SIZE)
        .enumerate()
        .filter(|(i, page)| base.memory().get(i * PAGE_SIZE..(i + 1) * PAGE_SIZE) != Some(*page))
        .count()
}

fn decode(bytes: &[u8]) -> Result<Decoded, CheckpointError> {
    checkpoint::decode(bytes, &Limits::default())
}

/// The integrity trailer a checkpoint ends with, found from a valid one, so
/// that the forgery tests can reseal changed bytes whatever the format uses
/// (a CRC-32 or a BLAKE3 hash).
#[derive(Clone, Copy, Debug)]
enum Seal {
    Crc32,
    Blake3,
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Seal {
    fn of(valid: &[u8]) -> Seal {
        let n = valid.len();
        if n >= 4 && valid[n - 4..] == crc32(&valid[..n - 4]).to_le_bytes() {
            Seal::Crc32
        } else if n >= 32 && valid[n - 32..] == *blake3::hash(&valid[..n - 32]).as_bytes() {
            Seal::Blake3
        } else {
            panic!("unknown checkpoint trailer")
        }
    }

    fn len(self) -> usize {
        match self {
            Seal::Crc32 => 4,
            Seal::Blake3 => 32,
        }
    }

    /// The body of a valid checkpoint (everything before the trailer).
    fn body(self, valid: &[u8]) -> Vec<u8> {
        valid[..valid.len() - self.len()].to_vec()
    }

    /// Appends the trailer for `body`.
    fn seal(self, mut body: Vec<u8>) -> Vec<u8> {
        match self {
            Seal::Crc32 => {
                let c = crc32(&body);
                body.extend_from_slice(&c.to_le_bytes());
            }
            Seal::Blake3 => {
                let h = *blake3::hash(&body).as_bytes();
                body.extend_from_slice(&h);
            }
        }
        body
    }
}

/// Tight limits, as an agent would pass: keeps forged sizes cheap.
fn small_limits() -> Limits {
    Limits {
        max_memory: 16 * WASM_PAGE_SIZE as u64,
        max_host: 1 << 20,
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn full_round_trips(s in state()) {
        let cp = checkpoint::encode_full(&s).unwrap();
        prop_assert_eq!(cp.kind, Kind::Full);
        prop_assert_eq!(cp.point, s.point);
        prop_assert_eq!(cp.digest, s.digest().unwrap());
        match decode(&cp.bytes).unwrap() {
            Decoded::Full(d) => {
                prop_assert_eq!(d.digest().unwrap(), cp.digest);
                prop_assert!(d == s, "decoded state differs");
            }
            Decoded::Delta(_) => prop_assert!(false, "a full checkpoint decoded as a delta"),
        }
        let sum = checkpoint::summarize(&cp.bytes).unwrap();
        prop_assert_eq!(sum.point, s.point);
        prop_assert_eq!(sum.digest, cp.digest);
        prop_assert_eq!(sum.module, s.module);
        prop_assert_eq!(sum.kind, Kind::Full);
        prop_assert_eq!(sum.memory_len, s.memory().len() as u64);
        prop_assert_eq!(sum.encoded_len, cp.bytes.len());
        // Zero pages are not carried.
        let nonzero = s.memory().chunks(PAGE_SIZE).filter(|p| p.iter().any(|&b| b != 0)).count();
        prop_assert_eq!(sum.page_count, nonzero as u64);
        // Deterministic bytes.
        prop_assert_eq!(checkpoint::encode_full(&s).unwrap().bytes, cp.bytes);
    }

    #[test]
    fn base_plus_delta_is_full(base in state(), c in change()) {
        let new = apply_change(&base, &c);
        let delta = checkpoint::encode_delta(&base, &new).unwrap();
        let base_digest = base.digest().unwrap();
        prop_assert_eq!(delta.kind, Kind::Delta { base: base_digest });
        prop_assert_eq!(delta.digest, new.digest().unwrap());
        prop_assert_eq!(delta.point, new.point);
        let d = match decode(&delta.bytes).unwrap() {
            Decoded::Delta(d) => d,
            Decoded::Full(_) => return Err(TestCaseError::fail("a delta decoded as full")),
        };
        prop_assert_eq!(d.base(), base_digest);
        prop_assert_eq!(d.digest(), new.digest().unwrap());
        prop_assert_eq!(d.point(), new.point);
        prop_assert_eq!(d.page_count(), changed_pages(&base, &new));
        let mut copy = base.clone();
        d.apply(&mut copy).unwrap();
        prop_assert_eq!(copy.digest().unwrap(), new.digest().unwrap());
        prop_assert!(copy == new, "base + delta differs from the new state");

        // The same via a full checkpoint of the new state.
        let full = checkpoint::encode_full(&new).unwrap();
        prop_assert_eq!(full.digest, delta.digest);
        match decode(&full.bytes).unwrap() {
            Decoded::Full(f) => prop_assert!(f == copy),
            Decoded::Delta(_) => prop_assert!(false),
        }
    }

    #[test]
    fn delta_on_wrong_base_is_refused(base in state(), c in change(), other in state()) {
        let new = apply_change(&base, &c);
        let delta = checkpoint::encode_delta(&base, &new).unwrap();
        let base_digest = base.digest().unwrap();
        for wrong in [&new, &other] {
            let found = wrong.digest().unwrap();
            if found == base_digest {
                continue;
            }
            let d = match decode(&delta.bytes).unwrap() {
                Decoded::Delta(d) => d,
                Decoded::Full(_) => return Err(TestCaseError::fail("a delta decoded as full")),
            };
            let mut copy = wrong.clone();
            match d.apply(&mut copy) {
                Err(CheckpointError::WrongBase { expected, found: f }) => {
                    prop_assert_eq!(expected, base_digest);
                    prop_assert_eq!(f, found);
                }
                other => prop_assert!(false, "expected WrongBase, got {:?}", other),
            }
            prop_assert!(&copy == wrong, "a refused delta leaves the state alone");
        }
    }

    #[test]
    fn random_bytes_do_not_decode(bytes in vec(any::<u8>(), 0..4096)) {
        prop_assert!(decode(&bytes).is_err());
        prop_assert!(checkpoint::summarize(&bytes).is_err());
    }

    /// Random bodies behind a valid preamble and a valid integrity hash get
    /// past the first checks and exercise the bounded header parsing.
    #[test]
    fn forged_random_bodies_do_not_decode(kind in 0u8..4, hlen in any::<u32>(), body in vec(any::<u8>(), 0..512)) {
        let mut bytes = b"BATONCKP".to_vec();
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.push(kind);
        bytes.push(0);
        bytes.extend_from_slice(&(hlen % 1024).to_le_bytes());
        bytes.extend_from_slice(&body);
        let (s, _) = small_pair();
        let seal = Seal::of(&checkpoint::encode_full(&s).unwrap().bytes);
        let bytes = seal.seal(bytes);
        prop_assert!(checkpoint::decode(&bytes, &small_limits()).is_err());
    }

    /// Forged checkpoints (bytes changed, integrity hash recomputed): an
    /// error, or exactly the original state; never a panic, never another
    /// state.
    #[test]
    fn forged_checkpoints_never_give_another_state(
        s in state(),
        c in change(),
        edits in vec((any::<usize>(), any::<u8>()), 1..4),
        delta in any::<bool>(),
    ) {
        let new = apply_change(&s, &c);
        let cp = if delta {
            checkpoint::encode_delta(&s, &new).unwrap()
        } else {
            checkpoint::encode_full(&new).unwrap()
        };
        let seal = Seal::of(&cp.bytes);
        let mut bytes = seal.body(&cp.bytes);
        let body_len = bytes.len();
        for (at, v) in &edits {
            bytes[at % body_len] = *v;
        }
        let bytes = seal.seal(bytes);
        match checkpoint::decode(&bytes, &small_limits()) {
            Err(_) => {}
            Ok(Decoded::Full(f)) => prop_assert!(f == new, "a forged full checkpoint decoded to another state"),
            Ok(Decoded::Delta(d)) => {
                let mut copy = s.clone();
                if d.apply(&mut copy).is_ok() {
                    prop_assert!(copy == new, "a forged delta applied to another state");
                }
            }
        }
    }
}

/// A small state and a delta from it, for the exhaustive byte tests.
fn small_pair() -> (State, State) {
    let host = HostState::new(&host_config(
        1,
        vec!["t".to_string()],
        vec![],
        b"in".to_vec(),
    ))
    .unwrap();
    let mut memory = vec![0u8; WASM_PAGE_SIZE];
    SplitMix(3).fill(&mut memory[PAGE_SIZE..2 * PAGE_SIZE]);
    memory[5 * PAGE_SIZE + 17] = 9;
    let globals = vec![
        GlobalValue {
            kind: GlobalKind::I32,
            bits: 65536,
        },
        GlobalValue {
            kind: GlobalKind::F64,
            bits: u128::from(1.5f64.to_bits()),
        },
    ];
    let base = State::new(Digest::of(b"module"), 3, None, memory, globals, host).unwrap();
    let new = apply_change(
        &base,
        &Change {
            grow: 1,
            writes: vec![(PAGE_SIZE * 3, 1), (WASM_PAGE_SIZE + 5, 2)],
            pages: vec![],
            zeroed: vec![1],
            seed: 0,
            steps: 2,
            finished: Some(0),
            globals: Some(vec![70000, 7]),
            host: None,
        },
    );
    (base, new)
}

#[test]
fn every_truncation_is_an_error() {
    let (base, new) = small_pair();
    for cp in [
        checkpoint::encode_full(&base).unwrap(),
        checkpoint::encode_delta(&base, &new).unwrap(),
    ] {
        for n in 0..cp.bytes.len() {
            assert!(
                decode(&cp.bytes[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
            assert!(
                checkpoint::summarize(&cp.bytes[..n]).is_err(),
                "prefix of {n} bytes summarised"
            );
        }
        let mut longer = cp.bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "a trailing byte");
        assert!(decode(&cp.bytes).is_ok());
    }
}

#[test]
fn every_flipped_bit_is_an_error() {
    let (base, new) = small_pair();
    for cp in [
        checkpoint::encode_full(&base).unwrap(),
        checkpoint::encode_delta(&base, &new).unwrap(),
    ] {
        let mut bytes = cp.bytes.clone();
        for i in 0..bytes.len() * 8 {
            bytes[i / 8] ^= 1 << (i % 8);
            assert!(decode(&bytes).is_err(), "bit {i} flipped decoded");
            bytes[i / 8] ^= 1 << (i % 8);
        }
        assert_eq!(bytes, cp.bytes);
    }
}

/// Every single bit flip with the integrity hash recomputed (a forgery
/// rather than an accident) is an error or gives exactly the original state.
#[test]
fn every_forged_bit_is_caught() {
    let (base, new) = small_pair();
    let full = checkpoint::encode_full(&new).unwrap();
    let delta = checkpoint::encode_delta(&base, &new).unwrap();
    let mut accepted = Vec::new();
    for (name, cp) in [("full", &full), ("delta", &delta)] {
        let seal = Seal::of(&cp.bytes);
        let body = seal.body(&cp.bytes);
        for i in 0..body.len() * 8 {
            let mut bytes = body.clone();
            bytes[i / 8] ^= 1 << (i % 8);
            let bytes = seal.seal(bytes);
            let got = match checkpoint::decode(&bytes, &small_limits()) {
                Err(_) => continue,
                Ok(Decoded::Full(f)) => f,
                Ok(Decoded::Delta(d)) => {
                    let mut copy = base.clone();
                    if d.apply(&mut copy).is_err() {
                        continue;
                    }
                    copy
                }
            };
            assert!(
                got == new,
                "{name}: forged bit {i} (byte {}) gave another state",
                i / 8
            );
            accepted.push((name, i / 8));
        }
    }
    // Changes that go unnoticed carry no state (for example an lz4 match
    // pointing at other identical bytes); the state was checked above.
    if !accepted.is_empty() {
        eprintln!("forged bits accepted with an identical state: {accepted:?}");
    }
}

#[test]
fn bad_preamble_errors() {
    let (base, _) = small_pair();
    let cp = checkpoint::encode_full(&base).unwrap();
    let mut magic = cp.bytes.clone();
    magic[0] = b'X';
    assert!(matches!(decode(&magic), Err(CheckpointError::BadMagic)));
    let mut version = cp.bytes.clone();
    version[8] = 1;
    assert!(matches!(decode(&version), Err(CheckpointError::Version(1))));
    assert!(matches!(
        decode(b"BATON"),
        Err(CheckpointError::Truncated(5))
    ));
    let mut corrupt = cp.bytes.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x40;
    assert!(matches!(decode(&corrupt), Err(CheckpointError::Corrupted)));
    let text = decode(&corrupt).unwrap_err().to_string();
    assert!(text.contains("corrupted"), "{text}");
}

#[test]
fn limits_are_enforced_before_allocation() {
    let (base, _) = small_pair();
    let cp = checkpoint::encode_full(&base).unwrap();
    let tight = Limits {
        max_memory: (WASM_PAGE_SIZE / 2) as u64,
        max_host: 1 << 20,
    };
    match checkpoint::decode(&cp.bytes, &tight) {
        Err(CheckpointError::TooLarge { what, size, limit }) => {
            assert_eq!(what, "memory");
            assert_eq!(size, WASM_PAGE_SIZE as u64);
            assert_eq!(limit, tight.max_memory);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let tight = Limits {
        max_memory: 1 << 30,
        max_host: 4,
    };
    assert!(matches!(
        checkpoint::decode(&cp.bytes, &tight),
        Err(CheckpointError::TooLarge {
            what: "host state",
            ..
        })
    ));
}

#[test]
fn delta_encoding_refuses_what_cannot_be_a_delta() {
    let (base, new) = small_pair();
    let other_module = State::new(
        Digest::of(b"another module"),
        new.point,
        new.finished,
        new.memory().to_vec(),
        new.globals.clone(),
        new.host.clone(),
    )
    .unwrap();
    assert!(matches!(
        checkpoint::encode_delta(&base, &other_module),
        Err(CheckpointError::WrongModule { .. })
    ));
    // Memory never shrinks.
    assert!(matches!(
        checkpoint::encode_delta(&new, &base),
        Err(CheckpointError::Malformed(_))
    ));
    // A delta against itself carries no pages and applies.
    let same = checkpoint::encode_delta(&new, &new).unwrap();
    let Decoded::Delta(d) = decode(&same.bytes).unwrap() else {
        panic!("a delta")
    };
    assert_eq!(d.page_count(), 0);
    let mut copy = new.clone();
    d.apply(&mut copy).unwrap();
    assert_eq!(copy, new);
}

/// A delta is as large as what changed, not as the memory.
#[test]
fn delta_size_follows_the_changes() {
    let host = HostState::new(&host_config(1, vec!["t".to_string()], vec![], vec![])).unwrap();
    let mut memory = vec![0u8; 64 * WASM_PAGE_SIZE];
    SplitMix(5).fill(&mut memory);
    let base = State::new(Digest::of(b"m"), 0, None, memory, vec![], host).unwrap();
    let mut memory = base.memory().to_vec();
    memory[123_456] ^= 0xff;
    let new = State::new(base.module, 1, None, memory, vec![], base.host.clone()).unwrap();
    let full = checkpoint::encode_full(&new).unwrap();
    let delta = checkpoint::encode_delta(&base, &new).unwrap();
    assert!(
        full.bytes.len() > 64 * WASM_PAGE_SIZE,
        "random memory does not compress"
    );
    assert!(
        delta.bytes.len() < PAGE_SIZE + 2048,
        "one changed page gives a delta of {} bytes",
        delta.bytes.len()
    );
}
