//! Descriptor-based preview1 calls (`fd_*`): reading and writing stdio and
//! files, seeking, attributes, directory listing, preopen discovery.
//!
//! Each function is a method of [`Host`] taking the guest memory and the raw
//! call arguments and returning an errno; the wasmtime glue is in
//! `linker.rs`. Every output pointer is checked before any state changes, so
//! a call that fails with `EFAULT` has no effect. This file must not resolve
//! paths (see `sys_path.rs`).

use super::abi::{
    fdflags, filetype, fstflags, rights, whence, Errno, WasiResult, DIRENT_SIZE, FDSTAT_SIZE,
    FILESTAT_SIZE, PRESTAT_SIZE,
};
use super::fd::Desc;
use super::mem::GuestMemory;
use super::vfs::{Ino, Stat};
use super::{Host, OutStream};

/// Encodes a `filestat`.
pub(crate) fn filestat_bytes(st: &Stat) -> [u8; FILESTAT_SIZE as usize] {
    let mut b = [0u8; FILESTAT_SIZE as usize];
    b[0..8].copy_from_slice(&1u64.to_le_bytes()); // dev
    b[8..16].copy_from_slice(&st.ino.to_le_bytes());
    b[16] = st.filetype;
    b[24..32].copy_from_slice(&1u64.to_le_bytes()); // nlink
    b[32..40].copy_from_slice(&st.size.to_le_bytes());
    b[40..48].copy_from_slice(&st.atim.to_le_bytes());
    b[48..56].copy_from_slice(&st.mtim.to_le_bytes());
    b[56..64].copy_from_slice(&st.ctim.to_le_bytes());
    b
}

/// Resolves the `(set, set_now)` flag pair of `fstflags` for one timestamp.
pub(crate) fn timestamp_choice(
    flags: u16,
    set: u16,
    now_flag: u16,
    value: u64,
    now: u64,
) -> WasiResult<Option<u64>> {
    match (flags & set != 0, flags & now_flag != 0) {
        (true, true) => Err(Errno::Inval),
        (true, false) => Ok(Some(value)),
        (false, true) => Ok(Some(now)),
        (false, false) => Ok(None),
    }
}

/// Checks an `fstflags` value and returns `(atim, mtim)` to set.
pub(crate) fn times_from_flags(
    flags: u32,
    atim: u64,
    mtim: u64,
    now: u64,
) -> WasiResult<(Option<u64>, Option<u64>)> {
    let all = fstflags::ATIM | fstflags::ATIM_NOW | fstflags::MTIM | fstflags::MTIM_NOW;
    let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
    if flags & !all != 0 {
        return Err(Errno::Inval);
    }
    Ok((
        timestamp_choice(flags, fstflags::ATIM, fstflags::ATIM_NOW, atim, now)?,
        timestamp_choice(flags, fstflags::MTIM, fstflags::MTIM_NOW, mtim, now)?,
    ))
}

impl Host {
    /// The file behind `fd` for positioned I/O: `ESPIPE` for stdio, `EBADF`
    /// for a directory or a closed descriptor.
    fn seekable(&self, fd: u32) -> WasiResult<(Ino, u64)> {
        match self.state.fds.get(fd)? {
            Desc::File { ino, pos, .. } => Ok((*ino, *pos)),
            Desc::Stdin | Desc::Stdout | Desc::Stderr => Err(Errno::Spipe),
            Desc::Dir { .. } => Err(Errno::Badf),
        }
    }

    fn set_pos(&mut self, fd: u32, new: u64) -> WasiResult<()> {
        if let Desc::File { pos, .. } = self.state.fds.get_mut(fd)? {
            *pos = new;
        }
        Ok(())
    }

    /// Copies bytes from `src` starting at `from` into the iovecs; returns
    /// how many were copied.
    fn copy_to_iovecs(
        mem: &mut GuestMemory<'_>,
        iovs: u32,
        count: u32,
        src: &[u8],
        from: u64,
    ) -> WasiResult<u32> {
        let mut at = usize::try_from(from).unwrap_or(usize::MAX).min(src.len());
        let mut total: u32 = 0;
        for i in 0..count {
            if at >= src.len() {
                break;
            }
            let (buf, len) = mem.iovec(iovs, i)?;
            let n = (len as usize).min(src.len() - at);
            let n32 = u32::try_from(n).map_err(|_| Errno::Overflow)?;
            mem.slice_mut(buf, n32)?.copy_from_slice(&src[at..at + n]);
            at += n;
            total = total.checked_add(n32).ok_or(Errno::Overflow)?;
        }
        Ok(total)
    }

    /// Writes the iovecs to file `ino` at `pos` (or at its end if `append`);
    /// returns `(bytes written, position after)`. A write that runs out of
    /// space part way returns what was written, or `ENOSPC` if nothing was.
    fn write_iovecs_to_file(
        &mut self,
        mem: &GuestMemory<'_>,
        ino: Ino,
        iovs: u32,
        count: u32,
        pos: u64,
        append: bool,
    ) -> WasiResult<(u32, u64)> {
        let now = self.fs_now();
        let mut at = if append {
            self.state.vfs.node(ino)?.size()
        } else {
            pos
        };
        let mut total: u32 = 0;
        for i in 0..count {
            let (buf, len) = mem.iovec(iovs, i)?;
            match self.state.vfs.write(ino, at, mem.slice(buf, len)?, now) {
                Ok(()) => {}
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
            at = at.saturating_add(u64::from(len));
            total = total.saturating_add(len);
        }
        Ok((total, at))
    }

    pub(crate) fn fd_write(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        iovs: u32,
        count: u32,
        nwritten: u32,
    ) -> WasiResult<()> {
        let total = mem.check_iovecs(iovs, count)?;
        mem.check(nwritten, 4)?;
        let n = match *self.state.fds.get(fd)? {
            Desc::Stdout | Desc::Stderr => {
                let (stream, counter) = if matches!(self.state.fds.get(fd)?, Desc::Stdout) {
                    (OutStream::Stdout, &mut self.state.stdout_len)
                } else {
                    (OutStream::Stderr, &mut self.state.stderr_len)
                };
                *counter = counter.saturating_add(u64::from(total));
                for i in 0..count {
                    let (buf, len) = mem.iovec(iovs, i)?;
                    if len > 0 {
                        self.sink.write(stream, mem.slice(buf, len)?);
                    }
                }
                total
            }
            Desc::File {
                ino,
                pos,
                write,
                flags,
                ..
            } => {
                if !write {
                    return Err(Errno::Badf);
                }
                let append = flags & fdflags::APPEND != 0;
                let (n, end) = self.write_iovecs_to_file(mem, ino, iovs, count, pos, append)?;
                self.set_pos(fd, end)?;
                n
            }
            Desc::Stdin | Desc::Dir { .. } => return Err(Errno::Badf),
        };
        mem.write_u32(nwritten, n)
    }

    pub(crate) fn fd_pwrite(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        iovs: u32,
        count: u32,
        offset: u64,
        nwritten: u32,
    ) -> WasiResult<()> {
        mem.check_iovecs(iovs, count)?;
        mem.check(nwritten, 4)?;
        let (ino, _) = self.seekable(fd)?;
        let Desc::File { write, flags, .. } = *self.state.fds.get(fd)? else {
            return Err(Errno::Badf);
        };
        if !write {
            return Err(Errno::Badf);
        }
        // As on Linux (and in wasmtime), an append-mode descriptor appends.
        let append = flags & fdflags::APPEND != 0;
        let (n, _) = self.write_iovecs_to_file(mem, ino, iovs, count, offset, append)?;
        mem.write_u32(nwritten, n)
    }

    pub(crate) fn fd_read(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        iovs: u32,
        count: u32,
        nread: u32,
    ) -> WasiResult<()> {
        mem.check_iovecs(iovs, count)?;
        mem.check(nread, 4)?;
        let n = match *self.state.fds.get(fd)? {
            Desc::Stdin => {
                let n = Self::copy_to_iovecs(
                    mem,
                    iovs,
                    count,
                    &self.state.stdin,
                    self.state.stdin_pos,
                )?;
                self.state.stdin_pos = self.state.stdin_pos.saturating_add(u64::from(n));
                n
            }
            Desc::File { ino, pos, read, .. } => {
                if !read {
                    return Err(Errno::Badf);
                }
                let n = Self::copy_to_iovecs(mem, iovs, count, self.state.vfs.data(ino)?, pos)?;
                self.set_pos(fd, pos.saturating_add(u64::from(n)))?;
                n
            }
            Desc::Stdout | Desc::Stderr | Desc::Dir { .. } => return Err(Errno::Badf),
        };
        mem.write_u32(nread, n)
    }

    pub(crate) fn fd_pread(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        iovs: u32,
        count: u32,
        offset: u64,
        nread: u32,
    ) -> WasiResult<()> {
        mem.check_iovecs(iovs, count)?;
        mem.check(nread, 4)?;
        let (ino, _) = self.seekable(fd)?;
        if !matches!(self.state.fds.get(fd)?, Desc::File { read: true, .. }) {
            return Err(Errno::Badf);
        }
        let n = Self::copy_to_iovecs(mem, iovs, count, self.state.vfs.data(ino)?, offset)?;
        mem.write_u32(nread, n)
    }

    pub(crate) fn fd_seek(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        offset: i64,
        how: u32,
        out: u32,
    ) -> WasiResult<()> {
        mem.check(out, 8)?;
        let (ino, pos) = self.seekable(fd)?;
        let new = match u8::try_from(how).map_err(|_| Errno::Inval)? {
            whence::SET => u64::try_from(offset).map_err(|_| Errno::Inval)?,
            whence::CUR => pos.checked_add_signed(offset).ok_or(Errno::Inval)?,
            whence::END => {
                let size = self.state.vfs.node(ino)?.size();
                size.checked_add_signed(offset).ok_or(Errno::Inval)?
            }
            _ => return Err(Errno::Inval),
        };
        // Positions must fit in a filedelta (i64), as on Linux.
        if i64::try_from(new).is_err() {
            return Err(Errno::Inval);
        }
        self.set_pos(fd, new)?;
        mem.write_u64(out, new)
    }

    pub(crate) fn fd_tell(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        out: u32,
    ) -> WasiResult<()> {
        let (_, pos) = self.seekable(fd)?;
        mem.write_u64(out, pos)
    }

    pub(crate) fn fd_close(&mut self, fd: u32) -> WasiResult<()> {
        let desc = self.state.fds.remove(fd)?;
        self.released(desc);
        Ok(())
    }

    /// Frees an unlinked node once no descriptor refers to it any more.
    fn released(&mut self, desc: Desc) {
        if let Some(ino) = desc.ino() {
            if !self.state.fds.refers_to(ino) {
                self.state.vfs.closed(ino);
            }
        }
    }

    pub(crate) fn fd_renumber(&mut self, from: u32, to: u32) -> WasiResult<()> {
        if let Some(old) = self.state.fds.renumber(from, to)? {
            self.released(old);
        }
        Ok(())
    }

    pub(crate) fn fd_fdstat_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        out: u32,
    ) -> WasiResult<()> {
        let (ft, flags, base, inheriting) = match self.state.fds.get(fd)? {
            Desc::Stdin => (filetype::UNKNOWN, 0, rights::FD_READ, rights::FD_READ),
            Desc::Stdout | Desc::Stderr => {
                (filetype::UNKNOWN, 0, rights::FD_WRITE, rights::FD_WRITE)
            }
            Desc::Dir {
                preopen: Some(_), ..
            } => (
                filetype::DIRECTORY,
                0,
                rights::PREOPEN_BASE,
                rights::PREOPEN_INHERITING,
            ),
            Desc::Dir { read, .. } => {
                let mut r = rights::ALL & !rights::FD_SEEK & !rights::FD_FILESTAT_SET_SIZE;
                r &= !rights::FD_WRITE;
                if !read {
                    r &= !(rights::FD_READ | rights::FD_READDIR);
                }
                (filetype::DIRECTORY, 0, r, r)
            }
            Desc::File {
                read, write, flags, ..
            } => {
                let mut r = rights::ALL;
                if !read {
                    r &= !(rights::FD_READ | rights::FD_READDIR);
                }
                if !write {
                    r &= !rights::FD_WRITE;
                }
                (filetype::REGULAR_FILE, *flags, r, r)
            }
        };
        let mut b = [0u8; FDSTAT_SIZE as usize];
        b[0] = ft;
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&base.to_le_bytes());
        b[16..24].copy_from_slice(&inheriting.to_le_bytes());
        mem.write_bytes(out, &b)
    }

    pub(crate) fn fd_fdstat_set_flags(&mut self, fd: u32, new: u32) -> WasiResult<()> {
        let new = u16::try_from(new).map_err(|_| Errno::Inval)?;
        let Desc::File { flags, .. } = self.state.fds.get_mut(fd)? else {
            return Err(Errno::Badf);
        };
        if new & !fdflags::ALL != 0 || new & (fdflags::DSYNC | fdflags::RSYNC | fdflags::SYNC) != 0
        {
            return Err(Errno::Inval);
        }
        let keep = *flags & (fdflags::DSYNC | fdflags::RSYNC | fdflags::SYNC);
        *flags = keep | (new & (fdflags::APPEND | fdflags::NONBLOCK));
        Ok(())
    }

    /// Rights are not enforced beyond read/write access (as in wasmtime):
    /// succeeds on any file or directory.
    pub(crate) fn fd_fdstat_set_rights(
        &mut self,
        fd: u32,
        _base: u64,
        _inheriting: u64,
    ) -> WasiResult<()> {
        match self.state.fds.get(fd)? {
            Desc::File { .. } | Desc::Dir { .. } => Ok(()),
            _ => Err(Errno::Badf),
        }
    }

    pub(crate) fn fd_filestat_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        out: u32,
    ) -> WasiResult<()> {
        let b = match self.state.fds.get(fd)?.ino() {
            Some(ino) => filestat_bytes(&self.state.vfs.stat(ino)?),
            None => [0u8; FILESTAT_SIZE as usize], // stdio: all zero, type unknown
        };
        mem.write_bytes(out, &b)
    }

    pub(crate) fn fd_filestat_set_size(&mut self, fd: u32, size: u64) -> WasiResult<()> {
        let Desc::File { ino, write, .. } = *self.state.fds.get(fd)? else {
            return Err(Errno::Badf);
        };
        if !write {
            return Err(Errno::Badf);
        }
        let now = self.fs_now();
        self.state.vfs.set_size(ino, size, now)
    }

    pub(crate) fn fd_filestat_set_times(
        &mut self,
        fd: u32,
        atim: u64,
        mtim: u64,
        flags: u32,
    ) -> WasiResult<()> {
        let ino = self.state.fds.get(fd)?.ino().ok_or(Errno::Badf)?;
        let now = self.fs_now();
        let (a, m) = times_from_flags(flags, atim, mtim, now)?;
        self.state.vfs.set_times(ino, a, m, now)
    }

    /// `fd_sync` and `fd_datasync`: nothing to do in memory.
    pub(crate) fn fd_sync(&mut self, fd: u32) -> WasiResult<()> {
        match self.state.fds.get(fd)? {
            Desc::File { .. } => Ok(()),
            _ => Err(Errno::Badf),
        }
    }

    /// Valid advice on a file is accepted and ignored: files are in memory.
    pub(crate) fn fd_advise(
        &mut self,
        fd: u32,
        _offset: u64,
        _len: u64,
        advice: u32,
    ) -> WasiResult<()> {
        self.fd_sync(fd)?;
        if advice > 5 {
            return Err(Errno::Inval);
        }
        Ok(())
    }

    /// Not supported, as in wasmtime.
    pub(crate) fn fd_allocate(&mut self, fd: u32, _offset: u64, _len: u64) -> WasiResult<()> {
        self.fd_sync(fd)?;
        Err(Errno::Notsup)
    }

    pub(crate) fn fd_prestat_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        out: u32,
    ) -> WasiResult<()> {
        let Desc::Dir {
            preopen: Some(name),
            ..
        } = self.state.fds.get(fd)?
        else {
            return Err(Errno::Badf);
        };
        let len = u32::try_from(name.len()).map_err(|_| Errno::Overflow)?;
        let mut b = [0u8; PRESTAT_SIZE as usize];
        b[4..8].copy_from_slice(&len.to_le_bytes());
        mem.write_bytes(out, &b)
    }

    pub(crate) fn fd_prestat_dir_name(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        path: u32,
        len: u32,
    ) -> WasiResult<()> {
        let Desc::Dir {
            preopen: Some(name),
            ..
        } = self.state.fds.get(fd)?
        else {
            return Err(Errno::Notdir);
        };
        if name.len() > len as usize {
            return Err(Errno::Nametoolong);
        }
        mem.write_bytes(path, name.as_bytes())
    }

    /// Lists a directory: `.`, `..`, then the entries in name order; the
    /// cookie of an entry is its index in that list plus one. The buffer is
    /// filled completely when there is more to list (the last entry may be
    /// cut short, as the specification allows).
    pub(crate) fn fd_readdir(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        buf: u32,
        buf_len: u32,
        cookie: u64,
        bufused: u32,
    ) -> WasiResult<()> {
        mem.check(buf, buf_len)?;
        mem.check(bufused, 4)?;
        let Desc::Dir { ino: dir, .. } = *self.state.fds.get(fd)? else {
            return Err(Errno::Badf);
        };
        let dots = [
            (".", dir, filetype::DIRECTORY),
            ("..", dir, filetype::DIRECTORY),
        ];
        let entries = dots.into_iter().chain(self.state.vfs.entries(dir)?);
        let out = mem.slice_mut(buf, buf_len)?;
        let mut used = 0usize;
        let skip = usize::try_from(cookie).unwrap_or(usize::MAX);
        for (index, (name, ino, ft)) in entries.enumerate().skip(skip) {
            let mut head = [0u8; DIRENT_SIZE as usize];
            let next = (index as u64).saturating_add(1);
            head[0..8].copy_from_slice(&next.to_le_bytes());
            head[8..16].copy_from_slice(&ino.to_le_bytes());
            let namlen = u32::try_from(name.len()).map_err(|_| Errno::Overflow)?;
            head[16..20].copy_from_slice(&namlen.to_le_bytes());
            head[20] = ft;
            for part in [&head[..], name.as_bytes()] {
                let n = part.len().min(out.len() - used);
                out[used..used + n].copy_from_slice(&part[..n]);
                used += n;
            }
            if used == out.len() {
                break;
            }
        }
        let used = u32::try_from(used).map_err(|_| Errno::Overflow)?;
        mem.write_u32(bufused, used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::super::{ClockMode, HostState};
    use super::*;

    fn host() -> Host {
        Host::new(
            HostState::new(&config()).unwrap(),
            Box::new(|_, _: &[u8]| {}),
            ClockMode::Virtual {
                start_realtime_ns: 0,
            },
        )
    }

    #[test]
    fn stdin_reads_in_order_then_eof() {
        let mut h = host();
        let mut bytes = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut bytes);
        // iovec at 0: 3 bytes at 32; iovec at 8: 10 bytes at 40
        m.write_u32(0, 32).unwrap();
        m.write_u32(4, 3).unwrap();
        m.write_u32(8, 40).unwrap();
        m.write_u32(12, 1).unwrap();
        h.fd_read(&mut m, 0, 0, 2, 16).unwrap();
        assert_eq!(m.read_u32(16), Ok(4));
        assert_eq!(m.slice(32, 3), Ok(&b"inp"[..]));
        assert_eq!(m.slice(40, 1), Ok(&b"u"[..]));
        h.fd_read(&mut m, 0, 0, 2, 16).unwrap();
        assert_eq!(m.read_u32(16), Ok(1));
        h.fd_read(&mut m, 0, 0, 2, 16).unwrap();
        assert_eq!(m.read_u32(16), Ok(0));
        assert_eq!(h.state.stdin_pos(), 5);
    }

    #[test]
    fn stdio_errnos() {
        let mut h = host();
        let mut bytes = vec![0u8; 64];
        let mut m = GuestMemory::new(&mut bytes);
        assert_eq!(h.fd_seek(&mut m, 0, 0, 0, 0), Err(Errno::Spipe));
        assert_eq!(h.fd_tell(&mut m, 1, 0), Err(Errno::Spipe));
        assert_eq!(h.fd_read(&mut m, 1, 0, 0, 0), Err(Errno::Badf));
        assert_eq!(h.fd_write(&mut m, 0, 0, 0, 0), Err(Errno::Badf));
        assert_eq!(h.fd_write(&mut m, 9, 0, 0, 0), Err(Errno::Badf));
        assert_eq!(h.fd_prestat_get(&mut m, 3, 0), Err(Errno::Badf));
        assert_eq!(h.fd_prestat_dir_name(&mut m, 1, 0, 0), Err(Errno::Notdir));
        assert_eq!(h.fd_pwrite(&mut m, 1, 0, 0, 0, 0), Err(Errno::Spipe));
        h.fd_fdstat_get(&mut m, 1, 0).unwrap();
        assert_eq!(m.read_u8(0), Ok(filetype::UNKNOWN));
        assert_eq!(m.read_u64(8), Ok(rights::FD_WRITE));
        assert_eq!(h.fd_fdstat_set_flags(1, 0), Err(Errno::Badf));
        h.fd_close(2).unwrap();
        assert_eq!(h.fd_close(2), Err(Errno::Badf));
    }

    #[test]
    fn stdout_goes_to_the_sink_and_is_counted() {
        let out = super::super::CapturedOutput::new();
        let mut h = Host::new(
            HostState::new(&config()).unwrap(),
            Box::new(out.clone()),
            ClockMode::Virtual {
                start_realtime_ns: 0,
            },
        );
        let mut bytes = vec![0u8; 64];
        bytes[32..37].copy_from_slice(b"hello");
        let mut m = GuestMemory::new(&mut bytes);
        for (i, (buf, len)) in [(32u32, 2u32), (34, 0), (34, 3)].iter().enumerate() {
            m.write_u32(i as u32 * 8, *buf).unwrap();
            m.write_u32(i as u32 * 8 + 4, *len).unwrap();
        }
        h.fd_write(&mut m, 1, 0, 3, 24).unwrap();
        h.fd_write(&mut m, 2, 0, 1, 24).unwrap();
        assert_eq!(m.read_u32(24), Ok(2));
        assert_eq!(out.stdout(), b"hello");
        assert_eq!(out.stderr(), b"he");
        assert_eq!((h.state.stdout_len(), h.state.stderr_len()), (5, 2));
        // A bad iovec writes nothing at all.
        m.write_u32(16, 60).unwrap();
        m.write_u32(20, 5).unwrap();
        assert_eq!(h.fd_write(&mut m, 1, 0, 3, 24), Err(Errno::Fault));
        assert_eq!(out.stdout(), b"hello");
        assert_eq!(h.state.stdout_len(), 5);
    }
}
