//! [`CodeCache`]: compiled code kept on disk, so that a module is compiled
//! once per machine rather than once per run (CPython for WASI is 26 MB of
//! wasm and takes tens of seconds to compile with Cranelift on two cores).
//!
//! This module owns one directory ([`CodeCache::default_dir`] unless told
//! otherwise) and, in it, only the files it names: entries `<key>.code` and
//! their temporaries `.<key>.<pid>.<n>.tmp`. It never reads, writes or
//! deletes any other file, takes no locks, and keeps no state in memory.
//! It does not prepare modules ([`crate::module`]) or configure engines
//! ([`crate::engine`]): it compiles exactly the bytes it is given with
//! exactly the engine it is given.
//!
//! The cache can never make a load fail. Every problem with it (a missing,
//! unreadable, corrupt, truncated or foreign entry; a directory that is not
//! the user's own; a full disk) is logged with `tracing::warn!` and the
//! module is compiled as if there were no cache. Only a compilation failure
//! reaches the caller.
//!
//! # The key
//!
//! An entry's key is the blake3 hash of the bytes compiled and of
//! [`wasmtime::Engine::precompile_compatibility_hash`] (the target, every
//! Cranelift flag, the tunables such as epoch interruption, the wasm
//! features and wasmtime's version), so code compiled with another
//! configuration or another wasmtime is never reused. The file format
//! version is part of the key too, so that two baton builds with different
//! formats do not keep replacing each other's entries.
//!
//! # The file format
//!
//! A header of 88 bytes, all integers little-endian:
//!
//! | bytes  | content                                  |
//! |--------|------------------------------------------|
//! | 0..8   | magic `BATONCC\0`                        |
//! | 8..12  | format version, 1                        |
//! | 12..16 | zero (reserved)                          |
//! | 16..24 | payload length                           |
//! | 24..56 | blake3 of the payload                    |
//! | 56..88 | the key (so a renamed file is not taken) |
//!
//! then the payload: the bytes of [`wasmtime::Module::serialize`].
//!
//! # Why `Module::deserialize` is sound here
//!
//! Deserializing runs the machine code in the file, so it must only ever
//! see bytes that [`wasmtime::Module::serialize`] produced. The cache
//! relies on three things:
//!
//! 1. The directory is the user's own: on Unix it is created with mode
//!    0700, and before any entry is read it must belong to the effective
//!    user and be writable by nobody else (otherwise the cache is not used
//!    at all); every entry must also belong to the user and be writable by
//!    nobody else. Whoever can write there anyway can already run code as
//!    the user (by editing `~/.profile`, say), so nothing is given away.
//! 2. Entries are only ever created whole: written to a temporary file and
//!    renamed over the entry, so a reader sees an old entry or a new one.
//! 3. Accidents are caught before wasmtime sees a byte: the header must
//!    match, the length must be exact and the payload's blake3 must match,
//!    which catches truncation, torn writes after a power loss, bit rot and
//!    files from other programs or other formats. wasmtime itself then
//!    checks that the code was compiled for this engine.
//!
//! The entry is read into memory and checked there, then deserialized from
//! that same buffer ([`wasmtime::Module::deserialize`], which copies it into
//! its own executable mapping). `Module::deserialize_file` would avoid one
//! copy by mapping the file, but it cannot be used soundly here: it expects
//! the serialized module alone in the file (no header), and the mapping
//! would read the file lazily, so what was checked need not be what runs if
//! the file changed in between. A transient second copy of the code is the
//! price.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::Hash;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, warn};
use wasmtime::Module;

use crate::TaskError;

/// The entry file format's version; part of the header and of the key.
const FORMAT_VERSION: u32 = 1;
/// The length of an entry's header, in bytes.
const HEADER_LEN: usize = 88;

const MAGIC: [u8; 8] = *b"BATONCC\0";
/// blake3 `derive_key` context for keys. It names the format version (keep
/// the two in step; a test checks), so that builds with another format
/// never share a key.
const KEY_CONTEXT: &str = "baton code cache key, format 1";
const ENTRY_SUFFIX: &str = ".code";
/// Beside an entry made by [`CodeCache::load_or_make`]: its note.
const NOTE_SUFFIX: &str = ".note";
/// Largest note read back (notes are a few hundred bytes).
const MAX_NOTE: u64 = 1 << 20;
const TEMP_SUFFIX: &str = ".tmp";
/// A temporary file older than this was left by a process that died while
/// writing it (writing takes seconds) and is removed by eviction.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Distinguishes temporaries of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An error from [`CodeCache::load_or_compile`]. Problems with the cache
/// itself are never errors (they are logged and the module is compiled).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// wasmtime could not compile the module.
    #[error("cannot compile the module: {0}")]
    Compile(String),
}

impl From<CacheError> for TaskError {
    fn from(e: CacheError) -> TaskError {
        match e {
            CacheError::Compile(message) => TaskError::Compile(message),
        }
    }
}

/// Where a module returned by [`CodeCache::load_or_compile`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Loaded from the cache; nothing was compiled.
    Hit,
    /// Compiled now (and stored, unless a warning said otherwise).
    Compiled,
}

/// An on-disk cache of compiled code in one directory. Cheap to clone; any
/// number of threads and processes may use the same directory at once.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl CodeCache {
    /// The default bound on the cache's size: 2 GiB. After each write, the
    /// least recently used entries are removed until the entries together
    /// are no larger (compiled CPython is on the order of 100 MB, so this
    /// keeps a good few large modules); the entry just written is always
    /// kept.
    pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

    /// A cache in `dir`, bounded to [`CodeCache::DEFAULT_MAX_BYTES`]. Nothing is
    /// touched until the first load; the directory is then created with its
    /// parents.
    pub fn new(dir: PathBuf) -> CodeCache {
        CodeCache {
            dir,
            max_bytes: CodeCache::DEFAULT_MAX_BYTES,
        }
    }

    /// The same cache bounded to `max_bytes` instead.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> CodeCache {
        self.max_bytes = max_bytes;
        self
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory to use by default: `$BATON_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/baton/code`, else `$HOME/.cache/baton/code`; `None`
    /// if none is set. Empty values count as unset, and so (as the XDG
    /// specification asks) do relative `XDG_CACHE_HOME` and `HOME`.
    pub fn default_dir() -> Option<PathBuf> {
        dir_from(
            std::env::var_os("BATON_CACHE_DIR"),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Returns `bytes` compiled by `engine`: from the cache if it holds
    /// them, else compiled now and stored (a store that fails is a warning).
    ///
    /// # Errors
    ///
    /// [`CacheError::Compile`] if wasmtime cannot compile `bytes`.
    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> Result<(Module, CodeSource), CacheError> {
        if let Err(reason) = self.prepare_dir() {
            warn!(dir = %self.dir.display(), "not using the code cache: {reason}");
            return Ok((
                CodeCache::compile_uncached(engine, bytes)?,
                CodeSource::Compiled,
            ));
        }
        let key = key(engine, bytes);
        let path = self.entry_path(&key);
        let started = Instant::now();
        match load(engine, &key, &path) {
            Ok(Some(module)) => {
                debug!(path = %path.display(), elapsed = ?started.elapsed(), "code cache hit");
                return Ok((module, CodeSource::Hit));
            }
            Ok(None) => debug!(path = %path.display(), "code cache miss"),
            Err(reason) => {
                warn!(path = %path.display(), "ignoring a code cache entry ({reason}); compiling and replacing it");
            }
        }
        let module = CodeCache::compile_uncached(engine, bytes)?;
        debug!(elapsed = ?started.elapsed(), "compiled");
        match self.store(&key, &module) {
            Ok(()) => self.evict(&path),
            Err(e) => warn!(path = %path.display(), "cannot store compiled code in the cache: {e}"),
        }
        Ok((module, CodeSource::Compiled))
    }

    /// As [`CodeCache::load_or_compile`], for bytes that are costly to
    /// make (a module prepared and made suspendable): the entry is keyed by
    /// `source`, what the bytes are made from, and `make` runs only on a
    /// miss. It returns the bytes to compile and a small note, which is kept
    /// beside the compiled code (`<key>.note`) and returned on a hit instead
    /// of running `make` again.
    ///
    /// # Errors
    ///
    /// What `make` returns, or [`CacheError::Compile`].
    pub(crate) fn load_or_make(
        &self,
        engine: &wasmtime::Engine,
        source: &[u8],
        make: impl FnOnce() -> Result<(Vec<u8>, Vec<u8>), TaskError>,
    ) -> Result<(Module, Vec<u8>, CodeSource), TaskError> {
        if let Some((module, note)) = self.lookup(engine, source) {
            return Ok((module, note, CodeSource::Hit));
        }
        let (bytes, note) = make()?;
        let module = CodeCache::compile_uncached(engine, &bytes)?;
        if self.prepare_dir().is_ok() {
            let key = key(engine, source);
            let path = self.entry_path(&key);
            // The note first: an entry without its note is a miss, never a
            // note without its code.
            match self
                .store_note(&key, &note)
                .and_then(|()| self.store(&key, &module))
            {
                Ok(()) => self.evict(&path),
                Err(e) => {
                    warn!(path = %path.display(), "cannot store compiled code in the cache: {e}")
                }
            }
        }
        Ok((module, note, CodeSource::Compiled))
    }

    /// The compiled code and note kept for `source`, if both are there and
    /// whole.
    pub(crate) fn lookup(
        &self,
        engine: &wasmtime::Engine,
        source: &[u8],
    ) -> Option<(Module, Vec<u8>)> {
        self.prepare_dir().ok()?;
        let key = key(engine, source);
        let path = self.entry_path(&key);
        let note = match read_note(&self.note_path(&key), &key) {
            Ok(note) => note?,
            Err(reason) => {
                warn!(path = %path.display(), "ignoring a code cache note ({reason})");
                return None;
            }
        };
        match load(engine, &key, &path) {
            Ok(Some(module)) => Some((module, note)),
            Ok(None) => None,
            Err(reason) => {
                warn!(path = %path.display(), "ignoring a code cache entry ({reason}); compiling and replacing it");
                None
            }
        }
    }

    fn note_path(&self, key: &blake3::Hash) -> PathBuf {
        self.dir.join(format!("{}{NOTE_SUFFIX}", key.to_hex()))
    }

    /// Writes a note atomically: the same header as an entry, then the note.
    fn store_note(&self, key: &blake3::Hash, note: &[u8]) -> io::Result<()> {
        self.write_whole(key, &self.note_path(key), note)
    }

    /// Writes the header for `payload` and `payload` to a temporary file,
    /// renamed over `dest`, so that readers (in any process) see a whole
    /// file or none.
    fn write_whole(&self, key: &blake3::Hash, dest: &Path, payload: &[u8]) -> io::Result<()> {
        let temp = self.dir.join(format!(
            ".{}.{}.{}{TEMP_SUFFIX}",
            key.to_hex(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temp)?;
            file.write_all(&encode_header(key, payload))?;
            file.write_all(payload)?;
            drop(file);
            fs::rename(&temp, dest)
        };
        let result = write();
        if result.is_err() {
            // Best effort: a leftover is removed by a later eviction.
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Compiles `bytes` with `engine`, without the cache.
    ///
    /// # Errors
    ///
    /// [`CacheError::Compile`] if wasmtime cannot compile `bytes`.
    pub fn compile_uncached(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<Module, CacheError> {
        Module::new(engine, bytes).map_err(|e| CacheError::Compile(format!("{e:#}")))
    }

    fn entry_path(&self, key: &blake3::Hash) -> PathBuf {
        self.dir.join(format!("{}{ENTRY_SUFFIX}", key.to_hex()))
    }

    /// Creates the directory if need be and checks that it is the user's own
    /// (see the module documentation for why that matters).
    fn prepare_dir(&self) -> Result<(), String> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let meta = fs::metadata(&self.dir).map_err(|e| format!("cannot inspect it: {e}"))?;
        if !meta.is_dir() {
            return Err("it is not a directory".to_string());
        }
        owned_by_user(&meta, "the directory")
    }

    /// Writes `module` as the entry for `key`: to a temporary file first,
    /// renamed over the entry, so that readers (in any process) see a whole
    /// entry or none. Two processes storing the same key both succeed; the
    /// last rename wins, and either entry is valid.
    ///
    /// There is no fsync: an entry torn by a power loss fails the integrity
    /// check and is compiled again, which is cheaper than syncing ~100 MB on
    /// every compile.
    fn store(&self, key: &blake3::Hash, module: &Module) -> io::Result<()> {
        let payload = module
            .serialize()
            .map_err(|e| io::Error::other(format!("cannot serialize: {e:#}")))?;
        self.write_whole(key, &self.entry_path(key), &payload)
    }

    /// Removes the least recently used entries (by modification time, which
    /// a hit refreshes) until the entries fit in `max_bytes`, never removing
    /// `keep`; also removes stale temporaries. Errors are warnings: another
    /// process may be evicting at the same time.
    fn evict(&self, keep: &Path) {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                warn!(dir = %self.dir.display(), "cannot list the code cache: {e}");
                return;
            }
        };
        let now = SystemTime::now();
        let mut total = 0u64;
        let mut candidates = Vec::new();
        for item in listing.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            // `DirEntry::metadata` does not follow symbolic links, so a link
            // is neither counted nor removed.
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if is_temp_name(name) {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMP_AGE {
                    let _ = fs::remove_file(item.path());
                }
                continue;
            }
            if !is_entry_name(name) {
                continue;
            }
            total += meta.len();
            let path = item.path();
            if path != keep {
                candidates.push((modified, path, meta.len()));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        // Oldest first; ties by name, so that eviction is deterministic.
        candidates.sort();
        for (_, path, len) in candidates {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    debug!(path = %path.display(), "evicted from the code cache");
                    total -= len;
                    // Its note, if it has one, goes with it.
                    let _ = fs::remove_file(path.with_extension(&NOTE_SUFFIX[1..]));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(e) => warn!(path = %path.display(), "cannot evict from the code cache: {e}"),
            }
        }
    }
}

/// [`CodeCache::default_dir`] without the environment, for testing.
fn dir_from(
    baton: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(dir) = baton.filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute(xdg_cache_home) {
        return Some(xdg.join("baton").join("code"));
    }
    absolute(home).map(|h| h.join(".cache").join("baton").join("code"))
}

/// The key of `bytes` compiled by `engine`.
fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    // The length first, so that the bytes and the engine's hash cannot run
    // into each other.
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
    engine
        .precompile_compatibility_hash()
        .hash(&mut Blake3Writer(&mut hasher));
    hasher.finalize()
}

/// Feeds a [`std::hash::Hash`] into blake3: `precompile_compatibility_hash`
/// offers only that interface, and a 64-bit `DefaultHasher` would make
/// collisions (which would run code compiled for another configuration)
/// merely unlikely rather than impossible in practice. The values hashed
/// use native byte order, which is fine for a cache that never leaves the
/// machine.
struct Blake3Writer<'a>(&'a mut blake3::Hasher);

impl std::hash::Hasher for Blake3Writer<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Not used (the key is the whole blake3 digest), but must be
        // something consistent.
        let digest = self.0.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_bytes()[..8]);
        u64::from_le_bytes(first)
    }
}

fn encode_header(key: &blake3::Hash, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[24..56].copy_from_slice(blake3::hash(payload).as_bytes());
    header[56..88].copy_from_slice(key.as_bytes());
    header
}

/// Checks an entry's header and payload; returns the payload.
fn check_entry<'a>(data: &'a [u8], key: &blake3::Hash) -> Result<&'a [u8], String> {
    let Some((header, payload)) = data.split_at_checked(HEADER_LEN) else {
        return Err(format!("{} bytes, shorter than a header", data.len()));
    };
    if header[0..8] != MAGIC {
        return Err("not a baton code cache entry".to_string());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION || header[12..16] != [0; 4] {
        return Err(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    if header[56..88] != *key.as_bytes() {
        return Err("the entry is for another key".to_string());
    }
    let length = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if length != payload.len() as u64 {
        return Err(format!(
            "the payload is {} bytes, the header says {length}",
            payload.len()
        ));
    }
    if header[24..56] != *blake3::hash(payload).as_bytes() {
        return Err("the payload's checksum does not match".to_string());
    }
    Ok(payload)
}

/// Reads the note at `path`: `Ok(None)` if there is none, `Err` with the
/// reason if there is one that cannot be used.
fn read_note(path: &Path, key: &blake3::Hash) -> Result<Option<Vec<u8>>, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_NOTE + HEADER_LEN as u64 {
        return Err("not a note".to_string());
    }
    owned_by_user(&meta, "the note")?;
    let mut data = Vec::new();
    file.take(MAX_NOTE + HEADER_LEN as u64)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(check_entry(&data, key)?.to_vec()))
}

/// Loads the entry at `path`: `Ok(None)` if there is none, `Err` with the
/// reason if there is one that cannot be used.
fn load(
    engine: &wasmtime::Engine,
    key: &blake3::Hash,
    path: &Path,
) -> Result<Option<Module>, String> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_string());
    }
    owned_by_user(&meta, "the entry")?;
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut data)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let payload = check_entry(&data, key)?;
    // SAFETY: `payload` is exactly what `Module::serialize` produced for
    // this key, the one thing `deserialize` requires: the entry sits in a
    // directory that only this user can write to (checked by `prepare_dir`
    // and `owned_by_user`), entries are only ever created whole by `store`,
    // and the bytes in hand, which are the bytes deserialized, passed the
    // header, length and blake3 checks against accidental damage. See the
    // module documentation.
    let module = unsafe { Module::deserialize(engine, payload) }
        .map_err(|e| format!("wasmtime rejected it: {e:#}"))?;
    // Marks the entry as recently used for eviction. Failing to is harmless
    // (the entry may merely be evicted early).
    if let Err(e) = file.set_modified(SystemTime::now()) {
        debug!(path = %path.display(), "cannot refresh a code cache entry's time: {e}");
    }
    Ok(Some(module))
}

/// Whether `meta` belongs to this process's effective user and is writable
/// by no one else.
#[cfg(unix)]
fn owned_by_user(meta: &fs::Metadata, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    if meta.uid() != user {
        return Err(format!(
            "{what} belongs to uid {}, not to this user (uid {user})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by other users (mode {:o}); make it 0700/0600",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn owned_by_user(_meta: &fs::Metadata, _what: &str) -> Result<(), String> {
    Ok(())
}

fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(ENTRY_SUFFIX)
        .is_some_and(|stem| stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name.ends_with(TEMP_SUFFIX)
        && name
            .get(1..65)
            .is_some_and(|stem| stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use wasmtime::{Config, Instance, OptLevel, Store};

    use super::*;

    /// A module exporting `f`, which returns `n`: distinct `n`, distinct keys.
    fn module_bytes(n: i32) -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ExportKind, ExportSection, Function, FunctionSection, TypeSection, ValType,
        };
        let mut types = TypeSection::new();
        types.ty().function([], [ValType::I32]);
        let mut functions = FunctionSection::new();
        functions.function(0);
        let mut exports = ExportSection::new();
        exports.export("f", ExportKind::Func, 0);
        let mut body = Function::new([]);
        body.instructions().i32_const(n).end();
        let mut code = CodeSection::new();
        code.function(&body);
        let mut module = wasm_encoder::Module::new();
        module
            .section(&types)
            .section(&functions)
            .section(&exports)
            .section(&code);
        module.finish()
    }

    fn engine(opt_level: OptLevel) -> wasmtime::Engine {
        let mut config = Config::new();
        config.cranelift_opt_level(opt_level);
        wasmtime::Engine::new(&config).unwrap()
    }

    /// Runs `f` of a module made by `module_bytes`.
    fn call_f(engine: &wasmtime::Engine, module: &Module) -> i32 {
        let mut store = Store::new(engine, ());
        // For engines with epoch interruption, whose default deadline is now.
        store.set_epoch_deadline(1 << 20);
        let instance = Instance::new(&mut store, module, &[]).unwrap();
        let f = instance.get_typed_func::<(), i32>(&mut store, "f").unwrap();
        f.call(&mut store, ()).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        names(dir)
            .into_iter()
            .filter(|n| is_entry_name(n))
            .map(|n| dir.join(n))
            .collect()
    }

    fn set_age(path: &Path, seconds: u64) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(seconds))
            .unwrap();
    }

    fn load(cache: &CodeCache, engine: &wasmtime::Engine, n: i32) -> CodeSource {
        let (module, source) = cache.load_or_compile(engine, &module_bytes(n)).unwrap();
        assert_eq!(call_f(engine, &module), n);
        source
    }

    #[test]
    fn hit_after_miss() {
        let tmp = tempfile::tempdir().unwrap();
        // Parents are created.
        let dir = tmp.path().join("a").join("b");
        let cache = CodeCache::new(dir.clone());
        let engine = engine(OptLevel::Speed);
        assert_eq!(load(&cache, &engine, 7), CodeSource::Compiled);
        assert_eq!(load(&cache, &engine, 7), CodeSource::Hit);
        assert_eq!(load(&cache, &engine, 8), CodeSource::Compiled);
        assert_eq!(load(&cache, &engine, 8), CodeSource::Hit);
        assert_eq!(load(&cache, &engine, 7), CodeSource::Hit);
        assert_eq!(entries(&dir).len(), 2);
        assert_eq!(
            names(&dir).len(),
            2,
            "no temporaries left: {:?}",
            names(&dir)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&entries(&dir)[0]), 0o600);
        }
        // A second cache object (as in another process) hits too.
        assert_eq!(load(&CodeCache::new(dir), &engine, 8), CodeSource::Hit);
    }

    #[test]
    fn made_bytes_are_made_once_and_their_note_comes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf());
        let engine = engine(OptLevel::Speed);
        let made = std::cell::Cell::new(0);
        let get = |cache: &CodeCache| {
            let (module, note, source) = cache
                .load_or_make(&engine, b"source 1", || {
                    made.set(made.get() + 1);
                    Ok((module_bytes(5), b"the note".to_vec()))
                })
                .unwrap();
            assert_eq!(call_f(&engine, &module), 5);
            assert_eq!(note, b"the note");
            source
        };
        assert_eq!(get(&cache), CodeSource::Compiled);
        assert_eq!(get(&cache), CodeSource::Hit);
        assert_eq!(
            get(&CodeCache::new(tmp.path().to_path_buf())),
            CodeSource::Hit
        );
        assert_eq!(made.get(), 1);
        // A damaged note is a miss: made again, and then a hit again.
        let note = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "note"))
            .unwrap();
        let mut bytes = fs::read(&note).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&note, bytes).unwrap();
        assert_eq!(get(&cache), CodeSource::Compiled);
        assert_eq!(get(&cache), CodeSource::Hit);
        assert_eq!(made.get(), 2);
        // An entry without its note is a miss too.
        fs::remove_file(&note).unwrap();
        assert_eq!(get(&cache), CodeSource::Compiled);
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn compile_errors_reach_the_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf());
        let engine = engine(OptLevel::Speed);
        let err = cache
            .load_or_compile(&engine, b"\0asm\x01\0\0\0\x05")
            .unwrap_err();
        assert!(matches!(err, CacheError::Compile(_)), "{err}");
        assert!(matches!(TaskError::from(err), TaskError::Compile(_)));
        assert!(entries(tmp.path()).is_empty());
    }

    #[test]
    fn damaged_entries_are_misses_and_are_replaced() {
        type Damage = fn(&mut Vec<u8>);
        let damages: [(&str, Damage); 8] = [
            ("flip a payload byte", |d| {
                let i = d.len() - (d.len() - HEADER_LEN) / 2;
                d[i] ^= 0x40;
            }),
            ("flip the last byte", |d| *d.last_mut().unwrap() ^= 1),
            ("flip a magic byte", |d| d[0] ^= 1),
            ("flip the checksum", |d| d[30] ^= 1),
            ("other version", |d| d[8] = 2),
            ("truncate the payload", |d| d.truncate(HEADER_LEN + 100)),
            ("truncate the header", |d| d.truncate(10)),
            ("empty", |d| d.clear()),
        ];
        let engine = engine(OptLevel::Speed);
        for (what, damage) in damages {
            let tmp = tempfile::tempdir().unwrap();
            let cache = CodeCache::new(tmp.path().to_path_buf());
            assert_eq!(load(&cache, &engine, 3), CodeSource::Compiled);
            let path = entries(tmp.path()).remove(0);
            let good = fs::read(&path).unwrap();
            let mut bad = good.clone();
            damage(&mut bad);
            assert_ne!(bad, good, "{what}");
            // Caught before wasmtime sees it.
            let key = key(&engine, &module_bytes(3));
            assert!(check_entry(&good, &key).is_ok(), "{what}");
            assert!(check_entry(&bad, &key).is_err(), "{what}");
            fs::write(&path, &bad).unwrap();
            assert_eq!(load(&cache, &engine, 3), CodeSource::Compiled, "{what}");
            assert_eq!(entries(tmp.path()), std::slice::from_ref(&path), "{what}");
            assert!(
                check_entry(&fs::read(&path).unwrap(), &key).is_ok(),
                "{what}"
            );
            assert_eq!(load(&cache, &engine, 3), CodeSource::Hit, "{what}");
        }
    }

    #[test]
    fn a_valid_entry_under_another_name_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf());
        let engine = engine(OptLevel::Speed);
        assert_eq!(load(&cache, &engine, 1), CodeSource::Compiled);
        let one = entries(tmp.path()).remove(0);
        let two = cache.entry_path(&key(&engine, &module_bytes(2)));
        fs::copy(&one, &two).unwrap();
        // Taking it would make `f` return 1, which `load` would catch.
        assert_eq!(load(&cache, &engine, 2), CodeSource::Compiled);
        assert_eq!(load(&cache, &engine, 2), CodeSource::Hit);
    }

    #[test]
    fn another_engine_config_does_not_reuse_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf());
        let speed = engine(OptLevel::Speed);
        let none = engine(OptLevel::None);
        let mut config = Config::new();
        config
            .cranelift_opt_level(OptLevel::Speed)
            .epoch_interruption(true);
        let epochs = wasmtime::Engine::new(&config).unwrap();
        // An identically configured engine shares entries.
        let speed_again = engine(OptLevel::Speed);
        assert_eq!(load(&cache, &speed, 5), CodeSource::Compiled);
        assert_eq!(load(&cache, &none, 5), CodeSource::Compiled);
        assert_eq!(load(&cache, &epochs, 5), CodeSource::Compiled);
        assert_eq!(load(&cache, &speed_again, 5), CodeSource::Hit);
        assert_eq!(load(&cache, &none, 5), CodeSource::Hit);
        assert_eq!(load(&cache, &epochs, 5), CodeSource::Hit);
        assert_eq!(entries(tmp.path()).len(), 3);
    }

    #[test]
    fn concurrent_writers_leave_one_valid_entry() {
        let engine = engine(OptLevel::Speed);
        for round in 0..5 {
            let tmp = tempfile::tempdir().unwrap();
            let threads = 4;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let cache = CodeCache::new(tmp.path().to_path_buf());
                    let engine = engine.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        load(&cache, &engine, round)
                    })
                })
                .collect();
            for handle in handles {
                // Each either compiled or found a whole entry.
                handle.join().unwrap();
            }
            assert_eq!(names(tmp.path()).len(), 1, "{:?}", names(tmp.path()));
            let cache = CodeCache::new(tmp.path().to_path_buf());
            assert_eq!(load(&cache, &engine, round), CodeSource::Hit);
        }
    }

    #[test]
    fn eviction_removes_the_least_recently_used() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf());
        let engine = engine(OptLevel::Speed);
        let path = |n| cache.entry_path(&key(&engine, &module_bytes(n)));
        for n in 0..4 {
            assert_eq!(load(&cache, &engine, n), CodeSource::Compiled);
            set_age(&path(n), 1000 - 100 * n as u64);
        }
        let size = |n| fs::metadata(path(n)).unwrap().len();
        let total: u64 = (0..4).map(size).sum();

        // A hit makes 0, the oldest, the most recently used.
        assert_eq!(load(&cache, &engine, 0), CodeSource::Hit);
        // One byte too many: 1, now the oldest, goes, and nothing else.
        cache.clone().with_max_bytes(total - 1).evict(&path(3));
        assert_eq!(entries(tmp.path()).len(), 3);
        assert!(!path(1).exists());
        // Room for one entry: only the kept one remains, even if older.
        cache.clone().with_max_bytes(size(2)).evict(&path(2));
        assert_eq!(entries(tmp.path()), [path(2)]);

        // Through `load_or_compile`: the entry just written always stays.
        let tiny = CodeCache::new(tmp.path().to_path_buf()).with_max_bytes(0);
        assert_eq!(load(&tiny, &engine, 9), CodeSource::Compiled);
        assert_eq!(entries(tmp.path()), [path(9)]);
    }

    #[test]
    fn eviction_removes_stale_temporaries_and_nothing_foreign() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf()).with_max_bytes(0);
        let hex = "ab".repeat(32);
        let stale = tmp.path().join(format!(".{hex}.1.0.tmp"));
        let fresh = tmp.path().join(format!(".{hex}.1.1.tmp"));
        let foreign = [
            tmp.path().join("notes.txt"),
            tmp.path().join(format!("{hex}.cwasm")),
            tmp.path().join(format!(".{}.1.0.tmp", "x".repeat(64))),
        ];
        for file in [&stale, &fresh].into_iter().chain(&foreign) {
            fs::write(file, b"x").unwrap();
            set_age(file, 2 * STALE_TEMP_AGE.as_secs());
        }
        set_age(&fresh, 10);
        assert_eq!(
            load(&cache, &engine(OptLevel::Speed), 1),
            CodeSource::Compiled
        );
        assert!(!stale.exists());
        assert!(fresh.exists());
        for file in &foreign {
            assert!(file.exists(), "{}", file.display());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_can_write_to_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(tmp.path().to_path_buf());
        let engine = engine(OptLevel::Speed);
        assert_eq!(load(&cache, &engine, 1), CodeSource::Compiled);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        // The entry is there but not trusted, and nothing is written.
        assert_eq!(load(&cache, &engine, 1), CodeSource::Compiled);
        assert_eq!(load(&cache, &engine, 2), CodeSource::Compiled);
        assert_eq!(entries(tmp.path()).len(), 1);
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
        // Nor is an entry others can write to.
        let entry = entries(tmp.path()).remove(0);
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(load(&cache, &engine, 1), CodeSource::Compiled);
        assert_eq!(load(&cache, &engine, 1), CodeSource::Hit);
    }

    #[test]
    fn a_file_where_the_directory_should_be_is_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let engine = engine(OptLevel::Speed);
        assert_eq!(
            load(&CodeCache::new(file.clone()), &engine, 1),
            CodeSource::Compiled
        );
        assert_eq!(
            load(&CodeCache::new(file.join("below")), &engine, 1),
            CodeSource::Compiled
        );
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn default_dir_order() {
        let s = |v: &str| Some(OsString::from(v));
        let p = PathBuf::from;
        assert_eq!(dir_from(s("/b"), s("/x"), s("/h")), Some(p("/b")));
        assert_eq!(dir_from(s("rel"), None, None), Some(p("rel")));
        assert_eq!(dir_from(s(""), s("/x"), s("/h")), Some(p("/x/baton/code")));
        assert_eq!(
            dir_from(None, s("x"), s("/h")),
            Some(p("/h/.cache/baton/code"))
        );
        assert_eq!(
            dir_from(None, s(""), s("/h")),
            Some(p("/h/.cache/baton/code"))
        );
        assert_eq!(dir_from(None, None, s("")), None);
        assert_eq!(dir_from(None, None, None), None);
    }

    #[test]
    fn the_key_names_the_format_version() {
        assert!(KEY_CONTEXT.ends_with(&format!("format {FORMAT_VERSION}")));
        let engine = engine(OptLevel::Speed);
        assert_eq!(key(&engine, b"a"), key(&engine, b"a"));
        assert_ne!(key(&engine, b"a"), key(&engine, b"b"));
    }
}
