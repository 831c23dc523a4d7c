//! The only code that touches the host file system: loading preopened
//! directories into the virtual file system at task creation, and writing
//! the task's changes back when it finishes.
//!
//! Loading walks a directory in name order (so inode numbers are
//! deterministic), takes regular files and subdirectories, and skips
//! symbolic links and special files with a warning. Nothing here is
//! reachable from a guest call.
//!
//! # Write-back
//!
//! Write-back writes only what the task created or changed, each file
//! atomically, and never deletes anything on the host. The state it writes
//! may come from a peer or a journal, so nothing in it is trusted to decide
//! *where* to write. What it guarantees, on Unix:
//!
//! * Nothing is ever written outside the granted host directory (the
//!   `--dir` of the preopen) or through a symbolic link. The destination of
//!   every file and directory is its guest path below its preopen; every
//!   name in it must be one plain component ([`HostError::UnsafeName`]
//!   otherwise). The granted directory itself is opened by the path the
//!   user gave; every component below it is opened relative to its parent's
//!   descriptor with `O_NOFOLLOW | O_DIRECTORY`, created with `mkdirat` if
//!   the task created it and it is missing. A symbolic link (or anything but
//!   a directory) where a directory is needed is refused with
//!   [`HostError::Write`] naming that host path, whether it was there at
//!   load time, appeared during the run, or between a kill and a resume;
//!   files written before the refusal stay written.
//! * A file is replaced atomically: a temporary file is created in the same
//!   directory (`openat` with `O_CREAT | O_EXCL | O_NOFOLLOW`), written,
//!   fsynced, then `renameat` over the name, all relative to the directory's
//!   descriptor, and the directory is fsynced. An existing regular file's
//!   permissions are kept. If the name is a symbolic link on the host (to a
//!   file anywhere), the link itself is *replaced* by a regular file inside
//!   the granted directory; its target is never opened or changed. A
//!   directory in the way is an error.
//! * A node's `Origin` (where it was loaded from) is only a hint that can
//!   make write-back do less: a file whose origin is exactly its current
//!   path and that the task did not modify is not rewritten, and a directory
//!   loaded from exactly its path is not created (only opened, no-follow, if
//!   something below it is written). [`Vfs::validate`] also rejects origins
//!   that are not plain relative paths below an existing preopen.
//! * A preopen with nothing to write is not touched at all.
//!
//! Not covered: a directory that someone *moves* out of the granted
//! directory while write-back itself is running (after it was opened)
//! receives the files meant for it at its new place, as with any
//! descriptor-based walk.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::abi::Errno;
use super::vfs::{is_safe_name, Ino, Kind, Origin, Vfs};
use super::{HostError, WriteBackReport};

/// Loads the host directory `host` as preopen number `index`; returns the
/// root's inode.
pub(crate) fn load_preopen(
    vfs: &mut Vfs,
    index: u32,
    host: &Path,
    now: u64,
) -> Result<Ino, HostError> {
    let limit_err = |path: &Path, vfs: &Vfs| HostError::FsLimit {
        limit: vfs.limit(),
        path: path.to_path_buf(),
    };
    let meta = fs::metadata(host).map_err(|source| HostError::Read {
        path: host.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(HostError::NotADirectory {
            path: host.to_path_buf(),
        });
    }
    let root = vfs.add_root(now).map_err(|_| limit_err(host, vfs))?;
    // (host directory, its inode, its path relative to the preopen)
    let mut stack: Vec<(PathBuf, Ino, String)> = vec![(host.to_path_buf(), root, String::new())];
    while let Some((dir, ino, rel)) = stack.pop() {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HostError::Read { path, source }
        };
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir).map_err(read_err(&dir))? {
            let entry = entry.map_err(read_err(&dir))?;
            entries.push(entry.path());
        }
        entries.sort();
        let mut subdirs = Vec::new();
        for path in entries {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| HostError::NonUtf8Name { path: path.clone() })?
                .to_owned();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let origin = Some(Origin {
                preopen: index,
                path: child_rel.clone(),
            });
            let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                let child = vfs
                    .insert(ino, &name, None, origin, now)
                    .map_err(|e| insert_err(e, &path, vfs))?;
                subdirs.push((path, child, child_rel));
            } else if ft.is_file() {
                let room = vfs.limit().saturating_sub(vfs.used());
                if meta.len() > room {
                    // Refused before reading: a file far over the limit is
                    // not read into memory first.
                    return Err(limit_err(&path, vfs));
                }
                let mut data = Vec::new();
                fs::File::open(&path)
                    .map_err(read_err(&path))?
                    .take(room.saturating_add(1))
                    .read_to_end(&mut data)
                    .map_err(read_err(&path))?;
                vfs.insert(ino, &name, Some(data), origin, now)
                    .map_err(|e| insert_err(e, &path, vfs))?;
            } else {
                tracing::warn!(
                    path = %path.display(),
                    "skipping a symbolic link or special file in a preopened directory"
                );
            }
        }
        // Visit subdirectories in name order (the stack pops the last first).
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(root)
}

fn insert_err(e: Errno, path: &Path, vfs: &Vfs) -> HostError {
    match e {
        Errno::Nametoolong => HostError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other("the name is longer than 255 bytes"),
        },
        _ => HostError::FsLimit {
            limit: vfs.limit(),
            path: path.to_path_buf(),
        },
    }
}

/// One thing write-back does, found by walking the virtual tree.
enum Action<'v> {
    /// Create the directory (if missing) and check that it is one.
    Mkdir,
    /// Replace the file with these bytes.
    Write(&'v [u8]),
}

/// Writes what the task created or changed under each preopen's root back
/// to `host_dirs[i]`.
pub(crate) fn write_back(vfs: &Vfs, host_dirs: &[PathBuf]) -> Result<WriteBackReport, HostError> {
    let mut report = WriteBackReport::default();
    for (index, &root) in vfs.roots().iter().enumerate() {
        let host = host_dirs.get(index).ok_or(HostError::NoHostDir { index })?;
        let preopen = u32::try_from(index).map_err(|_| HostError::Corrupt("too many preopens"))?;
        let plan = plan(vfs, root, preopen)?;
        if plan.is_empty() {
            continue;
        }
        let mut walker = Walker::new(host)?;
        for (rel, action) in plan {
            let target = host.join(&rel);
            let (dir, name) = match rel.rsplit_once('/') {
                Some((dir, name)) => (dir, name),
                None => ("", rel.as_str()),
            };
            walker.enter(dir)?;
            match action {
                Action::Mkdir => {
                    if walker.mkdir(name, &target)? {
                        report.dirs_created.push(target);
                    }
                }
                Action::Write(data) => {
                    walker.write_file(name, data, &target)?;
                    report.bytes_written += data.len() as u64;
                    report.files_written.push(target);
                }
            }
        }
        walker.finish();
    }
    Ok(report)
}

/// What to do under one preopen, in order: each action's path relative to
/// the preopen (`/`-separated, every component a safe name) and what to do
/// there. Parents come before their contents. The destination is always the
/// guest path; a node's [`Origin`] is only used to skip work (an unchanged
/// file or a directory loaded from exactly that path), never to choose
/// where to write.
fn plan(vfs: &Vfs, root: Ino, preopen: u32) -> Result<Vec<(String, Action<'_>)>, HostError> {
    let mut plan = Vec::new();
    let mut stack: Vec<(Ino, String)> = vec![(root, String::new())];
    let mut visited = 0usize;
    while let Some((dir, rel)) = stack.pop() {
        visited += 1;
        if visited > vfs.nodes().len() {
            return Err(HostError::Corrupt("the directory graph has a cycle"));
        }
        let node = vfs
            .node(dir)
            .map_err(|_| HostError::Corrupt("a directory entry names a missing node"))?;
        let Kind::Dir { entries, .. } = &node.kind else {
            return Err(HostError::Corrupt("a preopen root is not a directory"));
        };
        let mut subdirs = Vec::new();
        for (name, &child) in entries {
            if !is_safe_name(name) {
                return Err(HostError::UnsafeName { name: name.clone() });
            }
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let node = vfs
                .node(child)
                .map_err(|_| HostError::Corrupt("a directory entry names a missing node"))?;
            let same_place = node
                .origin
                .as_ref()
                .is_some_and(|o| o.preopen == preopen && o.path == child_rel);
            match &node.kind {
                Kind::Dir { .. } => {
                    if !same_place {
                        plan.push((child_rel.clone(), Action::Mkdir));
                    }
                    subdirs.push((child, child_rel));
                }
                Kind::File { data, modified } => {
                    if *modified || !same_place {
                        plan.push((child_rel, Action::Write(data)));
                    }
                }
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(plan)
}

/// An open directory of the chain from the preopen's host directory down.
struct OpenDir {
    /// Its name in its parent (empty for the preopen's directory).
    name: String,
    dir: fs::File,
    /// Whether an entry was added or replaced in it (it needs an fsync).
    dirty: bool,
}

/// Walks a preopen's host directory by descriptors: the open chain of
/// directories from the granted one down to where the last action was, each
/// opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`.
struct Walker<'h> {
    host: &'h Path,
    /// `chain[0]` is the granted directory; never empty.
    chain: Vec<OpenDir>,
}

impl<'h> Walker<'h> {
    /// Opens the granted directory itself (the user named it, so a link in
    /// its own path is followed).
    fn new(host: &'h Path) -> Result<Self, HostError> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(host)
            .map_err(|source| HostError::Write {
                path: host.to_path_buf(),
                source,
            })?;
        Ok(Walker {
            host,
            chain: vec![OpenDir {
                name: String::new(),
                dir,
                dirty: false,
            }],
        })
    }

    fn current(&mut self) -> &mut OpenDir {
        let last = self.chain.len() - 1;
        &mut self.chain[last]
    }

    /// Makes the chain end at `rel` (relative to the granted directory,
    /// `/`-separated, empty for the granted directory), opening each
    /// component that is not open yet without following links.
    fn enter(&mut self, rel: &str) -> Result<(), HostError> {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let keep = 1 + self.chain[1..]
            .iter()
            .zip(&comps)
            .take_while(|(open, c)| open.name == **c)
            .count();
        while self.chain.len() > keep {
            if let Some(d) = self.chain.pop() {
                d.sync();
            }
        }
        for i in keep - 1..comps.len() {
            let name = comps[i];
            let path = self.host.join(comps[..=i].join("/"));
            let dir = open_dir_nofollow(&self.current().dir, name, &path)?;
            self.chain.push(OpenDir {
                name: name.to_owned(),
                dir,
                dirty: false,
            });
        }
        Ok(())
    }

    /// Creates directory `name` in the current directory unless one is
    /// there, then enters it; returns whether it created one. Anything
    /// else in the way, a symbolic link included, is an error.
    fn mkdir(&mut self, name: &str, path: &Path) -> Result<bool, HostError> {
        let werr = |source| HostError::Write {
            path: path.to_path_buf(),
            source,
        };
        let cname = c_name(name, path)?;
        let parent = self.current();
        // SAFETY: `parent.dir` is an open directory descriptor borrowed for
        // the call and `cname` a NUL-terminated string that outlives it.
        let rc = unsafe { libc::mkdirat(parent.dir.as_raw_fd(), cname.as_ptr(), 0o777) };
        let created = if rc == 0 {
            parent.dirty = true;
            true
        } else {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(werr(e));
            }
            false
        };
        let dir = open_dir_nofollow(&parent.dir, name, path)?;
        self.chain.push(OpenDir {
            name: name.to_owned(),
            dir,
            dirty: false,
        });
        Ok(created)
    }

    /// Replaces `name` in the current directory with `data` atomically: a
    /// temporary file created there, written, fsynced and renamed over
    /// `name`, all relative to the directory's descriptor. An existing
    /// regular file's permissions are kept; a symbolic link is replaced
    /// (the rename replaces the link itself, never its target); a directory
    /// in the way is an error.
    fn write_file(&mut self, name: &str, data: &[u8], path: &Path) -> Result<(), HostError> {
        use std::os::unix::fs::PermissionsExt;
        let werr = |source| HostError::Write {
            path: path.to_path_buf(),
            source,
        };
        let cname = c_name(name, path)?;
        let parent = self.current();
        let existing = lstat_at(&parent.dir, &cname).map_err(werr)?;
        if existing.is_some_and(|m| m & libc::S_IFMT == libc::S_IFDIR) {
            return Err(werr(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            )));
        }
        // Only a regular file's permissions are worth keeping: a symbolic
        // link (skipped at load, so the task may create a file of the same
        // name) reports 0777, which must not pass to the new file.
        let keep_mode = existing
            .filter(|m| m & libc::S_IFMT == libc::S_IFREG)
            .map(|m| m & 0o7777);
        let (tmp, mut file) = create_temp(&parent.dir, name).map_err(werr)?;
        let result = (|| {
            file.write_all(data)?;
            if let Some(m) = keep_mode {
                file.set_permissions(fs::Permissions::from_mode(m))?;
            }
            file.sync_all()?;
            drop(file);
            let fd = parent.dir.as_raw_fd();
            // SAFETY: `fd` is an open directory descriptor borrowed for the
            // call; both names are NUL-terminated strings that outlive it.
            cvt(unsafe { libc::renameat(fd, tmp.as_ptr(), fd, cname.as_ptr()) })
        })();
        parent.dirty = true;
        if let Err(e) = result {
            // SAFETY: as above; removes only our own temporary file.
            unsafe { libc::unlinkat(parent.dir.as_raw_fd(), tmp.as_ptr(), 0) };
            return Err(werr(e));
        }
        Ok(())
    }

    /// Makes the renames and creations durable.
    fn finish(mut self) {
        while let Some(d) = self.chain.pop() {
            d.sync();
        }
    }
}

impl OpenDir {
    fn sync(self) {
        if self.dirty {
            // Not every file system supports it; the data is already fsynced.
            let _ = self.dir.sync_all();
        }
    }
}

/// `0` or `-1` with `errno` as a result.
fn cvt(rc: libc::c_int) -> std::io::Result<()> {
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn c_name(name: &str, path: &Path) -> Result<CString, HostError> {
    CString::new(name).map_err(|_| HostError::UnsafeName {
        name: path.display().to_string(),
    })
}

/// Opens directory `name` of `parent` with `O_NOFOLLOW | O_DIRECTORY`: a
/// symbolic link or a non-directory there is an error naming `path`.
fn open_dir_nofollow(parent: &fs::File, name: &str, path: &Path) -> Result<fs::File, HostError> {
    let cname = c_name(name, path)?;
    // SAFETY: `parent` is an open directory descriptor borrowed for the call
    // and `cname` a NUL-terminated string that outlives it.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            cname.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let kind = lstat_at(parent, &cname)
            .ok()
            .flatten()
            .map(|m| m & libc::S_IFMT);
        let source = match kind {
            Some(libc::S_IFLNK) => std::io::Error::new(
                e.kind(),
                "a symbolic link is in the way (write-back never follows links)",
            ),
            Some(k) if k != libc::S_IFDIR => std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a directory is in the way",
            ),
            _ => e,
        };
        return Err(HostError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    // SAFETY: `openat` returned a new descriptor that nothing else owns.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The mode (type and permission bits) of `name` in `dir`, not following a
/// link; `None` if there is nothing of that name.
fn lstat_at(dir: &fs::File, name: &CStr) -> std::io::Result<Option<libc::mode_t>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is an open descriptor borrowed for the call, `name` is
    // NUL-terminated and `st` points to writable memory of a `stat`.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        // SAFETY: `fstatat` succeeded, so it filled in `st`.
        Ok(Some(unsafe { st.assume_init() }.st_mode))
    } else {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// Creates a new temporary file in `dir` for replacing `name`, with
/// `O_CREAT | O_EXCL | O_NOFOLLOW`. Its name starts with at most 200 bytes
/// of `name`, so that it stays within the host's name length limit.
fn create_temp(dir: &fs::File, name: &str) -> std::io::Result<(CString, fs::File)> {
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let short = &name[..cut];
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let tmp = CString::new(format!(".{short}.baton-{pid}-{n}.tmp"))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `dir` is an open directory descriptor borrowed for the
        // call and `tmp` a NUL-terminated string that outlives it.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o666 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: `openat` returned a new descriptor nothing else owns.
            let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            return Ok((tmp, file));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 {
            n += 1;
        } else {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::abi::oflags;
    use super::*;

    fn never_open(_: Ino) -> bool {
        false
    }

    #[test]
    fn load_then_write_back_only_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path();
        fs::create_dir(host.join("sub")).unwrap();
        fs::write(host.join("keep.txt"), b"keep").unwrap();
        fs::write(host.join("sub/edit.txt"), b"old").unwrap();
        fs::write(host.join("gone.txt"), b"stays on host").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", host.join("link")).unwrap();

        let mut vfs = Vfs::new(1 << 20);
        let root = load_preopen(&mut vfs, 0, host, 5).unwrap();
        assert_eq!(vfs.lookup(root, "link"), Err(Errno::Noent));
        let edit = vfs.lookup(root, "sub/edit.txt").unwrap();
        assert_eq!(vfs.data(edit), Ok(&b"old"[..]));

        vfs.write(edit, 0, b"new!", 9).unwrap();
        vfs.unlink(root, "gone.txt", 9, &never_open).unwrap();
        vfs.mkdir(root, "made/", 9).unwrap();
        let f = vfs
            .open(root, "made/out.bin", oflags::CREAT, true, 9)
            .unwrap();
        vfs.write(f, 0, &[1, 2, 3], 9).unwrap();
        vfs.rename(root, "keep.txt", root, "made/kept.txt", 9, &never_open)
            .unwrap();

        let report = write_back(&vfs, &[host.to_path_buf()]).unwrap();
        assert_eq!(report.dirs_created, vec![host.join("made")]);
        assert_eq!(
            report.files_written,
            vec![
                host.join("made/kept.txt"),
                host.join("made/out.bin"),
                host.join("sub/edit.txt"),
            ]
        );
        assert_eq!(report.bytes_written, 4 + 3 + 4);
        assert_eq!(fs::read(host.join("sub/edit.txt")).unwrap(), b"new!");
        assert_eq!(fs::read(host.join("made/out.bin")).unwrap(), [1, 2, 3]);
        assert_eq!(fs::read(host.join("made/kept.txt")).unwrap(), b"keep");
        // Deletions and renames-away are not propagated.
        assert_eq!(fs::read(host.join("gone.txt")).unwrap(), b"stays on host");
        assert_eq!(fs::read(host.join("keep.txt")).unwrap(), b"keep");
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(host.join("made"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());

        // Nothing changed since: a second write-back of a fresh load is empty.
        let mut again = Vfs::new(1 << 20);
        load_preopen(&mut again, 0, host, 5).unwrap();
        let report = write_back(&again, &[host.to_path_buf()]).unwrap();
        assert_eq!(report, WriteBackReport::default());
    }

    #[test]
    fn load_respects_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("big"), vec![7u8; 10_000]).unwrap();
        let mut vfs = Vfs::new(5_000);
        assert!(matches!(
            load_preopen(&mut vfs, 0, tmp.path(), 0),
            Err(HostError::FsLimit { limit: 5_000, .. })
        ));
        let mut vfs = Vfs::new(1 << 20);
        assert!(matches!(
            load_preopen(&mut vfs, 0, &tmp.path().join("big"), 0),
            Err(HostError::NotADirectory { .. })
        ));
        assert!(matches!(
            load_preopen(&mut vfs, 0, &tmp.path().join("missing"), 0),
            Err(HostError::Read { .. })
        ));
    }

    #[test]
    fn write_back_without_host_dir_is_an_error() {
        let mut vfs = Vfs::new(1 << 20);
        vfs.add_root(0).unwrap();
        assert!(matches!(
            write_back(&vfs, &[]),
            Err(HostError::NoHostDir { index: 0 })
        ));
    }

    fn origin(path: &str) -> Option<Origin> {
        Some(Origin {
            preopen: 0,
            path: path.to_owned(),
        })
    }

    fn is_empty_dir(path: &Path) -> bool {
        fs::read_dir(path).unwrap().next().is_none()
    }

    /// A forged state: a directory claims to have been loaded from `link`,
    /// which on this host is a symbolic link to a directory outside.
    #[cfg(unix)]
    #[test]
    fn a_forged_origin_naming_a_link_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("granted");
        let outside = tmp.path().join("outside");
        fs::create_dir(&host).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, host.join("link")).unwrap();

        let mut vfs = Vfs::new(1 << 20);
        let root = vfs.add_root(0).unwrap();
        let link = vfs.insert(root, "link", None, origin("link"), 0).unwrap();
        vfs.insert(link, "evil", Some(b"pwned".to_vec()), None, 0)
            .unwrap();
        assert_eq!(vfs.validate(), Ok(()));
        let err = write_back(&vfs, std::slice::from_ref(&host)).unwrap_err();
        assert!(
            matches!(&err, HostError::Write { path, .. } if *path == host.join("link")),
            "{err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(is_empty_dir(&outside));

        // Without the forged origin it is refused the same way.
        let mut vfs = Vfs::new(1 << 20);
        let root = vfs.add_root(0).unwrap();
        let link = vfs.insert(root, "link", None, None, 0).unwrap();
        vfs.insert(link, "evil", Some(b"pwned".to_vec()), None, 0)
            .unwrap();
        assert!(write_back(&vfs, std::slice::from_ref(&host)).is_err());
        assert!(is_empty_dir(&outside));
    }

    /// An origin naming a path outside the preopen is rejected by
    /// `validate`, and write-back does not use it for the destination even
    /// when `validate` was skipped.
    #[test]
    fn an_origin_outside_the_preopen_never_chooses_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("granted");
        fs::create_dir(&host).unwrap();
        let mut vfs = Vfs::new(1 << 20);
        let root = vfs.add_root(0).unwrap();
        vfs.insert(root, "f", Some(b"data".to_vec()), origin("../f"), 0)
            .unwrap();
        assert!(vfs.validate().is_err());
        let report = write_back(&vfs, std::slice::from_ref(&host)).unwrap();
        assert_eq!(report.files_written, vec![host.join("f")]);
        assert_eq!(fs::read(host.join("f")).unwrap(), b"data");
        assert!(!tmp.path().join("f").exists());
    }

    #[test]
    fn the_longest_names_are_written_back() {
        let tmp = tempfile::tempdir().unwrap();
        let name = "é".repeat(127) + "x";
        assert_eq!(name.len(), 255);
        let mut vfs = Vfs::new(1 << 20);
        let root = vfs.add_root(0).unwrap();
        let dir = vfs.insert(root, &name, None, None, 0).unwrap();
        vfs.insert(dir, &name, Some(b"deep".to_vec()), None, 0)
            .unwrap();
        let host = tmp.path().to_path_buf();
        let report = write_back(&vfs, std::slice::from_ref(&host)).unwrap();
        assert_eq!(report.dirs_created, vec![host.join(&name)]);
        assert_eq!(fs::read(host.join(&name).join(&name)).unwrap(), b"deep");
    }
}
