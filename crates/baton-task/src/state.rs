//! Task state and its digest.
//!
//! This module owns [`State`] (everything needed to continue a task from a
//! point, DESIGN §2), the canonical form that the state [`Digest`] hashes,
//! and the page tracker that keeps a running task's digest and deltas cheap:
//! it keeps a hash per page and re-hashes only the pages written since the
//! last point. Which pages those are, the kernel says where it can
//! ([`crate::dirty`]); elsewhere a copy of the memory as of the last point
//! is compared with it, one pass over the whole memory per point (wasm has
//! no write barrier of its own).
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

/// How a running task's changed pages are found at a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyTracking {
    /// The kernel says which pages were written (userfaultfd
    /// write-protection in asynchronous mode and `PAGEMAP_SCAN`, Linux 6.7
    /// and later): a point costs what the step wrote, and no copy of the
    /// memory is kept.
    Kernel,
    /// The memory is compared with a copy of it kept since the last point:
    /// a pass over the whole memory at every point, and twice the memory.
    Compare,
}

impl DirtyTracking {
    /// The best this machine offers: [`DirtyTracking::Kernel`] if the
    /// kernel can (checked once per process) and `BATON_DIRTY_PAGES` is not
    /// `compare`, else [`DirtyTracking::Compare`] with the reason.
    pub fn best() -> (DirtyTracking, Option<String>) {
        if std::env::var_os("BATON_DIRTY_PAGES").is_some_and(|v| v == "compare") {
            return (
                DirtyTracking::Compare,
                Some("BATON_DIRTY_PAGES=compare".to_string()),
            );
        }
        match crate::dirty::probe() {
            Ok(()) => (DirtyTracking::Kernel, None),
            Err(why) => (DirtyTracking::Compare, Some(why.0)),
        }
    }

    /// A short name for the user (`baton inspect`, logs).
    pub fn describe(self) -> &'static str {
        match self {
            DirtyTracking::Kernel => "kernel (userfaultfd write-protection, PAGEMAP_SCAN)",
            DirtyTracking::Compare => "compare with a copy of the memory",
        }
    }
}

/// A running task's page hashes as of its last synchronised point, the
/// pages changed since the delta base, and the means of finding which
/// pages changed ([`DirtyTracking`]).
///
/// Whichever way pages are found, a page counts as changed when its hash
/// differs from the one it had at the previous sync, so both ways yield
/// the same digests and the same deltas, byte for byte.
#[derive(Debug)]
pub(crate) struct Tracker {
    pages: Pages,
    /// The digest of the base, once one was taken.
    base: Option<Digest>,
    way: Way,
}

/// The page hashes and the pages changed since the base.
#[derive(Debug, Default)]
struct Pages {
    hashes: Vec<[u8; 32]>,
    since_base: PageSet,
}

enum Way {
    /// Nothing tracked yet: the next sync hashes every page, then tracks
    /// the way given.
    Unarmed(DirtyTracking),
    /// A copy of the memory as of the last sync.
    Compare { shadow: Vec<u8> },
    /// The kernel's record of written pages.
    Kernel(crate::dirty::Written),
}

impl std::fmt::Debug for Way {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Way::Unarmed(t) => write!(f, "Unarmed({t:?})"),
            Way::Compare { shadow } => write!(f, "Compare({} bytes)", shadow.len()),
            Way::Kernel(w) => write!(f, "Kernel(open: {})", w.is_open()),
        }
    }
}

/// Past this share of the pages written between two points, protection is
/// turned off: a write fault per page (about 1.3 µs) then costs more than
/// hashing every page at the point.
const OPEN_ABOVE: (usize, usize) = (1, 2);
/// While off, protection comes back once fewer than this share of the
/// pages changed at a sync.
const PROTECT_BELOW: (usize, usize) = (1, 4);

fn share_above(part: usize, whole: usize, (num, den): (usize, usize)) -> bool {
    part * den > whole * num
}

impl Pages {
    /// Re-hashes page `i` of `live`; returns whether it changed.
    fn rehash(&mut self, live: &[u8], i: usize) -> bool {
        let h = hash_page(&live[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]);
        if i < self.hashes.len() {
            if self.hashes[i] == h {
                return false;
            }
            self.hashes[i] = h;
        } else {
            self.hashes.push(h);
        }
        self.since_base.insert(i);
        true
    }

    /// Re-hashes every page (the first sync, or after the kernel failed).
    fn rehash_all(&mut self, live: &[u8]) -> usize {
        self.hashes
            .reserve((live.len() / PAGE_SIZE).saturating_sub(self.hashes.len()));
        (0..live.len() / PAGE_SIZE)
            .filter(|&i| self.rehash(live, i))
            .count()
    }

    /// The compare: `shadow` is the memory as of the previous sync.
    fn compare(&mut self, shadow: &mut Vec<u8>, live: &[u8]) -> usize {
        let mut changed = 0;
        let old_len = shadow.len();
        if live.len() > shadow.capacity() {
            // Grow geometrically (memory often grows a page at a time), in
            // a huge-page-backed buffer; untouched capacity costs nothing.
            let mut bigger = big_buffer(
                live.len()
                    .max((shadow.capacity() * 2).min(MAX_WASM32_MEMORY)),
            );
            bigger.extend_from_slice(shadow);
            *shadow = bigger;
            self.hashes
                .reserve((live.len() / PAGE_SIZE).saturating_sub(self.hashes.len()));
        }
        for (i, page) in live.chunks(PAGE_SIZE).enumerate() {
            let start = i * PAGE_SIZE;
            if start < old_len {
                let old = &mut shadow[start..start + PAGE_SIZE];
                if old != page {
                    old.copy_from_slice(page);
                    self.hashes[i] = hash_page(page);
                    self.since_base.insert(i);
                    changed += 1;
                }
            } else {
                shadow.extend_from_slice(page);
                self.hashes.push(hash_page(page));
                self.since_base.insert(i);
                changed += 1;
            }
        }
        changed
    }

    /// The kernel's way: re-hashes the pages `written` reports (and the
    /// pages memory grew by), and turns protection off or on by how many
    /// pages that was.
    fn kernel(
        &mut self,
        written: &mut crate::dirty::Written,
        live: &[u8],
    ) -> Result<usize, crate::dirty::Unavailable> {
        if !written.covers(live) {
            return Err(crate::dirty::Unavailable("the memory moved".to_string()));
        }
        let was_open = written.is_open();
        let old_pages = self.hashes.len();
        let (mut seen, mut changed) = (0, 0);
        written.scan(&mut |first, count| {
            for i in first..(first + count).min(old_pages) {
                seen += 1;
                changed += usize::from(self.rehash(live, i));
            }
        })?;
        written.grow(live)?;
        for i in old_pages..live.len() / PAGE_SIZE {
            changed += usize::from(self.rehash(live, i));
        }
        let pages = live.len() / PAGE_SIZE;
        if was_open {
            if !share_above(changed, pages, PROTECT_BELOW) {
                written.protect()?;
            }
        } else if share_above(seen, pages, OPEN_ABOVE) {
            written.open()?;
        }
        Ok(changed)
    }
}

impl Tracker {
    /// A tracker that has seen nothing yet: the first sync hashes every
    /// page.
    pub(crate) fn new(tracking: DirtyTracking) -> Tracker {
        Tracker {
            pages: Pages::default(),
            base: None,
            way: Way::Unarmed(tracking),
        }
    }

    /// Starts tracking from a restored state whose memory `live` now holds:
    /// it is, as the peer holds it, a valid base.
    pub(crate) fn from_state(
        state: &State,
        digest: Digest,
        tracking: DirtyTracking,
        live: &[u8],
    ) -> Tracker {
        let mut t = Tracker {
            pages: Pages {
                hashes: state.hashes.clone(),
                since_base: PageSet::default(),
            },
            base: Some(digest),
            way: Way::Unarmed(tracking),
        };
        t.arm(tracking, live);
        t
    }

    /// The way pages are found now (after a fallback, the compare).
    pub(crate) fn tracking(&self) -> DirtyTracking {
        match &self.way {
            Way::Unarmed(t) => *t,
            Way::Compare { .. } => DirtyTracking::Compare,
            Way::Kernel(_) => DirtyTracking::Kernel,
        }
    }

    fn arm(&mut self, tracking: DirtyTracking, live: &[u8]) {
        if tracking == DirtyTracking::Kernel {
            match crate::dirty::Written::arm(live) {
                Ok(written) => {
                    self.way = Way::Kernel(written);
                    return;
                }
                Err(why) => tracing::debug!(%why, "dirty pages: falling back to the compare"),
            }
        }
        let mut shadow = big_buffer(live.len());
        shadow.extend_from_slice(live);
        self.way = Way::Compare { shadow };
    }

    /// Brings the hashes up to date with `live` (whose length is a whole
    /// number of pages and never shrinks); returns how many pages changed
    /// since the previous sync.
    pub(crate) fn sync(&mut self, live: &[u8]) -> usize {
        // Either the pages changed, or the way to track from here on after
        // every page is hashed again.
        let outcome = match &mut self.way {
            Way::Unarmed(tracking) => Err(*tracking),
            Way::Compare { shadow } => Ok(self.pages.compare(shadow, live)),
            Way::Kernel(written) => self.pages.kernel(written, live).map_err(|why| {
                tracing::warn!(%why, "dirty pages: the kernel failed; comparing from now on");
                DirtyTracking::Compare
            }),
        };
        outcome.unwrap_or_else(|tracking| {
            let changed = self.pages.rehash_all(live);
            self.arm(tracking, live);
            changed
        })
    }

    pub(crate) fn hashes(&self) -> &[[u8; 32]] {
        &self.pages.hashes
    }

    pub(crate) fn base(&self) -> Option<Digest> {
        self.base
    }

    /// Pages changed since the base, in ascending order.
    pub(crate) fn changed_since_base(&self) -> impl Iterator<Item = usize> + '_ {
        self.pages.since_base.iter()
    }

    /// Makes the current (synchronised) memory the base for later deltas.
    pub(crate) fn set_base(&mut self, digest: Digest) {
        self.base = Some(digest);
        self.pages.since_base.clear();
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
        let mut t = Tracker::new(DirtyTracking::Compare);
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
        let fresh: Vec<_> = mem.chunks(PAGE_SIZE).map(hash_page).collect();
        assert_eq!(t.hashes(), &fresh[..]);
    }
}
