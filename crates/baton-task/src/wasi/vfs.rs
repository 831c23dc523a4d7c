//! The in-memory virtual file system that is part of the task state.
//!
//! This file owns the tree of files and directories, path resolution and the
//! operations on them. It is pure data: it never touches the host file
//! system (loading and write-back live in `hostfs.rs`), never reads a clock
//! (callers pass `now`), and knows nothing of descriptors or guest memory.
//!
//! Rules:
//! * nodes are numbered (inode numbers) in creation order, so the same
//!   operations always give the same numbers; all maps are `BTreeMap`s so the
//!   serialised form is canonical;
//! * paths are relative to a base directory; an absolute path, or `..`
//!   leaving the base directory (even if it comes back), is `EPERM`, as in
//!   wasmtime; a NUL byte is `EINVAL`; longer than [`PATH_MAX`] bytes or a
//!   component longer than [`NAME_MAX`] is `ENAMETOOLONG`;
//! * there are no symbolic or hard links: every file has exactly one name,
//!   or none once unlinked while still open (an *orphan*, freed when the last
//!   descriptor on it is closed);
//! * the bytes held are bounded: every file's length plus [`NODE_COST`] per
//!   file or directory counts toward the limit; growing past it is `ENOSPC`;
//! * timestamps are set from `now` at creation, on writes (mtim, ctim) and
//!   on directory changes; reads do not change the access time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::abi::{filetype, oflags, Errno, WasiResult};

/// An inode number.
pub(crate) type Ino = u64;

/// Longest path accepted, in bytes.
pub(crate) const PATH_MAX: usize = 4096;
/// Longest path component accepted, in bytes.
pub(crate) const NAME_MAX: usize = 255;
/// Bytes charged against the limit for each file or directory, so that
/// creating empty files cannot exhaust the host's memory.
pub(crate) const NODE_COST: u64 = 256;

/// Where a node was loaded from at task creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Origin {
    /// Index of the preopen it was loaded into.
    pub(crate) preopen: u32,
    /// Its path relative to the preopen's directory, `/`-separated.
    pub(crate) path: String,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    /// A regular file.
    File {
        /// Its contents.
        #[serde(with = "super::serde_bytes")]
        data: Vec<u8>,
        /// Whether the task changed its contents.
        modified: bool,
    },
    /// A directory.
    Dir {
        /// Its entries, by name.
        entries: BTreeMap<String, Ino>,
        /// Its parent; `None` for a preopen's root.
        parent: Option<Ino>,
    },
}

/// A file or directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) atim: u64,
    pub(crate) mtim: u64,
    pub(crate) ctim: u64,
    /// Where it was loaded from, if it was.
    pub(crate) origin: Option<Origin>,
    /// Unlinked but still open.
    pub(crate) orphan: bool,
}

impl Node {
    fn new(kind: Kind, now: u64, origin: Option<Origin>) -> Self {
        Node {
            kind,
            atim: now,
            mtim: now,
            ctim: now,
            origin,
            orphan: false,
        }
    }

    /// Whether this node is a directory.
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    /// The preview1 file type.
    pub(crate) fn filetype(&self) -> u8 {
        if self.is_dir() {
            filetype::DIRECTORY
        } else {
            filetype::REGULAR_FILE
        }
    }

    /// A file's length; 0 for a directory.
    pub(crate) fn size(&self) -> u64 {
        match &self.kind {
            Kind::File { data, .. } => data.len() as u64,
            Kind::Dir { .. } => 0,
        }
    }

    fn entries(&self) -> WasiResult<&BTreeMap<String, Ino>> {
        match &self.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            Kind::File { .. } => Err(Errno::Notdir),
        }
    }
}

/// The result of resolving a path.
#[derive(Debug)]
pub(crate) struct Resolved<'p> {
    /// The directory holding the last component (or the target itself when
    /// `name` is `None`).
    pub(crate) parent: Ino,
    /// The last component; `None` when the path ends in `.` or `..` or is
    /// only `.`s and slashes, i.e. names a directory reached by itself.
    pub(crate) name: Option<&'p str>,
    /// The node the path names, if it exists.
    pub(crate) target: Option<Ino>,
    /// The path ends in `/`, `.` or `..`: it must name a directory.
    pub(crate) dir_only: bool,
}

/// Attributes of a node, for `filestat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) ino: Ino,
    pub(crate) filetype: u8,
    pub(crate) size: u64,
    pub(crate) atim: u64,
    pub(crate) mtim: u64,
    pub(crate) ctim: u64,
}

/// The virtual file system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Vfs {
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    /// The root directory of each preopen, by preopen index.
    roots: Vec<Ino>,
    /// Bytes charged against `limit`.
    used: u64,
    limit: u64,
}

impl Vfs {
    /// An empty file system holding at most `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Vfs {
            nodes: BTreeMap::new(),
            next_ino: 1,
            roots: Vec::new(),
            used: 0,
            limit,
        }
    }

    /// Bytes charged so far (file contents plus [`NODE_COST`] per node).
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// The bound on [`Vfs::used`].
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The root directory of each preopen.
    pub(crate) fn roots(&self) -> &[Ino] {
        &self.roots
    }

    /// All nodes, by inode number.
    pub(crate) fn nodes(&self) -> &BTreeMap<Ino, Node> {
        &self.nodes
    }

    /// The node `ino` (`EIO` if missing: only a corrupt state lacks one).
    pub(crate) fn node(&self, ino: Ino) -> WasiResult<&Node> {
        self.nodes.get(&ino).ok_or(Errno::Io)
    }

    fn node_mut(&mut self, ino: Ino) -> WasiResult<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::Io)
    }

    fn charge(&mut self, bytes: u64) -> WasiResult<()> {
        let used = self.used.checked_add(bytes).ok_or(Errno::Nospc)?;
        if used > self.limit {
            return Err(Errno::Nospc);
        }
        self.used = used;
        Ok(())
    }

    fn uncharge(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    fn alloc(&mut self, node: Node) -> WasiResult<Ino> {
        self.charge(NODE_COST.saturating_add(node.size()))?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.checked_add(1).ok_or(Errno::Nospc)?;
        self.nodes.insert(ino, node);
        Ok(ino)
    }

    /// Adds the root directory of a new preopen; returns its inode.
    pub(crate) fn add_root(&mut self, now: u64) -> WasiResult<Ino> {
        let ino = self.alloc(Node::new(
            Kind::Dir {
                entries: BTreeMap::new(),
                parent: None,
            },
            now,
            None,
        ))?;
        self.roots.push(ino);
        Ok(ino)
    }

    /// Adds `name` to directory `parent`; the node is a file with `data` or,
    /// if `data` is `None`, a directory. Used to load preopens and to create.
    pub(crate) fn insert(
        &mut self,
        parent: Ino,
        name: &str,
        data: Option<Vec<u8>>,
        origin: Option<Origin>,
        now: u64,
    ) -> WasiResult<Ino> {
        check_name(name)?;
        let p = self.node(parent)?;
        if p.orphan {
            return Err(Errno::Noent);
        }
        if p.entries()?.contains_key(name) {
            return Err(Errno::Exist);
        }
        let kind = match data {
            Some(data) => Kind::File {
                data,
                modified: origin.is_none(),
            },
            None => Kind::Dir {
                entries: BTreeMap::new(),
                parent: Some(parent),
            },
        };
        let ino = self.alloc(Node::new(kind, now, origin))?;
        let p = self.node_mut(parent)?;
        if let Kind::Dir { entries, .. } = &mut p.kind {
            entries.insert(name.to_owned(), ino);
        }
        p.mtim = now;
        p.ctim = now;
        Ok(ino)
    }

    /// Resolves `path` relative to directory `base`.
    pub(crate) fn resolve<'p>(&self, base: Ino, path: &'p str) -> WasiResult<Resolved<'p>> {
        if path.is_empty() {
            return Err(Errno::Noent);
        }
        if path.len() > PATH_MAX {
            return Err(Errno::Nametoolong);
        }
        if path.contains('\0') {
            return Err(Errno::Inval);
        }
        if path.starts_with('/') {
            return Err(Errno::Perm);
        }
        self.node(base)?.entries()?;
        let mut comps = path.split('/').filter(|c| !c.is_empty()).peekable();
        let mut stack: Vec<Ino> = vec![base];
        let top = |stack: &Vec<Ino>| stack.last().copied().ok_or(Errno::Io);
        let dir_only = path.ends_with('/');
        while let Some(comp) = comps.next() {
            let last = comps.peek().is_none();
            match comp {
                "." => {}
                ".." => {
                    if stack.len() == 1 {
                        return Err(Errno::Perm);
                    }
                    stack.pop();
                }
                name => {
                    check_name(name)?;
                    let dir = top(&stack)?;
                    let found = self.node(dir)?.entries()?.get(name).copied();
                    if last {
                        return Ok(Resolved {
                            parent: dir,
                            name: Some(name),
                            target: found,
                            dir_only,
                        });
                    }
                    let ino = found.ok_or(Errno::Noent)?;
                    if !self.node(ino)?.is_dir() {
                        return Err(Errno::Notdir);
                    }
                    stack.push(ino);
                }
            }
        }
        let dir = top(&stack)?;
        Ok(Resolved {
            parent: dir,
            name: None,
            target: Some(dir),
            dir_only: true,
        })
    }

    /// Resolves a path that must name an existing node.
    pub(crate) fn lookup(&self, base: Ino, path: &str) -> WasiResult<Ino> {
        let r = self.resolve(base, path)?;
        let ino = r.target.ok_or(Errno::Noent)?;
        if r.dir_only && !self.node(ino)?.is_dir() {
            return Err(Errno::Notdir);
        }
        Ok(ino)
    }

    /// `path_open`: opens (and maybe creates or truncates) a file or
    /// directory. `write` says whether write access was requested.
    pub(crate) fn open(
        &mut self,
        base: Ino,
        path: &str,
        oflags: u16,
        write: bool,
        now: u64,
    ) -> WasiResult<Ino> {
        let creat = oflags & oflags::CREAT != 0;
        let excl = oflags & oflags::EXCL != 0;
        let trunc = oflags & oflags::TRUNC != 0;
        let directory = oflags & oflags::DIRECTORY != 0;
        if directory && (creat || excl || trunc) {
            return Err(Errno::Inval);
        }
        let r = self.resolve(base, path)?;
        match r.target {
            Some(ino) => {
                if creat && excl {
                    return Err(Errno::Exist);
                }
                let node = self.node(ino)?;
                if node.is_dir() {
                    if write || trunc || creat {
                        return Err(Errno::Isdir);
                    }
                    return Ok(ino);
                }
                if directory || r.dir_only {
                    return Err(Errno::Notdir);
                }
                if trunc {
                    self.set_size(ino, 0, now)?;
                }
                Ok(ino)
            }
            None => {
                if !creat {
                    return Err(Errno::Noent);
                }
                let name = r.name.ok_or(Errno::Io)?;
                if r.dir_only {
                    return Err(Errno::Isdir);
                }
                self.insert(r.parent, name, Some(Vec::new()), None, now)
            }
        }
    }

    /// `path_create_directory`.
    pub(crate) fn mkdir(&mut self, base: Ino, path: &str, now: u64) -> WasiResult<()> {
        let r = self.resolve(base, path)?;
        match (r.target, r.name) {
            (None, Some(name)) => self.insert(r.parent, name, None, None, now).map(|_| ()),
            _ => Err(Errno::Exist),
        }
    }

    /// `path_remove_directory`. `is_open` says whether a descriptor still
    /// refers to a node (it then becomes an orphan instead of being freed).
    pub(crate) fn rmdir(
        &mut self,
        base: Ino,
        path: &str,
        now: u64,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> WasiResult<()> {
        let r = self.resolve(base, path)?;
        let ino = r.target.ok_or(Errno::Noent)?;
        let name = r.name.ok_or(Errno::Inval)?;
        let node = self.node(ino)?;
        if !node.entries().map_err(|_| Errno::Notdir)?.is_empty() {
            return Err(Errno::Notempty);
        }
        self.unlink_entry(r.parent, name, now)?;
        self.release_or_orphan(ino, is_open(ino))
    }

    /// `path_unlink_file`.
    pub(crate) fn unlink(
        &mut self,
        base: Ino,
        path: &str,
        now: u64,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> WasiResult<()> {
        let r = self.resolve(base, path)?;
        let ino = r.target.ok_or(Errno::Noent)?;
        let name = r.name.ok_or(Errno::Isdir)?;
        if self.node(ino)?.is_dir() {
            return Err(Errno::Isdir);
        }
        if r.dir_only {
            return Err(Errno::Notdir);
        }
        self.unlink_entry(r.parent, name, now)?;
        self.release_or_orphan(ino, is_open(ino))
    }

    /// `path_rename`.
    pub(crate) fn rename(
        &mut self,
        src_base: Ino,
        src_path: &str,
        dst_base: Ino,
        dst_path: &str,
        now: u64,
        is_open: &dyn Fn(Ino) -> bool,
    ) -> WasiResult<()> {
        let s = self.resolve(src_base, src_path)?;
        let d = self.resolve(dst_base, dst_path)?;
        let src = s.target.ok_or(Errno::Noent)?;
        let src_name = s.name.ok_or(Errno::Inval)?;
        let src_is_dir = self.node(src)?.is_dir();
        if !src_is_dir && (s.dir_only || d.dir_only) {
            return Err(Errno::Notdir);
        }
        let dst_name = match d.name {
            Some(n) => n,
            None if src_is_dir => return Err(Errno::Inval),
            None => return Err(Errno::Isdir),
        };
        if self.node(d.parent)?.orphan {
            return Err(Errno::Noent);
        }
        if src_is_dir && self.is_ancestor_or_self(src, d.parent)? {
            return Err(Errno::Inval);
        }
        if let Some(t) = d.target {
            if t == src {
                return Ok(());
            }
            let target = self.node(t)?;
            match (&target.kind, src_is_dir) {
                (Kind::Dir { entries, .. }, true) if !entries.is_empty() => {
                    return Err(Errno::Notempty)
                }
                (Kind::Dir { .. }, false) => return Err(Errno::Isdir),
                (Kind::File { .. }, true) => return Err(Errno::Notdir),
                _ => {}
            }
            self.unlink_entry(d.parent, dst_name, now)?;
            self.release_or_orphan(t, is_open(t))?;
        }
        self.unlink_entry(s.parent, src_name, now)?;
        let dst_parent = d.parent;
        let p = self.node_mut(dst_parent)?;
        if let Kind::Dir { entries, .. } = &mut p.kind {
            entries.insert(dst_name.to_owned(), src);
        }
        p.mtim = now;
        p.ctim = now;
        let n = self.node_mut(src)?;
        n.ctim = now;
        if let Kind::Dir { parent, .. } = &mut n.kind {
            *parent = Some(dst_parent);
        }
        Ok(())
    }

    /// Whether `anc` is `ino` or one of its ancestors.
    fn is_ancestor_or_self(&self, anc: Ino, mut ino: Ino) -> WasiResult<bool> {
        // Bounded: a corrupt state with a cycle must not loop forever.
        for _ in 0..=self.nodes.len() {
            if ino == anc {
                return Ok(true);
            }
            match &self.node(ino)?.kind {
                Kind::Dir {
                    parent: Some(p), ..
                } => ino = *p,
                _ => return Ok(false),
            }
        }
        Err(Errno::Io)
    }

    fn unlink_entry(&mut self, parent: Ino, name: &str, now: u64) -> WasiResult<()> {
        let p = self.node_mut(parent)?;
        if let Kind::Dir { entries, .. } = &mut p.kind {
            entries.remove(name);
        }
        p.mtim = now;
        p.ctim = now;
        Ok(())
    }

    fn release_or_orphan(&mut self, ino: Ino, open: bool) -> WasiResult<()> {
        if open {
            self.node_mut(ino)?.orphan = true;
            Ok(())
        } else {
            self.free(ino);
            Ok(())
        }
    }

    fn free(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.remove(&ino) {
            self.uncharge(NODE_COST.saturating_add(node.size()));
        }
    }

    /// Called when the last descriptor on `ino` is closed: frees an orphan.
    pub(crate) fn closed(&mut self, ino: Ino) {
        if self.nodes.get(&ino).is_some_and(|n| n.orphan) {
            self.free(ino);
        }
    }

    /// A file's contents (`EBADF` for a directory).
    pub(crate) fn data(&self, ino: Ino) -> WasiResult<&[u8]> {
        match &self.node(ino)?.kind {
            Kind::File { data, .. } => Ok(data),
            Kind::Dir { .. } => Err(Errno::Badf),
        }
    }

    /// Writes `bytes` at `pos`, zero-filling any gap; `ENOSPC` past the limit.
    pub(crate) fn write(&mut self, ino: Ino, pos: u64, bytes: &[u8], now: u64) -> WasiResult<()> {
        let end = pos.checked_add(bytes.len() as u64).ok_or(Errno::Fbig)?;
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::Badf);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let old = node.size();
        if end > old {
            self.charge(end - old)?;
        }
        let node = self.node_mut(ino)?;
        let Kind::File { data, modified } = &mut node.kind else {
            return Err(Errno::Badf);
        };
        let (start, end) = (to_usize(pos)?, to_usize(end)?);
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        *modified = true;
        node.mtim = now;
        node.ctim = now;
        Ok(())
    }

    /// Truncates or zero-extends a file to `size`.
    pub(crate) fn set_size(&mut self, ino: Ino, size: u64, now: u64) -> WasiResult<()> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::Badf);
        }
        to_usize(size)?;
        let old = node.size();
        if size > old {
            self.charge(size - old)?;
        }
        let node = self.node_mut(ino)?;
        let Kind::File { data, modified } = &mut node.kind else {
            return Err(Errno::Badf);
        };
        data.resize(to_usize(size)?, 0);
        *modified = true;
        node.mtim = now;
        node.ctim = now;
        if size < old {
            self.uncharge(old - size);
        }
        Ok(())
    }

    /// Sets the access and/or modification time of a node.
    pub(crate) fn set_times(
        &mut self,
        ino: Ino,
        atim: Option<u64>,
        mtim: Option<u64>,
        now: u64,
    ) -> WasiResult<()> {
        let node = self.node_mut(ino)?;
        if let Some(a) = atim {
            node.atim = a;
        }
        if let Some(m) = mtim {
            node.mtim = m;
        }
        node.ctim = now;
        Ok(())
    }

    /// The attributes of a node.
    pub(crate) fn stat(&self, ino: Ino) -> WasiResult<Stat> {
        let n = self.node(ino)?;
        Ok(Stat {
            ino,
            filetype: n.filetype(),
            size: n.size(),
            atim: n.atim,
            mtim: n.mtim,
            ctim: n.ctim,
        })
    }

    /// The entries of a directory, in name order, as `(name, ino, filetype)`.
    pub(crate) fn entries(
        &self,
        ino: Ino,
    ) -> WasiResult<impl Iterator<Item = (&str, Ino, u8)> + '_> {
        let entries = self.node(ino)?.entries()?;
        Ok(entries.iter().map(move |(name, &child)| {
            let ft = self
                .nodes
                .get(&child)
                .map(Node::filetype)
                .unwrap_or(filetype::UNKNOWN);
            (name.as_str(), child, ft)
        }))
    }
}

impl Vfs {
    /// Checks the invariants a state built by this module always keeps (for
    /// states decoded from untrusted bytes): roots are directories; every
    /// name is a valid single component; every linked node is reachable from
    /// exactly one root by exactly one name, with matching parent pointers;
    /// orphans are unlinked and empty; inode numbers are below `next_ino`;
    /// the byte count is right and within the limit; every [`Origin`] names
    /// an existing preopen and a plain relative path below it (no `..`,
    /// `.`, empty component, leading `/` or NUL).
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        let mut refs: BTreeMap<Ino, u32> = BTreeMap::new();
        for node in self.nodes.values() {
            if let Kind::Dir { entries, .. } = &node.kind {
                for (name, &child) in entries {
                    if !is_safe_name(name) {
                        return Err("a directory entry has an invalid name");
                    }
                    *refs.entry(child).or_default() += 1;
                }
            }
        }
        let mut used: u64 = 0;
        for (&ino, node) in &self.nodes {
            if ino >= self.next_ino {
                return Err("an inode number is not below next_ino");
            }
            used = used.saturating_add(NODE_COST.saturating_add(node.size()));
            if let Some(origin) = &node.origin {
                let preopen_exists =
                    usize::try_from(origin.preopen).is_ok_and(|p| p < self.roots.len());
                if !preopen_exists || !is_plain_relative(&origin.path) {
                    return Err("a node's origin is not a plain path below its preopen");
                }
            }
            let is_root = self.roots.contains(&ino);
            let n = refs.get(&ino).copied().unwrap_or(0);
            let expected = if is_root || node.orphan { 0 } else { 1 };
            if n != expected {
                return Err("a node is linked a wrong number of times");
            }
            if let Kind::Dir { entries, parent } = &node.kind {
                if node.orphan && !entries.is_empty() {
                    return Err("an unlinked directory is not empty");
                }
                if is_root != parent.is_none() && !node.orphan {
                    return Err("a directory's parent is wrong");
                }
                for child in entries.values() {
                    match self.nodes.get(child) {
                        None => return Err("a directory entry names a missing node"),
                        Some(Node {
                            kind: Kind::Dir { parent, .. },
                            ..
                        }) if *parent != Some(ino) => return Err("a directory's parent is wrong"),
                        _ => {}
                    }
                }
            }
        }
        for r in &self.roots {
            if !self.nodes.get(r).is_some_and(Node::is_dir) {
                return Err("a preopen root is not a directory");
            }
        }
        // Every linked node is reachable from a root (no detached cycles).
        let mut seen = 0usize;
        let mut stack: Vec<Ino> = self.roots.clone();
        while let Some(ino) = stack.pop() {
            seen += 1;
            if seen > self.nodes.len() {
                return Err("the directory graph has a cycle");
            }
            if let Some(Node {
                kind: Kind::Dir { entries, .. },
                ..
            }) = self.nodes.get(&ino)
            {
                stack.extend(entries.values().copied());
            }
        }
        let linked = self.nodes.values().filter(|n| !n.orphan).count();
        if seen != linked {
            return Err("a node is not reachable from any preopen");
        }
        if used != self.used || used > self.limit {
            return Err("the byte count is wrong");
        }
        Ok(())
    }
}

/// Whether `name` is one plain path component: what a guest can create and
/// what may safely be joined to a host path.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains(['/', '\0'])
}

/// Whether `path` is a non-empty, `/`-separated relative path of plain
/// components (see [`is_safe_name`]) no longer than [`PATH_MAX`].
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty() && path.len() <= PATH_MAX && path.split('/').all(is_safe_name)
}

/// Checks one path component's length.
fn check_name(name: &str) -> WasiResult<()> {
    if name.len() > NAME_MAX {
        return Err(Errno::Nametoolong);
    }
    Ok(())
}

fn to_usize(v: u64) -> WasiResult<usize> {
    usize::try_from(v).map_err(|_| Errno::Fbig)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1000;

    fn closed(_: Ino) -> bool {
        false
    }

    fn fs() -> (Vfs, Ino) {
        let mut v = Vfs::new(1 << 20);
        let root = v.add_root(0).unwrap();
        v.mkdir(root, "dir", NOW).unwrap();
        v.mkdir(root, "dir/nested", NOW).unwrap();
        v.open(root, "dir/nested/file", oflags::CREAT, true, NOW)
            .unwrap();
        (v, root)
    }

    #[test]
    fn interesting_paths_resolve_like_wasmtime() {
        let (v, root) = fs();
        let file = v.lookup(root, "dir/nested/file").unwrap();
        assert_eq!(
            v.lookup(root, "dir/.//nested/../../dir/nested/../nested///./file"),
            Ok(file)
        );
        assert_eq!(v.lookup(root, "/dir/nested/file"), Err(Errno::Perm));
        assert_eq!(v.lookup(root, "dir/nested/file\0"), Err(Errno::Inval));
        assert_eq!(v.lookup(root, "dir/nested/file/"), Err(Errno::Notdir));
        assert_eq!(v.lookup(root, "dir/nested/file///"), Err(Errno::Notdir));
        assert!(v.lookup(root, "dir/nested/").is_ok());
        assert_eq!(
            v.lookup(root, "dir/nested/../../../x/dir/nested/file"),
            Err(Errno::Perm)
        );
        assert_eq!(v.lookup(root, ".."), Err(Errno::Perm));
        assert_eq!(v.lookup(root, "./.."), Err(Errno::Perm));
        assert_eq!(v.lookup(root, "dir/../.."), Err(Errno::Perm));
        assert_eq!(v.lookup(root, "."), Ok(root));
        assert_eq!(v.lookup(root, "dir/.."), Ok(root));
        assert_eq!(v.lookup(root, ""), Err(Errno::Noent));
        assert_eq!(v.lookup(root, "missing/x"), Err(Errno::Noent));
        assert_eq!(v.lookup(root, "dir/nested/file/x"), Err(Errno::Notdir));
        let long = "a".repeat(NAME_MAX + 1);
        assert_eq!(v.lookup(root, &long), Err(Errno::Nametoolong));
        let deep = "a/".repeat(PATH_MAX);
        assert_eq!(v.lookup(root, &deep), Err(Errno::Nametoolong));
    }

    #[test]
    fn dotdot_cannot_escape_a_subdirectory_base() {
        let (v, root) = fs();
        let dir = v.lookup(root, "dir").unwrap();
        assert_eq!(v.lookup(dir, ".."), Err(Errno::Perm));
        assert_eq!(v.lookup(dir, "nested/../.."), Err(Errno::Perm));
        assert_eq!(v.lookup(dir, "nested/.."), Ok(dir));
    }

    #[test]
    fn open_flags() {
        let (mut v, root) = fs();
        use oflags::*;
        assert_eq!(
            v.open(root, "dir/nested/file", CREAT | EXCL, true, NOW),
            Err(Errno::Exist)
        );
        assert_eq!(v.open(root, "nope", 0, false, NOW), Err(Errno::Noent));
        assert_eq!(
            v.open(root, "dir/nested/file", DIRECTORY, false, NOW),
            Err(Errno::Notdir)
        );
        assert_eq!(
            v.open(root, "dir", DIRECTORY | CREAT, false, NOW),
            Err(Errno::Inval)
        );
        assert_eq!(v.open(root, "dir", 0, true, NOW), Err(Errno::Isdir));
        assert_eq!(v.open(root, "newdir/", CREAT, true, NOW), Err(Errno::Isdir));
        let f = v.open(root, "dir/nested/file", 0, true, NOW).unwrap();
        v.write(f, 0, b"hello", NOW).unwrap();
        assert_eq!(v.data(f), Ok(&b"hello"[..]));
        v.open(root, "dir/nested/file", TRUNC, true, NOW).unwrap();
        assert_eq!(v.data(f), Ok(&b""[..]));
    }

    #[test]
    fn write_zero_fills_and_respects_the_limit() {
        let mut v = Vfs::new(NODE_COST * 2 + 10);
        let root = v.add_root(0).unwrap();
        let f = v.open(root, "f", oflags::CREAT, true, NOW).unwrap();
        v.write(f, 4, b"ab", NOW).unwrap();
        assert_eq!(v.data(f), Ok(&[0, 0, 0, 0, b'a', b'b'][..]));
        assert_eq!(v.write(f, 8, b"abc", NOW), Err(Errno::Nospc));
        v.write(f, 8, b"ab", NOW).unwrap();
        assert_eq!(v.used(), NODE_COST * 2 + 10);
        assert_eq!(
            v.open(root, "g", oflags::CREAT, true, NOW),
            Err(Errno::Nospc)
        );
        v.set_size(f, 0, NOW).unwrap();
        assert_eq!(v.used(), NODE_COST * 2);
        assert_eq!(v.write(f, u64::MAX, b"x", NOW), Err(Errno::Fbig));
    }

    #[test]
    fn mkdir_rmdir_unlink() {
        let (mut v, root) = fs();
        assert_eq!(v.mkdir(root, "dir", NOW), Err(Errno::Exist));
        assert_eq!(v.mkdir(root, ".", NOW), Err(Errno::Exist));
        assert_eq!(v.mkdir(root, "x/y", NOW), Err(Errno::Noent));
        assert_eq!(v.rmdir(root, "dir", NOW, &closed), Err(Errno::Notempty));
        assert_eq!(
            v.rmdir(root, "dir/nested/file", NOW, &closed),
            Err(Errno::Notdir)
        );
        assert_eq!(
            v.unlink(root, "dir/nested", NOW, &closed),
            Err(Errno::Isdir)
        );
        assert_eq!(
            v.unlink(root, "dir/nested/file/", NOW, &closed),
            Err(Errno::Notdir)
        );
        assert_eq!(v.rmdir(root, ".", NOW, &closed), Err(Errno::Inval));
        let before = v.used();
        v.unlink(root, "dir/nested/file", NOW, &closed).unwrap();
        assert_eq!(v.used(), before - NODE_COST);
        v.rmdir(root, "dir/nested/", NOW, &closed).unwrap();
        v.rmdir(root, "dir", NOW, &closed).unwrap();
        assert_eq!(v.entries(root).unwrap().count(), 0);
        assert_eq!(v.nodes().len(), 1);
        assert_eq!(v.used(), NODE_COST);
    }

    #[test]
    fn unlinked_open_file_lives_until_closed() {
        let (mut v, root) = fs();
        let f = v.lookup(root, "dir/nested/file").unwrap();
        v.unlink(root, "dir/nested/file", NOW, &|i| i == f).unwrap();
        assert!(v.node(f).unwrap().orphan);
        v.write(f, 0, b"x", NOW).unwrap();
        v.closed(f);
        assert_eq!(v.node(f).err(), Some(Errno::Io));
    }

    #[test]
    fn rename_rules() {
        let (mut v, root) = fs();
        let file = v.lookup(root, "dir/nested/file").unwrap();
        v.rename(root, "dir/nested/file", root, "moved", NOW, &closed)
            .unwrap();
        assert_eq!(v.lookup(root, "moved"), Ok(file));
        assert_eq!(v.lookup(root, "dir/nested/file"), Err(Errno::Noent));
        assert_eq!(
            v.rename(root, "dir", root, "dir/nested/inner", NOW, &closed),
            Err(Errno::Inval)
        );
        assert_eq!(
            v.rename(root, "moved", root, "dir", NOW, &closed),
            Err(Errno::Isdir)
        );
        assert_eq!(
            v.rename(root, "dir/nested", root, "moved", NOW, &closed),
            Err(Errno::Notdir)
        );
        assert_eq!(
            v.rename(root, "nothing", root, "x", NOW, &closed),
            Err(Errno::Noent)
        );
        v.mkdir(root, "empty", NOW).unwrap();
        assert_eq!(
            v.rename(root, "empty", root, "dir", NOW, &closed),
            Err(Errno::Notempty)
        );
        // A directory may replace an empty directory; its parent changes.
        let nested = v.lookup(root, "dir/nested").unwrap();
        v.rename(root, "dir/nested", root, "empty", NOW, &closed)
            .unwrap();
        assert_eq!(v.lookup(root, "empty"), Ok(nested));
        assert_eq!(v.lookup(root, "empty/.."), Ok(root));
        // Replacing a file frees the old one.
        v.open(root, "other", oflags::CREAT, true, NOW).unwrap();
        let n = v.nodes().len();
        v.rename(root, "other", root, "moved", NOW, &closed)
            .unwrap();
        assert_eq!(v.nodes().len(), n - 1);
        // Renaming onto itself is a no-op.
        v.rename(root, "moved", root, "./moved", NOW, &closed)
            .unwrap();
        assert!(v.lookup(root, "moved").is_ok());
    }

    const PATHS: &[&str] = &[
        "a", "b", "c", "a/b", "a/c", "b/a", "a/b/c", "./a", "a/..", "a/../b", "../a", "a/",
        "b/../a/c", ".",
    ];

    proptest::proptest! {
        /// Random sequences of operations (with descriptors held and
        /// released) never panic and always leave a valid tree.
        #[test]
        fn random_operations_keep_the_invariants(
            ops in proptest::collection::vec((0u8..8, 0..PATHS.len(), 0..PATHS.len(), 0u64..40), 0..80)
        ) {
            let mut v = Vfs::new(NODE_COST * 8 + 3000);
            let root = v.add_root(0).unwrap();
            let mut held: Vec<Ino> = Vec::new();
            for (op, p, q, n) in ops {
                let (p, q) = (PATHS[p], PATHS[q]);
                let is_open = |ino: Ino| held.contains(&ino);
                let _ = match op {
                    0 => v.mkdir(root, p, n),
                    1 => v.open(root, p, oflags::CREAT, true, n).map(|_| ()),
                    2 => v.lookup(root, p).and_then(|f| v.write(f, n * 50, &[1u8; 100], n)),
                    3 => v.unlink(root, p, n, &is_open),
                    4 => v.rmdir(root, p, n, &is_open),
                    5 => v.rename(root, p, root, q, n, &is_open),
                    6 => v.lookup(root, p).map(|ino| held.push(ino)),
                    _ => {
                        if !held.is_empty() {
                            let ino = held.remove(n as usize % held.len());
                            if !held.contains(&ino) {
                                v.closed(ino);
                            }
                        }
                        Ok(())
                    }
                };
                proptest::prop_assert_eq!(v.validate(), Ok(()));
                for ino in &held {
                    proptest::prop_assert!(v.node(*ino).is_ok());
                }
            }
        }
    }

    #[test]
    fn readdir_order_is_by_name() {
        let (mut v, root) = fs();
        v.open(root, "b", oflags::CREAT, true, NOW).unwrap();
        v.open(root, "a", oflags::CREAT, true, NOW).unwrap();
        let names: Vec<_> = v.entries(root).unwrap().map(|e| e.0).collect();
        assert_eq!(names, ["a", "b", "dir"]);
    }

    #[test]
    fn validate_rejects_origins_that_are_not_plain_paths_below_a_preopen() {
        let mut v = Vfs::new(1 << 20);
        let root = v.add_root(0).unwrap();
        let origin = |preopen: u32, path: &str| {
            Some(Origin {
                preopen,
                path: path.to_owned(),
            })
        };
        let ino = v
            .insert(root, "f", Some(b"x".to_vec()), origin(0, "f"), NOW)
            .unwrap();
        assert_eq!(v.validate(), Ok(()));
        // A loaded file moved elsewhere keeps its origin: still valid.
        for good in ["other", "a/b/c", "sub/f", &"n".repeat(NAME_MAX)] {
            v.nodes.get_mut(&ino).unwrap().origin = origin(0, good);
            assert_eq!(v.validate(), Ok(()), "{good:?}");
        }
        let bad = [
            "",
            "..",
            "../outside",
            "a/../../b",
            "a/./b",
            ".",
            "/etc/passwd",
            "a//b",
            "a/",
            "nul\0here",
            &"n".repeat(NAME_MAX + 1),
            &"a/".repeat(PATH_MAX),
        ];
        for path in bad {
            v.nodes.get_mut(&ino).unwrap().origin = origin(0, path);
            assert_eq!(
                v.validate(),
                Err("a node's origin is not a plain path below its preopen"),
                "{path:?}"
            );
        }
        // A preopen that does not exist.
        v.nodes.get_mut(&ino).unwrap().origin = origin(1, "f");
        assert!(v.validate().is_err());
        v.nodes.get_mut(&ino).unwrap().origin = None;
        assert_eq!(v.validate(), Ok(()));
    }
}
