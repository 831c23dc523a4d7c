//! Task state and its digest.
//!
//! This module owns [`State`] (everything needed to continue a task from a
//! point, DESIGN §2), the canonical form that the state [`Digest`] hashes,
//! and the page tracker that keeps a running task's digest and deltas cheap:
//! it remembers the memory as of the last point and a hash per page, so the
//! work at a point grows with the pages that changed, plus one `memcmp` pass
//! over the memory (the one part that grows with memory size: wasm gives no
//! write barrier, and the OS's dirty bits are per process, not per task).
//!
//! It does not encode checkpoints ([`crate::checkpoint`]) and never touches
//! wasmtime: a running task hands it plain bytes.

use crate::digest::Digest;
use crate::module::GlobalKind;
use crate::wasi::HostState;

/// Granularity of page hashes and deltas, in bytes.
///
/// 4 KiB is the operating system's page size: a write from the guest touches
/// at least that much of the machine, and a wasm page (64 KiB) would make a
/// delta of scattered writes up to 16× larger. It is part of the canonical
/// form, so it is fixed: changing it changes every digest.
pub const PAGE_SIZE: usize = 4096;

/// The most memory a wasm32 module can have.
const MAX_WASM32_MEMORY: usize = 1 << 32;

/// Size of a wasm page; memory sizes are always a multiple of it.
pub const WASM_PAGE_SIZE: usize = 65536;

const DOMAIN: &[u8] = b"baton state v1\0";

/// The value of one mutable global, as raw bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GlobalValue {
    /// Value type.
    pub kind: GlobalKind,
    /// The value's bits, zero-extended (floats as their IEEE bits).
    pub bits: u128,
}

/// Everything needed to continue a task from a point: linear memory, every
/// mutable global, host state, the point number and whether it finished.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// Digest of the module this state belongs to.
    pub module: Digest,
    /// The point this is the state at.
    pub point: u64,
    /// `Some(status)` once the task has finished.
    pub finished: Option<i32>,
    /// Mutable globals, in global index order.
    pub globals: Vec<GlobalValue>,
    /// The WASI host's state.
    pub host: HostState,
    pub(crate) memory: Vec<u8>,
    /// BLAKE3 of each [`PAGE_SIZE`] page of `memory`, kept in step with it.
    pub(crate) hashes: Vec<[u8; 32]>,
}

/// The state's memory size is not a whole number of wasm pages.
#[derive(Debug, thiserror::Error)]
#[error("memory of {0} bytes is not a whole number of 64 KiB wasm pages")]
pub struct BadMemorySize(pub usize);

impl State {
    /// Assembles a state, hashing every page of `memory`.
    ///
    /// # Errors
    ///
    /// When `memory.len()` is not a multiple of 64 KiB.
    pub fn new(
        module: Digest,
        point: u64,
        finished: Option<i32>,
        memory: Vec<u8>,
        globals: Vec<GlobalValue>,
        host: HostState,
    ) -> Result<State, BadMemorySize> {
        if !memory.len().is_multiple_of(WASM_PAGE_SIZE) {
            return Err(BadMemorySize(memory.len()));
        }
        let hashes = memory.chunks(PAGE_SIZE).map(hash_page).collect();
        Ok(State {
            module,
            point,
            finished,
            globals,
            host,
            memory,
            hashes,
        })
    }

    /// The linear memory.
    pub fn memory(&self) -> &[u8] {
        &self.memory
    }

    /// Grows the memory with zero pages to `len` bytes (never shrinks).
    pub(crate) fn grow_to(&mut self, len: usize) {
        if len > self.memory.len() {
            self.memory.resize(len, 0);
            let zero = hash_page(&ZERO_PAGE);
            self.hashes.resize(len / PAGE_SIZE, zero);
        }
    }

    /// The canonical digest of this state.
    ///
    /// # Errors
    ///
    /// Only if the host state cannot be encoded, which is a bug.
    pub fn digest(&self) -> Result<Digest, postcard::Error> {
        let host = postcard::to_allocvec(&self.host)?;
        Ok(canonical_digest(
            &self.module,
            self.point,
            self.finished,
            self.memory.len(),
            &self.hashes,
            &self.globals,
            &host,
        ))
    }
}

/// An empty vector with room for `len` bytes. Large ones are advised to use
/// transparent huge pages: filling a fresh 64 MiB buffer otherwise costs
/// 16,384 page faults, which measured as much as hashing and compressing
/// it together.
pub(crate) fn big_buffer(len: usize) -> Vec<u8> {
    const HUGE: usize = 2 << 20;
    let mut v = Vec::with_capacity(len);
    if len >= 4 * HUGE {
        let start = v.as_mut_ptr() as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let usable = (start + len).saturating_sub(aligned) & !(HUGE - 1);
        if usable > 0 {
            // SAFETY: the range lies inside this vector's allocation, and
            // MADV_HUGEPAGE only changes how the kernel backs it, never its
            // contents; failure (no THP support) leaves it as it was.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, usable, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

pub(crate) static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

pub(crate) fn hash_page(page: &[u8]) -> [u8; 32] {
    *blake3::hash(page).as_bytes()
}

/// The digest of a state given its parts: the one definition of the
/// canonical form. Memory enters as the list of its page hashes, so a
/// running task re-hashes only the pages that changed.
pub(crate) fn canonical_digest(
    module: &Digest,
    point: u64,
    finished: Option<i32>,
    memory_len: usize,
    page_hashes: &[[u8; 32]],
    globals: &[GlobalValue],
    host: &[u8],
) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(&module.0);
    h.update(&point.to_le_bytes());
    match finished {
        None => h.update(&[0]),
        Some(s) => h.update(&[1]).update(&s.to_le_bytes()),
    };
    h.update(&(PAGE_SIZE as u32).to_le_bytes());
    h.update(&(memory_len as u64).to_le_bytes());
    // One call: BLAKE3 hashes a long input many chunks at a time, but
    // 32 bytes per call one at a time.
    h.update(page_hashes.as_flattened());
    h.update(&(globals.len() as u32).to_le_bytes());
    for g in globals {
        h.update(&[g.kind as u8]).update(&g.bits.to_le_bytes());
    }
    h.update(&(host.len() as u64).to_le_bytes());
    h.update(host);
    Digest(*h.finalize().as_bytes())
}

/// A growable set of page indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct PageSet {
    words: Vec<u64>,
}

impl PageSet {
    pub(crate) fn insert(&mut self, page: usize) {
        let w = page / 64;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (page % 64);
    }

    pub(crate) fn clear(&mut self) {
        self.words.clear();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
}

/// A running task's memory as of its last synchronised point, with page
/// hashes and the pages changed since the delta base.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    shadow: Vec<u8>,
    hashes: Vec<[u8; 32]>,
    /// Pages changed since the base was taken.
    since_base: PageSet,
    /// The digest of the base, once one was taken.
    base: Option<Digest>,
}

impl Tracker {
    /// Starts tracking from a restored state: its memory is the shadow and,
    /// as the peer holds it, a valid base.
    pub(crate) fn from_state(state: &State, digest: Digest) -> Tracker {
        let mut shadow = big_buffer(state.memory.len());
        shadow.extend_from_slice(&state.memory);
        Tracker {
            shadow,
            hashes: state.hashes.clone(),
            since_base: PageSet::default(),
            base: Some(digest),
        }
    }

    /// Brings the shadow up to date with `live`; returns how many pages
    /// changed since the previous sync.
    pub(crate) fn sync(&mut self, live: &[u8]) -> usize {
        let mut changed = 0;
        let old_len = self.shadow.len();
        if live.len() > self.shadow.capacity() {
            // Grow geometrically (memory often grows a page at a time), in
            // a huge-page-backed buffer; untouched capacity costs nothing.
            let mut bigger = big_buffer(
                live.len()
                    .max((self.shadow.capacity() * 2).min(MAX_WASM32_MEMORY)),
            );
            bigger.extend_from_slice(&self.shadow);
            self.shadow = bigger;
            self.hashes
                .reserve(live.len() / PAGE_SIZE - self.hashes.len());
        }
        for (i, page) in live.chunks(PAGE_SIZE).enumerate() {
            let start = i * PAGE_SIZE;
            if start < old_len {
                let shadow = &mut self.shadow[start..start + PAGE_SIZE];
                if shadow != page {
                    shadow.copy_from_slice(page);
                    self.hashes[i] = hash_page(page);
                    self.since_base.insert(i);
                    changed += 1;
                }
            } else {
                self.shadow.extend_from_slice(page);
                self.hashes.push(hash_page(page));
                self.since_base.insert(i);
                changed += 1;
            }
        }
        changed
    }

    pub(crate) fn memory(&self) -> &[u8] {
        &self.shadow
    }

    pub(crate) fn hashes(&self) -> &[[u8; 32]] {
        &self.hashes
    }

    pub(crate) fn base(&self) -> Option<Digest> {
        self.base
    }

    /// Pages changed since the base, in ascending order.
    pub(crate) fn changed_since_base(&self) -> impl Iterator<Item = usize> + '_ {
        self.since_base.iter()
    }

    /// Makes the current (synchronised) memory the base for later deltas.
    pub(crate) fn set_base(&mut self, digest: Digest) {
        self.base = Some(digest);
        self.since_base.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_set_iterates_in_order() {
        let mut s = PageSet::default();
        for p in [130, 0, 63, 64, 5] {
            s.insert(p);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 130]);
        s.clear();
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn tracker_finds_changed_and_new_pages() {
        let mut t = Tracker::default();
        let mut mem = vec![0u8; WASM_PAGE_SIZE];
        assert_eq!(t.sync(&mem), WASM_PAGE_SIZE / PAGE_SIZE);
        t.set_base(Digest::of(b"base"));
        mem[PAGE_SIZE * 3 + 7] = 1;
        mem.resize(2 * WASM_PAGE_SIZE, 0);
        let changed = t.sync(&mem);
        assert_eq!(changed, 1 + WASM_PAGE_SIZE / PAGE_SIZE);
        let since: Vec<_> = t.changed_since_base().collect();
        assert_eq!(since[0], 3);
        assert_eq!(since.len(), changed);
        assert_eq!(t.memory(), &mem[..]);
        let fresh: Vec<_> = mem.chunks(PAGE_SIZE).map(hash_page).collect();
        assert_eq!(t.hashes(), &fresh[..]);
    }
}
