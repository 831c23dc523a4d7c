//! Pages written since the last look, from the kernel.
//!
//! Owns [`Written`]: a range of this process's memory (a task's linear
//! memory) registered with a userfaultfd for write-protection in
//! asynchronous mode (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7 and later). A write
//! to a protected page is resolved by the kernel itself (no thread is
//! woken, no signal is sent) and leaves the page marked written; one
//! `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` then lists the written pages
//! and protects them again. A point thus costs what the step wrote, where
//! comparing the memory with a copy costs what the memory holds
//! (`../shared/notes/dirty-tracking.md` has the measurements behind this).
//!
//! Writes by the host (WASI calls writing into guest memory, restoring a
//! state) are seen the same way as the guest's own.
//!
//! It knows nothing of hashes or states ([`crate::state`] decides what a
//! written page means) and never touches the memory's contents. Everything
//! here is Linux-only; elsewhere [`probe`] reports it unavailable.

use std::fmt;

/// Why the kernel cannot tell which pages were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unavailable(pub(crate) String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{probe, Written};

#[cfg(not(target_os = "linux"))]
pub(crate) fn probe() -> Result<(), Unavailable> {
    Err(Unavailable(
        "dirty-page tracking by the kernel needs Linux".to_string(),
    ))
}

/// Never built off Linux: [`probe`] fails there, so nobody asks for one.
#[cfg(not(target_os = "linux"))]
pub(crate) struct Written(std::convert::Infallible);

#[cfg(not(target_os = "linux"))]
impl Written {
    pub(crate) fn arm(_: &[u8]) -> Result<Written, Unavailable> {
        probe().map(|()| unreachable!("probe always fails off Linux"))
    }
    pub(crate) fn covers(&self, _: &[u8]) -> bool {
        match self.0 {}
    }
    pub(crate) fn is_open(&self) -> bool {
        match self.0 {}
    }
    pub(crate) fn grow(&mut self, _: &[u8]) -> Result<(), Unavailable> {
        match self.0 {}
    }
    pub(crate) fn scan(&mut self, _: &mut dyn FnMut(usize, usize)) -> Result<(), Unavailable> {
        match self.0 {}
    }
    pub(crate) fn open(&mut self) -> Result<(), Unavailable> {
        match self.0 {}
    }
    pub(crate) fn protect(&mut self) -> Result<(), Unavailable> {
        match self.0 {}
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::OnceLock;

    use super::Unavailable;
    use crate::state::PAGE_SIZE;

    // The kernel's uapi (linux/userfaultfd.h, linux/fs.h of 6.7 and later);
    // Debian's headers and the libc crate predate these names.
    const UFFD_API: u64 = 0xAA;
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
    const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
    const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
    const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
    const PAGE_IS_WRITTEN: u64 = 1 << 1;

    /// `_IOWR(ty, nr, size)` in the kernel's generic ioctl encoding.
    const fn iowr(ty: u64, nr: u64, size: usize) -> u64 {
        (3 << 30) | ((size as u64) << 16) | (ty << 8) | nr
    }

    #[repr(C)]
    struct UffdioApi {
        api: u64,
        features: u64,
        ioctls: u64,
    }

    #[repr(C)]
    struct UffdioRange {
        start: u64,
        len: u64,
    }

    #[repr(C)]
    struct UffdioRegister {
        range: UffdioRange,
        mode: u64,
        ioctls: u64,
    }

    #[repr(C)]
    struct UffdioWriteprotect {
        range: UffdioRange,
        mode: u64,
    }

    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }

    const UFFDIO_API: u64 = iowr(UFFD_API, 0x3F, size_of::<UffdioApi>());
    const UFFDIO_REGISTER: u64 = iowr(UFFD_API, 0x00, size_of::<UffdioRegister>());
    const UFFDIO_WRITEPROTECT: u64 = iowr(UFFD_API, 0x06, size_of::<UffdioWriteprotect>());
    const PAGEMAP_SCAN: u64 = iowr(b'f' as u64, 16, size_of::<PmScanArg>());

    /// Regions asked for per scan call; a scan loops until the range is
    /// walked, so this only trades calls for stack.
    const REGIONS: usize = 256;

    /// `ioctl(fd, request, arg)`, with the error as an `io::Error`.
    ///
    /// # Safety
    ///
    /// `arg` must be the structure `request` expects, valid for the call.
    unsafe fn ioctl<T>(fd: &impl AsRawFd, request: u64, arg: &mut T) -> io::Result<libc::c_int> {
        // SAFETY: the caller passes the structure the request expects.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// A userfaultfd with asynchronous write-protection negotiated.
    fn open_uffd() -> Result<OwnedFd, Unavailable> {
        // User-mode-only needs no privilege; asynchronous write faults are
        // resolved in the kernel, so the ones kernel code takes (a read(2)
        // into guest memory) are resolved as well.
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        // SAFETY: userfaultfd(2) takes flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(Unavailable(format!(
                "userfaultfd: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: the descriptor was just created and is owned by no one.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API takes a struct uffdio_api.
        unsafe { ioctl(&fd, UFFDIO_API, &mut api) }.map_err(|e| {
            Unavailable(format!(
                "the kernel lacks asynchronous userfaultfd write-protection (Linux 6.7 or later): {e}"
            ))
        })?;
        Ok(fd)
    }

    /// `/proc/self/pagemap`, opened once per process.
    fn pagemap() -> Result<&'static File, Unavailable> {
        static PAGEMAP: OnceLock<Result<File, String>> = OnceLock::new();
        PAGEMAP
            .get_or_init(|| File::open("/proc/self/pagemap").map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Unavailable(format!("/proc/self/pagemap: {e}")))
    }

    /// Whether this kernel can track written pages: a registration,
    /// protection and scan of a small mapping of our own, tried once.
    pub(crate) fn probe() -> Result<(), Unavailable> {
        static PROBED: OnceLock<Result<(), Unavailable>> = OnceLock::new();
        PROBED.get_or_init(try_probe).clone()
    }

    fn try_probe() -> Result<(), Unavailable> {
        let mut m = Mapping::new(4 * PAGE_SIZE)?;
        let mem = m.mem(4 * PAGE_SIZE);
        let mut w = Written::arm(mem)?;
        mem[PAGE_SIZE + 3] = 1;
        let mut seen = Vec::new();
        w.scan(&mut |first, count| seen.push((first, count)))?;
        if seen != [(1, 1)] {
            return Err(Unavailable(format!(
                "a scan after writing page 1 reported {seen:?}"
            )));
        }
        Ok(())
    }

    /// A private anonymous mapping of our own, unmapped on drop (for the
    /// probe and the tests).
    struct Mapping {
        ptr: *mut u8,
        len: usize,
    }

    impl Mapping {
        fn new(len: usize) -> Result<Mapping, Unavailable> {
            // SAFETY: a fresh private anonymous mapping, owned by this value.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(Unavailable(format!("mmap: {}", io::Error::last_os_error())));
            }
            Ok(Mapping {
                ptr: ptr.cast(),
                len,
            })
        }

        /// The first `len` bytes (at most the mapping's length).
        fn mem(&mut self, len: usize) -> &mut [u8] {
            // SAFETY: within the mapping (readable and writable, referred
            // to by nothing else), borrowed mutably from it.
            unsafe { std::slice::from_raw_parts_mut(self.ptr, len.min(self.len)) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }

    /// A registered range and how much of it is protected.
    pub(crate) struct Written {
        uffd: OwnedFd,
        base: u64,
        /// Bytes from `base` registered and (unless `open`) protected.
        len: u64,
        /// Protection is off: every page reads as written.
        open: bool,
    }

    impl Written {
        /// Registers `mem` and protects it: from now on, writes to it are
        /// remembered.
        pub(crate) fn arm(mem: &[u8]) -> Result<Written, Unavailable> {
            let mut w = Written {
                uffd: open_uffd()?,
                base: mem.as_ptr() as u64,
                len: 0,
                open: false,
            };
            w.grow(mem)?;
            Ok(w)
        }

        /// Whether `mem` starts where the registered range does (wasmtime
        /// never moves a memory inside its reservation, but a memory that
        /// moved would be tracked wrongly, so callers check).
        pub(crate) fn covers(&self, mem: &[u8]) -> bool {
            mem.as_ptr() as u64 == self.base && mem.len() as u64 >= self.len
        }

        /// Registers and protects the part of `mem` beyond what was already
        /// (after `memory.grow`). The caller treats those pages as written.
        pub(crate) fn grow(&mut self, mem: &[u8]) -> Result<(), Unavailable> {
            let end = mem.len() as u64;
            if end <= self.len {
                return Ok(());
            }
            let range = UffdioRange {
                start: self.base + self.len,
                len: end - self.len,
            };
            let mut reg = UffdioRegister {
                range: UffdioRange { ..range },
                mode: UFFDIO_REGISTER_MODE_WP,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_REGISTER takes a struct uffdio_register; the
            // range is mapped memory of this process.
            unsafe { ioctl(&self.uffd, UFFDIO_REGISTER, &mut reg) }
                .map_err(|e| Unavailable(format!("userfaultfd register: {e}")))?;
            if !self.open {
                self.set_protection(range, true)?;
            }
            self.len = end;
            Ok(())
        }

        fn set_protection(&self, range: UffdioRange, on: bool) -> Result<(), Unavailable> {
            let mut wp = UffdioWriteprotect {
                range,
                mode: if on { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 },
            };
            // SAFETY: UFFDIO_WRITEPROTECT takes a struct uffdio_writeprotect
            // over a registered range.
            unsafe { ioctl(&self.uffd, UFFDIO_WRITEPROTECT, &mut wp) }
                .map_err(|e| Unavailable(format!("userfaultfd write-protect: {e}")))?;
            Ok(())
        }

        /// Whether protection is off (see [`Written::open`]).
        pub(crate) fn is_open(&self) -> bool {
            self.open
        }

        /// Turns protection off: for a task that rewrites most of its
        /// memory between points, a fault per page costs more than hashing
        /// every page. While open, [`Written::scan`] reports every page.
        pub(crate) fn open(&mut self) -> Result<(), Unavailable> {
            if !self.open {
                self.set_protection(self.whole(), false)?;
                self.open = true;
            }
            Ok(())
        }

        /// Turns protection back on (after [`Written::open`]); every page
        /// counts as unwritten from here.
        pub(crate) fn protect(&mut self) -> Result<(), Unavailable> {
            if self.open {
                self.set_protection(self.whole(), true)?;
                self.open = false;
            }
            Ok(())
        }

        fn whole(&self) -> UffdioRange {
            UffdioRange {
                start: self.base,
                len: self.len,
            }
        }

        /// Calls `each(first_page, count)` for every run of pages written
        /// since the last scan (or arming), in ascending order, and protects
        /// them again.
        pub(crate) fn scan(
            &mut self,
            each: &mut dyn FnMut(usize, usize),
        ) -> Result<(), Unavailable> {
            let end = self.base + self.len;
            if self.open {
                each(0, (self.len as usize) / PAGE_SIZE);
                return Ok(());
            }
            let pagemap = pagemap()?;
            let mut regions = [PageRegion::default(); REGIONS];
            let mut start = self.base;
            // Each call walks at least one region further, so this ends;
            // the bound only guards against a kernel that does not.
            for _ in 0..=(self.len as usize / PAGE_SIZE) {
                if start >= end {
                    return Ok(());
                }
                let mut arg = PmScanArg {
                    size: size_of::<PmScanArg>() as u64,
                    flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                    start,
                    end,
                    walk_end: 0,
                    vec: regions.as_mut_ptr() as u64,
                    vec_len: REGIONS as u64,
                    max_pages: 0,
                    category_inverted: 0,
                    category_mask: PAGE_IS_WRITTEN,
                    category_anyof_mask: 0,
                    return_mask: PAGE_IS_WRITTEN,
                };
                // SAFETY: PAGEMAP_SCAN takes a struct pm_scan_arg whose
                // `vec` points to `vec_len` page_regions, which `regions`
                // is, alive for the call.
                let filled = unsafe { ioctl(pagemap, PAGEMAP_SCAN, &mut arg) }
                    .map_err(|e| Unavailable(format!("PAGEMAP_SCAN: {e}")))?;
                for r in regions.iter().take(filled as usize) {
                    let first = (r.start.max(self.base) - self.base) as usize / PAGE_SIZE;
                    let last = (r.end.min(end) - self.base) as usize / PAGE_SIZE;
                    if last > first {
                        each(first, last - first);
                    }
                }
                if arg.walk_end <= start {
                    return Err(Unavailable("PAGEMAP_SCAN made no progress".to_string()));
                }
                start = arg.walk_end;
            }
            Err(Unavailable("PAGEMAP_SCAN did not finish".to_string()))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn scan(w: &mut Written) -> Vec<usize> {
            let mut pages = Vec::new();
            w.scan(&mut |first, count| pages.extend(first..first + count))
                .unwrap();
            pages
        }

        #[test]
        fn written_pages_are_reported_once() {
            if let Err(why) = probe() {
                eprintln!("skipped: {why}");
                return;
            }
            let mut m = Mapping::new(64 * PAGE_SIZE).unwrap();
            let mem = m.mem(32 * PAGE_SIZE);
            mem[5 * PAGE_SIZE] = 1; // before arming: not reported
            let mut w = Written::arm(mem).unwrap();
            assert!(scan(&mut w).is_empty());
            mem[3 * PAGE_SIZE + 100] = 7;
            mem[4 * PAGE_SIZE] = 7;
            mem[31 * PAGE_SIZE + PAGE_SIZE - 1] = 7;
            assert_eq!(scan(&mut w), vec![3, 4, 31]);
            assert!(scan(&mut w).is_empty(), "a scan protects again");
            // Kernel code writing into the range (read(2) from a pipe).
            let mut fds = [0; 2];
            // SAFETY: pipe(2) fills two descriptors, closed below.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: writes 3 bytes from a live buffer, then reads them
            // into page 9 of the mapping, which is mapped and writable.
            unsafe {
                assert_eq!(libc::write(fds[1], b"abc".as_ptr().cast(), 3), 3);
                let dst = mem.as_mut_ptr().add(9 * PAGE_SIZE);
                assert_eq!(libc::read(fds[0], dst.cast(), 3), 3);
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            assert_eq!(&mem[9 * PAGE_SIZE..9 * PAGE_SIZE + 3], b"abc");
            assert_eq!(scan(&mut w), vec![9]);
        }

        #[test]
        fn growth_is_registered_and_open_reports_everything() {
            if let Err(why) = probe() {
                eprintln!("skipped: {why}");
                return;
            }
            let mut m = Mapping::new(64 * PAGE_SIZE).unwrap();
            let mut w = Written::arm(m.mem(16 * PAGE_SIZE)).unwrap();
            let mem = m.mem(48 * PAGE_SIZE);
            assert!(w.covers(mem));
            w.grow(mem).unwrap();
            assert!(scan(&mut w).is_empty(), "new pages start protected");
            mem[40 * PAGE_SIZE] = 1;
            mem[2 * PAGE_SIZE] = 1;
            assert_eq!(scan(&mut w), vec![2, 40]);
            w.open().unwrap();
            assert_eq!(scan(&mut w).len(), 48);
            w.protect().unwrap();
            assert!(scan(&mut w).is_empty());
            mem[47 * PAGE_SIZE] = 1;
            assert_eq!(scan(&mut w), vec![47]);
        }
    }
}
