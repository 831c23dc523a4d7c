//! The only code that touches the host file system: loading preopened
//! directories into the virtual file system at task creation, and writing
//! the task's changes back when it finishes.
//!
//! Loading walks a directory in name order (so inode numbers are
//! deterministic), takes regular files and subdirectories, and skips
//! symbolic links and special files with a warning. Write-back writes only
//! what the task created or changed, each file atomically (temporary file in
//! the same directory, fsync, rename), and never deletes anything on the
//! host. Nothing here is reachable from a guest call.

use std::fs;
use std::io::{Read, Write};
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
            let ft = fs::symlink_metadata(&path)
                .map_err(read_err(&path))?
                .file_type();
            if ft.is_dir() {
                let child = vfs
                    .insert(ino, &name, None, origin, now)
                    .map_err(|e| insert_err(e, &path, vfs))?;
                subdirs.push((path, child, child_rel));
            } else if ft.is_file() {
                let room = vfs.limit().saturating_sub(vfs.used());
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

/// Writes what the task created or changed under each preopen's root back
/// to `host_dirs[i]`.
pub(crate) fn write_back(vfs: &Vfs, host_dirs: &[PathBuf]) -> Result<WriteBackReport, HostError> {
    let mut report = WriteBackReport::default();
    let mut synced_dirs: Vec<PathBuf> = Vec::new();
    for (index, &root) in vfs.roots().iter().enumerate() {
        let host = host_dirs.get(index).ok_or(HostError::NoHostDir { index })?;
        let preopen = u32::try_from(index).map_err(|_| HostError::Corrupt("too many preopens"))?;
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
                let target = host.join(&child_rel);
                match &node.kind {
                    Kind::Dir { .. } => {
                        if !same_place && create_dir(&target)? {
                            report.dirs_created.push(target);
                        }
                        subdirs.push((child, child_rel));
                    }
                    Kind::File { data, modified } => {
                        if *modified || !same_place {
                            atomic_write(&target, data)?;
                            report.bytes_written += data.len() as u64;
                            report.files_written.push(target.clone());
                            if let Some(parent) = target.parent() {
                                if !synced_dirs.iter().any(|d| d == parent) {
                                    synced_dirs.push(parent.to_path_buf());
                                }
                            }
                        }
                    }
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }
    for dir in synced_dirs {
        // Makes the renames durable; not every file system supports it.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    Ok(report)
}

/// Creates `path` as a directory unless one is there; returns whether it
/// created one.
fn create_dir(path: &Path) -> Result<bool, HostError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(HostError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a directory is in the way",
            ),
        }),
        Err(_) => match fs::create_dir(path) {
            Ok(()) => Ok(true),
            Err(source) => Err(HostError::Write {
                path: path.to_path_buf(),
                source,
            }),
        },
    }
}

/// Replaces `path` with `data` atomically: a temporary file in the same
/// directory, written, fsynced and renamed over `path`. An existing regular
/// file's permissions are kept.
fn atomic_write(path: &Path, data: &[u8]) -> Result<(), HostError> {
    let werr = |source| HostError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let existing = fs::symlink_metadata(path).ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(werr(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )));
    }
    // Only a regular file's permissions are worth keeping: a symbolic link
    // (skipped at load, so the task may create a file of the same name)
    // reports 0777, which must not pass to the new file.
    let existing = existing.filter(|m| m.is_file());
    let (tmp, mut file) = create_temp(dir, &name).map_err(werr)?;
    let result = (|| {
        file.write_all(data)?;
        if let Some(m) = &existing {
            file.set_permissions(m.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

fn create_temp(dir: &Path, name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let tmp = dir.join(format!(".{name}.baton-{pid}-{n}.tmp"));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
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
}
