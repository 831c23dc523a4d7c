//! Path-based preview1 calls (`path_*`): opening, creating, removing,
//! renaming and inspecting files and directories relative to a directory
//! descriptor.
//!
//! Each function is a method of [`Host`] taking the guest memory and the raw
//! call arguments and returning an errno; the wasmtime glue is in
//! `linker.rs`; path resolution itself is in `vfs.rs`. Lookup flags
//! (`symlink_follow`) are accepted and ignored: the virtual file system has
//! no symbolic links.

use super::abi::{fdflags, oflags, rights, Errno, WasiResult, FILESTAT_SIZE};
use super::fd::Desc;
use super::mem::GuestMemory;
use super::sys_fd::{filestat_bytes, times_from_flags};
use super::vfs::Ino;
use super::Host;

impl Host {
    /// The directory behind `fd`, for use as a path base. wasmtime answers
    /// `EBADF` for anything but a directory here.
    fn base_dir(&self, fd: u32) -> WasiResult<Ino> {
        match self.state.fds.get(fd)? {
            Desc::Dir { ino, .. } => Ok(*ino),
            _ => Err(Errno::Badf),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_open(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        _lookup: u32,
        path: u32,
        path_len: u32,
        oflags: u32,
        rights_base: u64,
        _rights_inheriting: u64,
        fdflags: u32,
        out: u32,
    ) -> WasiResult<()> {
        mem.check(out, 4)?;
        let base = self.state.fds.dir(dirfd)?;
        let path = mem.str(path, path_len)?;
        let oflags = u16::try_from(oflags).map_err(|_| Errno::Inval)?;
        let fdflags = u16::try_from(fdflags).map_err(|_| Errno::Inval)?;
        let all_oflags = oflags::CREAT | oflags::DIRECTORY | oflags::EXCL | oflags::TRUNC;
        if oflags & !all_oflags != 0 || fdflags & !fdflags::ALL != 0 {
            return Err(Errno::Inval);
        }
        if !self.state.fds.has_room() {
            return Err(Errno::Mfile);
        }
        let read = rights_base & rights::FD_READ != 0;
        let write = rights_base & rights::FD_WRITE != 0;
        let now = self.fs_now();
        let ino = self.state.vfs.open(base, path, oflags, write, now)?;
        let desc = if self.state.vfs.node(ino)?.is_dir() {
            Desc::Dir {
                ino,
                preopen: None,
                read,
            }
        } else {
            Desc::File {
                ino,
                pos: 0,
                read,
                write,
                flags: fdflags,
            }
        };
        let fd = self.state.fds.push(desc)?;
        mem.write_u32(out, fd)
    }

    pub(crate) fn path_filestat_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        _lookup: u32,
        path: u32,
        path_len: u32,
        out: u32,
    ) -> WasiResult<()> {
        mem.check(out, FILESTAT_SIZE)?;
        let base = self.base_dir(dirfd)?;
        let ino = self.state.vfs.lookup(base, mem.str(path, path_len)?)?;
        let st = self.state.vfs.stat(ino)?;
        mem.write_bytes(out, &filestat_bytes(&st))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_filestat_set_times(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        _lookup: u32,
        path: u32,
        path_len: u32,
        atim: u64,
        mtim: u64,
        flags: u32,
    ) -> WasiResult<()> {
        let base = self.base_dir(dirfd)?;
        let now = self.fs_now();
        let (a, m) = times_from_flags(flags, atim, mtim, now)?;
        let ino = self.state.vfs.lookup(base, mem.str(path, path_len)?)?;
        self.state.vfs.set_times(ino, a, m, now)
    }

    pub(crate) fn path_create_directory(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        path: u32,
        path_len: u32,
    ) -> WasiResult<()> {
        let base = self.base_dir(dirfd)?;
        let now = self.fs_now();
        self.state.vfs.mkdir(base, mem.str(path, path_len)?, now)
    }

    pub(crate) fn path_remove_directory(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        path: u32,
        path_len: u32,
    ) -> WasiResult<()> {
        let base = self.base_dir(dirfd)?;
        let now = self.fs_now();
        let fds = &self.state.fds;
        let is_open = |ino: Ino| fds.refers_to(ino);
        self.state
            .vfs
            .rmdir(base, mem.str(path, path_len)?, now, &is_open)
    }

    pub(crate) fn path_unlink_file(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        path: u32,
        path_len: u32,
    ) -> WasiResult<()> {
        let base = self.base_dir(dirfd)?;
        let now = self.fs_now();
        let fds = &self.state.fds;
        let is_open = |ino: Ino| fds.refers_to(ino);
        self.state
            .vfs
            .unlink(base, mem.str(path, path_len)?, now, &is_open)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_rename(
        &mut self,
        mem: &mut GuestMemory<'_>,
        old_fd: u32,
        old_path: u32,
        old_len: u32,
        new_fd: u32,
        new_path: u32,
        new_len: u32,
    ) -> WasiResult<()> {
        let old_base = self.base_dir(old_fd)?;
        let new_base = self.base_dir(new_fd)?;
        let old = mem.str(old_path, old_len)?;
        let new = mem.str(new_path, new_len)?;
        let now = self.fs_now();
        let fds = &self.state.fds;
        let is_open = |ino: Ino| fds.refers_to(ino);
        self.state
            .vfs
            .rename(old_base, old, new_base, new, now, &is_open)
    }

    /// There are no symbolic links: an existing path is `EINVAL` (not a
    /// link), a missing one `ENOENT`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_readlink(
        &mut self,
        mem: &mut GuestMemory<'_>,
        dirfd: u32,
        path: u32,
        path_len: u32,
        _buf: u32,
        _buf_len: u32,
        _bufused: u32,
    ) -> WasiResult<()> {
        let base = self.base_dir(dirfd)?;
        self.state.vfs.lookup(base, mem.str(path, path_len)?)?;
        Err(Errno::Inval)
    }
}

#[cfg(test)]
mod tests {
    use super::super::abi::fstflags;
    use super::super::tests::config;
    use super::super::{ClockMode, HostState, Preopen};
    use super::*;

    const RW: u64 = rights::FD_READ | rights::FD_WRITE;

    struct T {
        host: Host,
        mem: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    impl T {
        fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("in.txt"), b"loaded").unwrap();
            let mut cfg = config();
            cfg.preopens = vec![Preopen {
                host: dir.path().to_path_buf(),
                guest: "/data".into(),
            }];
            let host = Host::new(
                HostState::new(&cfg).unwrap(),
                Box::new(|_, _: &[u8]| {}),
                ClockMode::Virtual {
                    start_realtime_ns: 0,
                },
            );
            T {
                host,
                mem: vec![0u8; 4096],
                _dir: dir,
            }
        }

        /// Puts `path` at 1024 and calls `f(host, mem, ptr, len)`.
        fn with_path<R>(
            &mut self,
            path: &str,
            f: impl FnOnce(&mut Host, &mut GuestMemory<'_>, u32, u32) -> R,
        ) -> R {
            self.mem[1024..1024 + path.len()].copy_from_slice(path.as_bytes());
            let mut m = GuestMemory::new(&mut self.mem);
            f(&mut self.host, &mut m, 1024, path.len() as u32)
        }

        fn open(&mut self, path: &str, of: u16, rights: u64, fdf: u16) -> WasiResult<u32> {
            self.with_path(path, |h, m, p, l| {
                h.path_open(m, 3, 0, p, l, of.into(), rights, 0, fdf.into(), 0)?;
                m.read_u32(0)
            })
        }
    }

    #[test]
    fn preopen_is_fd_3_with_its_name() {
        let mut t = T::new();
        let mut m = GuestMemory::new(&mut t.mem);
        t.host.fd_prestat_get(&mut m, 3, 0).unwrap();
        assert_eq!(m.read_u8(0), Ok(0));
        assert_eq!(m.read_u32(4), Ok(5));
        assert_eq!(
            t.host.fd_prestat_dir_name(&mut m, 3, 16, 4),
            Err(Errno::Nametoolong)
        );
        t.host.fd_prestat_dir_name(&mut m, 3, 16, 5).unwrap();
        assert_eq!(m.slice(16, 5), Ok(&b"/data"[..]));
        assert_eq!(t.host.fd_prestat_get(&mut m, 4, 0), Err(Errno::Badf));
        t.host.fd_fdstat_get(&mut m, 3, 0).unwrap();
        assert_eq!(m.read_u64(8), Ok(rights::PREOPEN_BASE));
        assert_eq!(m.read_u64(16), Ok(rights::PREOPEN_INHERITING));
    }

    #[test]
    fn open_write_seek_read_stat() {
        let mut t = T::new();
        let fd = t.open("out.txt", oflags::CREAT, RW, 0).unwrap();
        assert_eq!(fd, 4);
        let mut m = GuestMemory::new(&mut t.mem);
        m.write_bytes(100, b"hello world").unwrap();
        m.write_u32(0, 100).unwrap();
        m.write_u32(4, 11).unwrap();
        t.host.fd_write(&mut m, fd, 0, 1, 8).unwrap();
        assert_eq!(m.read_u32(8), Ok(11));
        t.host.fd_seek(&mut m, fd, -5, 1, 16).unwrap();
        assert_eq!(m.read_u64(16), Ok(6));
        t.host.fd_tell(&mut m, fd, 16).unwrap();
        assert_eq!(m.read_u64(16), Ok(6));
        assert_eq!(t.host.fd_seek(&mut m, fd, -7, 1, 16), Err(Errno::Inval));
        assert_eq!(t.host.fd_seek(&mut m, fd, 0, 3, 16), Err(Errno::Inval));
        m.write_u32(0, 200).unwrap();
        m.write_u32(4, 64).unwrap();
        t.host.fd_read(&mut m, fd, 0, 1, 8).unwrap();
        assert_eq!(m.read_u32(8), Ok(5));
        assert_eq!(m.slice(200, 5), Ok(&b"world"[..]));
        t.host.fd_pread(&mut m, fd, 0, 1, 0, 8).unwrap();
        assert_eq!(m.slice(200, 11), Ok(&b"hello world"[..]));
        t.host.fd_filestat_get(&mut m, fd, 300).unwrap();
        assert_eq!(m.read_u8(316), Ok(4));
        assert_eq!(m.read_u64(332), Ok(11));
        t.host.fd_filestat_set_size(fd, 2).unwrap();
        t.host.fd_filestat_get(&mut m, fd, 300).unwrap();
        assert_eq!(m.read_u64(332), Ok(2));
        t.host
            .fd_filestat_set_times(fd, 5, 6, u32::from(fstflags::ATIM | fstflags::MTIM))
            .unwrap();
        t.host.fd_filestat_get(&mut m, fd, 300).unwrap();
        assert_eq!((m.read_u64(340), m.read_u64(348)), (Ok(5), Ok(6)));
        assert_eq!(
            t.host
                .fd_filestat_set_times(fd, 0, 0, (fstflags::ATIM | fstflags::ATIM_NOW).into()),
            Err(Errno::Inval)
        );
        t.host.fd_close(fd).unwrap();
    }

    #[test]
    fn read_only_and_append_descriptors() {
        let mut t = T::new();
        let ro = t.open("in.txt", 0, rights::FD_READ, 0).unwrap();
        let mut m = GuestMemory::new(&mut t.mem);
        m.write_u32(0, 100).unwrap();
        m.write_u32(4, 3).unwrap();
        assert_eq!(t.host.fd_write(&mut m, ro, 0, 1, 8), Err(Errno::Badf));
        assert_eq!(t.host.fd_filestat_set_size(ro, 0), Err(Errno::Badf));
        t.host.fd_fdstat_get(&mut m, ro, 16).unwrap();
        assert_eq!(m.read_u64(24).map(|r| r & rights::FD_WRITE), Ok(0));
        let ap = t.open("in.txt", 0, RW, fdflags::APPEND).unwrap();
        let mut m = GuestMemory::new(&mut t.mem);
        m.write_bytes(100, b"+++").unwrap();
        m.write_u32(0, 100).unwrap();
        m.write_u32(4, 3).unwrap();
        t.host.fd_write(&mut m, ap, 0, 1, 8).unwrap();
        t.host.fd_tell(&mut m, ap, 16).unwrap();
        assert_eq!(m.read_u64(16), Ok(9));
        t.host.fd_fdstat_get(&mut m, ap, 16).unwrap();
        assert_eq!(m.read_u16(18), Ok(fdflags::APPEND));
        t.host.fd_fdstat_set_flags(ap, 0).unwrap();
        t.host.fd_seek(&mut m, ap, 0, 0, 16).unwrap();
        t.host.fd_write(&mut m, ap, 0, 1, 8).unwrap();
        let ino = t.host.state.fds.get(ap).unwrap().ino().unwrap();
        assert_eq!(t.host.state.vfs.data(ino), Ok(&b"+++ded+++"[..]));
        assert_eq!(
            t.host.fd_fdstat_set_flags(ap, fdflags::SYNC.into()),
            Err(Errno::Inval)
        );
    }

    #[test]
    fn path_errnos() {
        let mut t = T::new();
        assert_eq!(t.open("/etc/passwd", 0, RW, 0), Err(Errno::Perm));
        assert_eq!(t.open("../x", oflags::CREAT, RW, 0), Err(Errno::Perm));
        assert_eq!(t.open("missing", 0, RW, 0), Err(Errno::Noent));
        assert_eq!(
            t.open("in.txt", oflags::CREAT | oflags::EXCL, RW, 0),
            Err(Errno::Exist)
        );
        assert_eq!(t.open("in.txt", 0x10, RW, 0), Err(Errno::Inval));
        assert_eq!(t.open("in.txt", 0, RW, 0x20), Err(Errno::Inval));
        let f = t.open("in.txt", 0, RW, 0).unwrap();
        // A file is not a base directory.
        let r = t.with_path("x", |h, m, p, l| h.path_open(m, f, 0, p, l, 0, RW, 0, 0, 0));
        assert_eq!(r, Err(Errno::Notdir));
        let r = t.with_path("x", |h, m, p, l| h.path_create_directory(m, f, p, l));
        assert_eq!(r, Err(Errno::Badf));
        let r = t.with_path("d", |h, m, p, l| h.path_create_directory(m, 3, p, l));
        assert_eq!(r, Ok(()));
        let d = t.open("d", oflags::DIRECTORY, rights::FD_READ, 0).unwrap();
        let r = t.with_path("..", |h, m, p, l| h.path_filestat_get(m, d, 0, p, l, 0));
        assert_eq!(r, Err(Errno::Perm));
        // Invalid UTF-8 in a path.
        t.mem[1024] = 0xff;
        let mut m = GuestMemory::new(&mut t.mem);
        assert_eq!(
            t.host.path_unlink_file(&mut m, 3, 1024, 1),
            Err(Errno::Ilseq)
        );
        assert_eq!(
            t.host.path_unlink_file(&mut m, 3, 4090, 100),
            Err(Errno::Fault)
        );
        let r = t.with_path("in.txt", |h, m, p, l| h.path_readlink(m, 3, p, l, 0, 0, 0));
        assert_eq!(r, Err(Errno::Inval));
    }

    #[test]
    fn unlink_open_file_then_close_frees_it() {
        let mut t = T::new();
        let f = t.open("tmp", oflags::CREAT, RW, 0).unwrap();
        let ino = t.host.state.fds.get(f).unwrap().ino().unwrap();
        t.with_path("tmp", |h, m, p, l| h.path_unlink_file(m, 3, p, l))
            .unwrap();
        assert!(t.host.state.vfs.node(ino).is_ok());
        t.host.state.validate().unwrap();
        t.host.fd_close(f).unwrap();
        assert!(t.host.state.vfs.node(ino).is_err());
        t.host.state.validate().unwrap();
    }

    #[test]
    fn readdir_lists_dots_then_names_and_resumes_by_cookie() {
        let mut t = T::new();
        t.open("b", oflags::CREAT, RW, 0).unwrap();
        let mut m = GuestMemory::new(&mut t.mem);
        t.host.fd_readdir(&mut m, 3, 0, 512, 0, 600).unwrap();
        let used = m.read_u32(600).unwrap();
        let mut names = Vec::new();
        let mut at = 0u32;
        let mut cookies = Vec::new();
        while at < used {
            let next = m.read_u64(at).unwrap();
            let len = m.read_u32(at + 16).unwrap();
            names.push(String::from_utf8(m.slice(at + 24, len).unwrap().to_vec()).unwrap());
            cookies.push(next);
            at += 24 + len;
        }
        assert_eq!(names, [".", "..", "b", "in.txt"]);
        assert_eq!(cookies, [1, 2, 3, 4]);
        assert_eq!(used, 24 * 4 + 1 + 2 + 1 + 6);
        // Resume after "b": only "in.txt".
        t.host.fd_readdir(&mut m, 3, 0, 512, 3, 600).unwrap();
        assert_eq!(m.read_u32(600), Ok(30));
        assert_eq!(m.slice(24, 6), Ok(&b"in.txt"[..]));
        // A small buffer is filled completely.
        t.host.fd_readdir(&mut m, 3, 0, 30, 0, 600).unwrap();
        assert_eq!(m.read_u32(600), Ok(30));
        // Past the end: nothing.
        t.host.fd_readdir(&mut m, 3, 0, 512, 99, 600).unwrap();
        assert_eq!(m.read_u32(600), Ok(0));
        assert_eq!(
            t.host.fd_readdir(&mut m, 1, 0, 512, 0, 600),
            Err(Errno::Badf)
        );
    }
}
