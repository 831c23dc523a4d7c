//! Checkpoint encoding: full checkpoints and deltas, as bytes.
//!
//! This module owns the versioned, self-describing wire and disk format of a
//! [`State`] (DESIGN §5). Layout, all integers little-endian:
//!
//! ```text
//! magic     8 bytes  "BATONCKP"
//! version   u16      2 (1 had no saved call stack in the host state)
//! kind      u8       1 = full, 2 = delta
//! reserved  u8       0
//! hlen      u32      length of the header (at most 16 MiB)
//! header    hlen     postcard: module, point, finished, digest, base,
//!                    memory length, page size, globals, section lengths
//! host      lz4 block of the host state's postcard bytes
//! pages     page indices (u32 each), then the pages in groups of up to
//!           256 (1 MiB), each group a u32 length and an lz4 block
//! trailer   u32 CRC-32 of everything before it
//! ```
//!
//! Groups let the encoder compress straight from memory (or a small, warm
//! scratch buffer) instead of first copying every page into one buffer, and
//! the decoder decompress straight into place. The trailer catches torn
//! writes and accidental corruption cheaply; the state digest, checked after
//! decoding, is what catches everything else.
//!
//! A full checkpoint carries every non-zero page; a delta carries the pages
//! changed since its base (named by digest). Decoding checks every length
//! against [`Limits`] before allocating, verifies the trailer, and after
//! assembling the state recomputes its digest and compares it with the one
//! recorded: a damaged or forged checkpoint is an error, never a panic and
//! never a silently different state.
//!
//! It must not know about wasmtime or running tasks: it turns bytes into
//! [`State`] and back.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::state::{
    canonical_digest, hash_page, GlobalValue, State, PAGE_SIZE, WASM_PAGE_SIZE, ZERO_PAGE,
};
use crate::wasi::HostState;

const MAGIC: &[u8; 8] = b"BATONCKP";
const VERSION: u16 = 2;
const PREAMBLE: usize = 8 + 2 + 1 + 1 + 4;
const TRAILER: usize = 4;
/// Pages per compressed group.
const GROUP: usize = 256;
const MAX_HEADER: usize = 16 * 1024 * 1024;

/// Upper bounds a decoder enforces before it allocates.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest linear memory accepted, in bytes.
    pub max_memory: u64,
    /// Largest encoded host state accepted, in bytes.
    pub max_host: u64,
}

impl Default for Limits {
    /// 4 GiB of memory (all a wasm32 memory can have) and 1 GiB of host state.
    fn default() -> Limits {
        Limits {
            max_memory: 4 * 1024 * 1024 * 1024,
            max_host: 1024 * 1024 * 1024,
        }
    }
}

/// Whether a checkpoint is complete or relative to a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A complete state.
    Full,
    /// Pages changed since the base state with the given digest.
    Delta {
        /// Digest of the state this delta applies to.
        base: Digest,
    },
}

/// An encoded checkpoint with the facts a protocol needs without decoding
/// it: point, digest, kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The point whose state this encodes.
    pub point: u64,
    /// Digest of that state.
    pub digest: Digest,
    /// Full or delta.
    pub kind: Kind,
    /// The encoded bytes.
    pub bytes: Vec<u8>,
}

/// Why bytes could not be decoded into a state.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Shorter than the fixed parts of the format.
    #[error("checkpoint is truncated ({0} bytes)")]
    Truncated(usize),
    /// The magic number is wrong.
    #[error("not a baton checkpoint (bad magic number)")]
    BadMagic,
    /// A version this build does not read.
    #[error("checkpoint format version {0} is not supported (this baton reads version {VERSION})")]
    Version(u16),
    /// The trailer hash does not match the contents.
    #[error("checkpoint is corrupted (its integrity hash does not match)")]
    Corrupted,
    /// A length or field is out of range or inconsistent.
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    /// A declared size exceeds the decoder's limits.
    #[error("checkpoint declares {what} of {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The decoded state does not hash to the digest the checkpoint records.
    #[error("checkpoint digest mismatch: recorded {recorded}, state hashes to {actual}")]
    DigestMismatch {
        /// Digest written in the checkpoint.
        recorded: Digest,
        /// Digest of what was decoded.
        actual: Digest,
    },
    /// A delta applied to a state that is not its base.
    #[error("delta is against base {expected}, but the state given has digest {found}")]
    WrongBase {
        /// The delta's base.
        expected: Digest,
        /// The digest of the state offered.
        found: Digest,
    },
    /// A delta for another module.
    #[error("delta belongs to module {delta}, the base state to module {base}")]
    WrongModule {
        /// Module of the delta.
        delta: Digest,
        /// Module of the base.
        base: Digest,
    },
    /// Encoding the host state failed (a bug).
    #[error("host state encoding failed: {0}")]
    Encode(String),
}

#[derive(Serialize, Deserialize)]
struct Header {
    module: Digest,
    point: u64,
    finished: Option<i32>,
    digest: Digest,
    base: Option<Digest>,
    memory_len: u64,
    page_size: u32,
    globals: Vec<GlobalValue>,
    host_len: u64,
    host_compressed: u64,
    page_count: u64,
}

/// The parts of a state an encoder needs; borrowed so that a running task
/// can encode straight from its tracker.
pub(crate) struct Parts<'a> {
    pub(crate) module: Digest,
    pub(crate) point: u64,
    pub(crate) finished: Option<i32>,
    pub(crate) digest: Digest,
    pub(crate) memory: &'a [u8],
    pub(crate) globals: &'a [GlobalValue],
    pub(crate) host: &'a [u8],
}

/// Encodes `parts` with the pages listed (ascending, in bounds).
pub(crate) fn encode(
    parts: &Parts<'_>,
    kind: Kind,
    pages: impl Iterator<Item = usize>,
) -> Result<Checkpoint, CheckpointError> {
    let indices: Vec<u32> = pages
        .filter(|&p| {
            kind != Kind::Full || parts.memory[p * PAGE_SIZE..(p + 1) * PAGE_SIZE] != ZERO_PAGE
        })
        .map(|p| p as u32)
        .collect();
    let host_lz = lz4_flex::block::compress(parts.host);
    let header = Header {
        module: parts.module,
        point: parts.point,
        finished: parts.finished,
        digest: parts.digest,
        base: match kind {
            Kind::Full => None,
            Kind::Delta { base } => Some(base),
        },
        memory_len: parts.memory.len() as u64,
        page_size: PAGE_SIZE as u32,
        globals: parts.globals.to_vec(),
        host_len: parts.host.len() as u64,
        host_compressed: host_lz.len() as u64,
        page_count: indices.len() as u64,
    };
    let header =
        postcard::to_allocvec(&header).map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let groups = indices.len().div_ceil(GROUP);
    let bound = PREAMBLE
        + header.len()
        + host_lz.len()
        + indices.len() * 4
        + groups * 4
        + lz4_flex::block::get_maximum_output_size(indices.len() * PAGE_SIZE)
        + TRAILER;
    let mut out = spare_buffer(bound);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(match kind {
        Kind::Full => 1,
        Kind::Delta { .. } => 2,
    });
    out.push(0);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&host_lz);
    for i in &indices {
        out.extend_from_slice(&i.to_le_bytes());
    }
    let mut scratch = Vec::new();
    for group in indices.chunks(GROUP) {
        let first = group[0] as usize;
        let contiguous = group[group.len() - 1] as usize - first + 1 == group.len();
        let input: &[u8] = if contiguous {
            &parts.memory[first * PAGE_SIZE..(first + group.len()) * PAGE_SIZE]
        } else {
            scratch.clear();
            for &p in group {
                let p = p as usize;
                scratch.extend_from_slice(&parts.memory[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]);
            }
            &scratch
        };
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let room = lz4_flex::block::get_maximum_output_size(input.len());
        out.resize(at + 4 + room, 0);
        let n = lz4_flex::block::compress_into(input, &mut out[at + 4..])
            .map_err(|e| CheckpointError::Encode(e.to_string()))?;
        out.truncate(at + 4 + n);
        out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(Checkpoint {
        point: parts.point,
        digest: parts.digest,
        kind,
        bytes: out,
    })
}

/// The buffer of an encoded checkpoint handed back with [`recycle`]: one
/// per process (a buffer per thread would keep one for every thread of an
/// agent's blocking pool).
static SPARE: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Hands the bytes of an encoded checkpoint back once they are written, so
/// that the next checkpoint encoded reuses the buffer: a fresh buffer of
/// several megabytes per point costs a page fault and the kernel's zeroing
/// of every page. Keeps the largest buffer handed back, up to 32 MiB (a
/// full checkpoint of a large memory is rare, and keeping its buffer would
/// double the resident set).
pub fn recycle(mut bytes: Vec<u8>) {
    const MAX_SPARE: usize = 32 << 20;
    if bytes.capacity() > MAX_SPARE {
        return;
    }
    bytes.clear();
    let mut spare = SPARE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if bytes.capacity() > spare.capacity() {
        *spare = bytes;
    }
}

/// An empty buffer with room for `bound` bytes: the recycled one if it is
/// big enough, else a new one.
fn spare_buffer(bound: usize) -> Vec<u8> {
    let recycled = {
        let mut spare = SPARE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (spare.capacity() >= bound).then(|| std::mem::take(&mut *spare))
    };
    recycled.unwrap_or_else(|| crate::state::big_buffer(bound))
}

/// Encodes a complete state as a full checkpoint.
///
/// # Errors
///
/// Only if the host state cannot be encoded, which is a bug.
pub fn encode_full(state: &State) -> Result<Checkpoint, CheckpointError> {
    encode_state(state, Kind::Full, 0..state.memory().len() / PAGE_SIZE)
}

/// Encodes `state` as a delta against `base`: the pages that differ, plus
/// everything else (globals, host state) in full.
///
/// # Errors
///
/// [`CheckpointError::WrongModule`] if the two states belong to different
/// modules, [`CheckpointError::Malformed`] if `state` has less memory than
/// `base` (memory never shrinks).
pub fn encode_delta(base: &State, state: &State) -> Result<Checkpoint, CheckpointError> {
    if base.module != state.module {
        return Err(CheckpointError::WrongModule {
            delta: state.module,
            base: base.module,
        });
    }
    if state.memory().len() < base.memory().len() {
        return Err(CheckpointError::Malformed(
            "a state cannot have less memory than its base".to_string(),
        ));
    }
    let base_digest = base
        .digest()
        .map_err(|e| CheckpointError::Encode(e.to_string()))?;
    // Both states keep a hash per page (the digest is made of them), so
    // finding what changed compares 32 bytes per page instead of 4096.
    let old = &base.hashes;
    let changed = state
        .hashes
        .iter()
        .enumerate()
        .filter(|(i, h)| old.get(*i) != Some(*h))
        .map(|(i, _)| i);
    encode_state(state, Kind::Delta { base: base_digest }, changed)
}

/// Encodes a [`State`] with the given pages.
fn encode_state(
    state: &State,
    kind: Kind,
    pages: impl Iterator<Item = usize>,
) -> Result<Checkpoint, CheckpointError> {
    let host =
        postcard::to_allocvec(&state.host).map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let digest = state
        .digest()
        .map_err(|e| CheckpointError::Encode(e.to_string()))?;
    let parts = Parts {
        module: state.module,
        point: state.point,
        finished: state.finished,
        digest,
        memory: state.memory(),
        globals: &state.globals,
        host: &host,
    };
    encode(&parts, kind, pages)
}

/// A decoded delta: apply it to its base with [`Delta::apply`].
#[derive(Debug)]
pub struct Delta {
    header: Header,
    host: HostState,
    indices: Vec<u32>,
    pages: Vec<u8>,
}

impl Header {
    /// How many [`PAGE_SIZE`] pages the memory has.
    fn total_pages(&self) -> u64 {
        self.memory_len / PAGE_SIZE as u64
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("point", &self.point)
            .field("digest", &self.digest)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Delta {
    /// Digest of the state this delta applies to.
    pub fn base(&self) -> Digest {
        // A delta always has a base: decode checked it.
        self.header.base.unwrap_or(Digest([0; 32]))
    }

    /// The point of the state it produces.
    pub fn point(&self) -> u64 {
        self.header.point
    }

    /// Digest of the state it produces.
    pub fn digest(&self) -> Digest {
        self.header.digest
    }

    /// Number of pages it carries.
    pub fn page_count(&self) -> usize {
        self.indices.len()
    }

    /// Turns `base` into the state this delta encodes, verifying that
    /// `base` is the delta's base and that the result has the recorded
    /// digest. On error `base` is left unchanged.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::WrongBase`], [`CheckpointError::WrongModule`],
    /// [`CheckpointError::Malformed`] (memory would shrink) or
    /// [`CheckpointError::DigestMismatch`].
    pub fn apply(self, base: &mut State) -> Result<(), CheckpointError> {
        let found = base
            .digest()
            .map_err(|e| CheckpointError::Encode(e.to_string()))?;
        if found != self.base() {
            return Err(CheckpointError::WrongBase {
                expected: self.base(),
                found,
            });
        }
        if base.module != self.header.module {
            return Err(CheckpointError::WrongModule {
                delta: self.header.module,
                base: base.module,
            });
        }
        let len = self.header.memory_len as usize;
        if len < base.memory().len() {
            return Err(CheckpointError::Malformed(
                "delta would shrink linear memory".to_string(),
            ));
        }
        // Work out the resulting digest from page hashes first, so that a
        // delta that does not produce what it claims leaves `base` as it was
        // (and nobody has to copy the whole state to be able to go back).
        let mut hashes = base.hashes.clone();
        hashes.resize(len / PAGE_SIZE, hash_page(&ZERO_PAGE));
        for (&i, page) in self.indices.iter().zip(self.pages.chunks(PAGE_SIZE)) {
            hashes[i as usize] = hash_page(page);
        }
        let host = postcard::to_allocvec(&self.host)
            .map_err(|e| CheckpointError::Encode(e.to_string()))?;
        let actual = canonical_digest(
            &self.header.module,
            self.header.point,
            self.header.finished,
            len,
            &hashes,
            &self.header.globals,
            &host,
        );
        if actual != self.header.digest {
            return Err(CheckpointError::DigestMismatch {
                recorded: self.header.digest,
                actual,
            });
        }
        base.grow_to(len);
        for (&i, page) in self.indices.iter().zip(self.pages.chunks(PAGE_SIZE)) {
            let start = i as usize * PAGE_SIZE;
            base.memory[start..start + PAGE_SIZE].copy_from_slice(page);
        }
        base.hashes = hashes;
        base.point = self.header.point;
        base.finished = self.header.finished;
        base.globals = self.header.globals;
        base.host = self.host;
        Ok(())
    }
}

/// What [`decode`] found.
#[derive(Debug)]
pub enum Decoded {
    /// A complete, verified state.
    Full(State),
    /// A delta, to apply to its base.
    Delta(Delta),
}

/// A cursor over the input that fails instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], CheckpointError> {
        let n =
            usize::try_from(n).map_err(|_| CheckpointError::Malformed(format!("{what} length")))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| CheckpointError::Malformed(format!("{what} runs past the end")))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

fn check(what: &'static str, size: u64, limit: u64) -> Result<(), CheckpointError> {
    if size > limit {
        return Err(CheckpointError::TooLarge { what, size, limit });
    }
    Ok(())
}

/// Decompresses `input` to exactly fill `out`.
fn decompress_exact(input: &[u8], out: &mut [u8]) -> Result<(), CheckpointError> {
    let n = lz4_flex::block::decompress_into(input, out)
        .map_err(|e| CheckpointError::Malformed(format!("page group: {e}")))?;
    if n != out.len() {
        return Err(CheckpointError::Malformed(format!(
            "page group decompressed to {n} bytes, expected {}",
            out.len()
        )));
    }
    Ok(())
}

fn decompress(input: &[u8], size: usize, what: &str) -> Result<Vec<u8>, CheckpointError> {
    let mut out = vec![0u8; size];
    let n = lz4_flex::block::decompress_into(input, &mut out)
        .map_err(|e| CheckpointError::Malformed(format!("{what}: {e}")))?;
    if n != size {
        return Err(CheckpointError::Malformed(format!(
            "{what}: decompressed to {n} bytes, expected {size}"
        )));
    }
    Ok(out)
}

/// Checks the fixed parts and the integrity hash and reads the header;
/// returns the kind byte, the header and a reader positioned after it over
/// the body (everything but the trailer).
fn open(bytes: &[u8]) -> Result<(u8, Header, Reader<'_>), CheckpointError> {
    if bytes.len() < PREAMBLE + TRAILER {
        return Err(CheckpointError::Truncated(bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(CheckpointError::Version(version));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    if crc32fast::hash(body).to_le_bytes() != trailer {
        return Err(CheckpointError::Corrupted);
    }
    if bytes[11] != 0 {
        return Err(CheckpointError::Malformed(
            "reserved byte is not zero".to_string(),
        ));
    }
    let hlen = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as u64;
    check("header", hlen, MAX_HEADER as u64)?;
    let mut r = Reader {
        bytes: body,
        pos: PREAMBLE,
    };
    let header: Header = postcard::from_bytes(r.take(hlen, "header")?)
        .map_err(|e| CheckpointError::Malformed(format!("header: {e}")))?;
    Ok((bytes[10], header, r))
}

/// Decodes a checkpoint: a full one into a verified [`State`], a delta into
/// a [`Delta`] to apply to its base.
///
/// # Errors
///
/// A [`CheckpointError`] for anything truncated, corrupted, inconsistent,
/// over `limits`, or (full checkpoints) not hashing to its recorded digest.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, CheckpointError> {
    let (kind, header, mut r) = open(bytes)?;
    check_header(kind, &header, limits)?;
    let host = read_host(&mut r, &header)?;
    let (indices, groups) = read_pages(&mut r, &header)?;
    if kind == 2 {
        let pages = delta_pages(&indices, &groups)?;
        return Ok(Decoded::Delta(Delta {
            header,
            host,
            indices,
            pages,
        }));
    }
    let (memory, hashes) = full_memory(&header, &indices, &groups)?;
    let state = State {
        module: header.module,
        point: header.point,
        finished: header.finished,
        globals: header.globals,
        host,
        memory,
        hashes,
    };
    let actual = state
        .digest()
        .map_err(|e| CheckpointError::Encode(e.to_string()))?;
    if actual != header.digest {
        return Err(CheckpointError::DigestMismatch {
            recorded: header.digest,
            actual,
        });
    }
    Ok(Decoded::Full(state))
}

/// Checks the header's fields against the kind byte, this build and
/// `limits`, before anything is allocated from them.
fn check_header(kind: u8, header: &Header, limits: &Limits) -> Result<(), CheckpointError> {
    match (kind, header.base) {
        (1, None) | (2, Some(_)) => {}
        _ => {
            return Err(CheckpointError::Malformed(
                "kind and base disagree".to_string(),
            ))
        }
    }
    if header.page_size as usize != PAGE_SIZE {
        return Err(CheckpointError::Malformed(format!(
            "page size {} (this baton uses {PAGE_SIZE})",
            header.page_size
        )));
    }
    check("memory", header.memory_len, limits.max_memory)?;
    if !header.memory_len.is_multiple_of(WASM_PAGE_SIZE as u64) {
        return Err(CheckpointError::Malformed(
            "memory length is not a whole number of wasm pages".to_string(),
        ));
    }
    check("host state", header.host_len, limits.max_host)?;
    let total_pages = header.total_pages();
    if header.page_count > total_pages {
        return Err(CheckpointError::Malformed(format!(
            "{} pages listed for a memory of {total_pages}",
            header.page_count
        )));
    }
    Ok(())
}

/// Reads the host state section: an lz4 block of its postcard bytes.
fn read_host(r: &mut Reader<'_>, header: &Header) -> Result<HostState, CheckpointError> {
    let host_bytes = decompress(
        r.take(header.host_compressed, "host state")?,
        header.host_len as usize,
        "host state",
    )?;
    postcard::from_bytes(&host_bytes)
        .map_err(|e| CheckpointError::Malformed(format!("host state: {e}")))
}

/// Reads the page indices (strictly ascending, within the memory) and the
/// compressed page groups after them, which must end at the trailer.
/// Returns the indices and each group's compressed bytes.
fn read_pages<'a>(
    r: &mut Reader<'a>,
    header: &Header,
) -> Result<(Vec<u32>, Vec<&'a [u8]>), CheckpointError> {
    let total_pages = header.total_pages();
    let raw_indices = r.take(header.page_count * 4, "page index")?;
    let mut indices = Vec::with_capacity(header.page_count as usize);
    for c in raw_indices.chunks_exact(4) {
        let i = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if u64::from(i) >= total_pages || indices.last().is_some_and(|&l| l >= i) {
            return Err(CheckpointError::Malformed(format!(
                "page index {i} out of order or out of range"
            )));
        }
        indices.push(i);
    }
    let mut groups = Vec::with_capacity(indices.len().div_ceil(GROUP));
    for _ in 0..indices.len().div_ceil(GROUP) {
        let len = r.take(4, "group length")?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        groups.push(r.take(u64::from(len), "page group")?);
    }
    if r.pos != r.bytes.len() {
        return Err(CheckpointError::Malformed(format!(
            "{} unexpected bytes before the trailer",
            r.bytes.len() - r.pos
        )));
    }
    Ok((indices, groups))
}

/// A delta's pages, decompressed one after the other in index order.
fn delta_pages(indices: &[u32], groups: &[&[u8]]) -> Result<Vec<u8>, CheckpointError> {
    let mut pages = vec![0u8; indices.len() * PAGE_SIZE];
    for (i, (group, block)) in indices.chunks(GROUP).zip(groups).enumerate() {
        let start = i * GROUP * PAGE_SIZE;
        decompress_exact(block, &mut pages[start..start + group.len() * PAGE_SIZE])?;
    }
    Ok(pages)
}

/// A full checkpoint's linear memory (pages it does not carry are zero)
/// and the hash of every page.
fn full_memory(
    header: &Header,
    indices: &[u32],
    groups: &[&[u8]],
) -> Result<(Vec<u8>, Vec<[u8; 32]>), CheckpointError> {
    // When the checkpoint carries most of the memory, a huge-page-backed
    // buffer fills fastest; otherwise the allocator's lazy zeroing means
    // pages it does not carry are never touched, so a small forged
    // checkpoint declaring a large memory costs address space, not work.
    let len = header.memory_len as usize;
    let mut memory = if indices.len() * PAGE_SIZE >= len / 2 {
        let mut m = crate::state::big_buffer(len);
        m.resize(len, 0);
        m
    } else {
        vec![0u8; len]
    };
    let mut hashes = vec![hash_page(&ZERO_PAGE); header.total_pages() as usize];
    let mut scratch = Vec::new();
    for (group, block) in indices.chunks(GROUP).zip(groups) {
        let first = group[0] as usize;
        let contiguous = group[group.len() - 1] as usize - first + 1 == group.len();
        if contiguous {
            decompress_exact(
                block,
                &mut memory[first * PAGE_SIZE..(first + group.len()) * PAGE_SIZE],
            )?;
        } else {
            scratch.resize(group.len() * PAGE_SIZE, 0);
            decompress_exact(block, &mut scratch)?;
            for (&p, page) in group.iter().zip(scratch.chunks(PAGE_SIZE)) {
                let p = p as usize;
                memory[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].copy_from_slice(page);
            }
        }
        for &p in group {
            let p = p as usize;
            hashes[p] = hash_page(&memory[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]);
        }
    }
    Ok((memory, hashes))
}

/// A summary of a checkpoint read without assembling the state.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Module digest.
    pub module: Digest,
    /// Point.
    pub point: u64,
    /// State digest.
    pub digest: Digest,
    /// Full or delta.
    pub kind: Kind,
    /// Whether and how the task had finished.
    pub finished: Option<i32>,
    /// Linear memory size in bytes.
    pub memory_len: u64,
    /// Number of pages carried.
    pub page_count: u64,
    /// Encoded size in bytes.
    pub encoded_len: usize,
}

/// Reads the header of a checkpoint (verifying its integrity hash) without
/// decompressing it: what `baton inspect` shows.
///
/// # Errors
///
/// As [`decode`] for the parts it reads.
pub fn summarize(bytes: &[u8]) -> Result<Summary, CheckpointError> {
    let (_, h, _) = open(bytes)?;
    Ok(Summary {
        module: h.module,
        point: h.point,
        digest: h.digest,
        kind: match h.base {
            None => Kind::Full,
            Some(base) => Kind::Delta { base },
        },
        finished: h.finished,
        memory_len: h.memory_len,
        page_count: h.page_count,
        encoded_len: bytes.len(),
    })
}
