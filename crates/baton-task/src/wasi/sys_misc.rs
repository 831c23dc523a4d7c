//! Process-level preview1 calls: arguments, environment, clocks, random,
//! scheduling, signals.
//!
//! Each function is a method of [`Host`] taking the guest memory and the raw
//! call arguments and returning an errno; the wasmtime glue is in
//! `linker.rs`. This file must not touch files or descriptors.

use super::abi::{Errno, WasiResult};
use super::mem::GuestMemory;
use super::Host;

/// Writes a list of NUL-terminated strings, each the concatenation of its
/// parts, as `args_get`/`environ_get` do: pointers at `ptrs`, bytes at `buf`.
fn write_list<'a>(
    mem: &mut GuestMemory<'_>,
    ptrs: u32,
    buf: u32,
    items: impl Iterator<Item = [&'a [u8]; 3]>,
) -> WasiResult<()> {
    let (mut ptrs, mut buf) = (ptrs, buf);
    for parts in items {
        mem.write_u32(ptrs, buf)?;
        ptrs = ptrs.checked_add(4).ok_or(Errno::Fault)?;
        for part in parts {
            mem.write_bytes(buf, part)?;
            buf = u32::try_from(part.len())
                .ok()
                .and_then(|n| buf.checked_add(n))
                .ok_or(Errno::Fault)?;
        }
        mem.write_u8(buf, 0)?;
        buf = buf.checked_add(1).ok_or(Errno::Fault)?;
    }
    Ok(())
}

/// Writes `(count, total bytes including NULs)` for a string list.
fn write_sizes(
    mem: &mut GuestMemory<'_>,
    count_ptr: u32,
    size_ptr: u32,
    lens: impl Iterator<Item = usize>,
) -> WasiResult<()> {
    let mut count: u32 = 0;
    let mut size: u32 = 0;
    for len in lens {
        count = count.checked_add(1).ok_or(Errno::Overflow)?;
        let len = u32::try_from(len).map_err(|_| Errno::Overflow)?;
        size = size
            .checked_add(len)
            .and_then(|s| s.checked_add(1))
            .ok_or(Errno::Overflow)?;
    }
    mem.check(count_ptr, 4)?;
    mem.check(size_ptr, 4)?;
    mem.write_u32(count_ptr, count)?;
    mem.write_u32(size_ptr, size)
}

impl Host {
    pub(crate) fn args_sizes_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        argc: u32,
        size: u32,
    ) -> WasiResult<()> {
        write_sizes(mem, argc, size, self.state.args.iter().map(String::len))
    }

    pub(crate) fn args_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        argv: u32,
        buf: u32,
    ) -> WasiResult<()> {
        let items = self
            .state
            .args
            .iter()
            .map(|a| [a.as_bytes(), &b""[..], &b""[..]]);
        write_list(mem, argv, buf, items)
    }

    pub(crate) fn environ_sizes_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        count: u32,
        size: u32,
    ) -> WasiResult<()> {
        let lens = self.state.env.iter().map(|(k, v)| k.len() + 1 + v.len());
        write_sizes(mem, count, size, lens)
    }

    pub(crate) fn environ_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        environ: u32,
        buf: u32,
    ) -> WasiResult<()> {
        let items = self
            .state
            .env
            .iter()
            .map(|(k, v)| [k.as_bytes(), &b"="[..], v.as_bytes()]);
        write_list(mem, environ, buf, items)
    }

    pub(crate) fn clock_res_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        id: u32,
        out: u32,
    ) -> WasiResult<()> {
        let res = self.clocks().resolution(id)?;
        mem.write_u64(out, res)
    }

    pub(crate) fn clock_time_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        id: u32,
        _precision: u64,
        out: u32,
    ) -> WasiResult<()> {
        mem.check(out, 8)?;
        let now = self.clocks().time_get(id)?;
        mem.write_u64(out, now)
    }

    pub(crate) fn random_get(
        &mut self,
        mem: &mut GuestMemory<'_>,
        buf: u32,
        len: u32,
    ) -> WasiResult<()> {
        self.state.rng.fill(mem.slice_mut(buf, len)?);
        Ok(())
    }

    pub(crate) fn sched_yield(&mut self) -> WasiResult<()> {
        Ok(())
    }

    /// Signals are not supported (as in wasmtime).
    pub(crate) fn proc_raise(&mut self, _sig: u32) -> WasiResult<()> {
        Err(Errno::Notsup)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::super::{ClockMode, Host, HostState};
    use super::*;

    fn host() -> Host {
        let state = HostState::new(&config()).unwrap();
        Host::new(
            state,
            Box::new(|_, _: &[u8]| {}),
            ClockMode::Virtual {
                start_realtime_ns: 0,
            },
        )
    }

    #[test]
    fn args_and_environ_layout() {
        let mut h = host();
        let mut bytes = vec![0u8; 256];
        let mut m = GuestMemory::new(&mut bytes);
        h.args_sizes_get(&mut m, 0, 4).unwrap();
        assert_eq!(m.read_u32(0), Ok(2));
        assert_eq!(m.read_u32(4), Ok(9)); // "prog\0a b\0"
        h.args_get(&mut m, 16, 64).unwrap();
        assert_eq!(m.read_u32(16), Ok(64));
        assert_eq!(m.read_u32(20), Ok(69));
        assert_eq!(m.slice(64, 9), Ok(&b"prog\0a b\0"[..]));
        h.environ_sizes_get(&mut m, 0, 4).unwrap();
        assert_eq!((m.read_u32(0), m.read_u32(4)), (Ok(1), Ok(4)));
        h.environ_get(&mut m, 32, 128).unwrap();
        assert_eq!(m.read_u32(32), Ok(128));
        assert_eq!(m.slice(128, 4), Ok(&b"K=V\0"[..]));
        // Buffers running off the end of memory are EFAULT.
        assert_eq!(h.args_get(&mut m, 16, 250), Err(Errno::Fault));
        assert_eq!(h.args_get(&mut m, u32::MAX, 0), Err(Errno::Fault));
        assert_eq!(h.environ_sizes_get(&mut m, 254, 0), Err(Errno::Fault));
    }

    #[test]
    fn random_is_seeded_and_bounded() {
        let mut a = host();
        let mut b = host();
        let mut ma = vec![0u8; 64];
        let mut mb = vec![0u8; 64];
        a.random_get(&mut GuestMemory::new(&mut ma), 0, 64).unwrap();
        b.random_get(&mut GuestMemory::new(&mut mb), 0, 64).unwrap();
        assert_eq!(ma, mb);
        assert_ne!(ma, vec![0u8; 64]);
        assert_eq!(
            a.random_get(&mut GuestMemory::new(&mut ma), 1, 64),
            Err(Errno::Fault)
        );
        // A failed call draws nothing.
        assert_eq!(a.state.rng, b.state.rng);
    }

    #[test]
    fn wall_clock_mode_reads_the_real_clock() {
        let state = HostState::new(&config()).unwrap();
        let mut h = Host::new(state, Box::new(|_, _: &[u8]| {}), ClockMode::Wall);
        assert!(h.wall_clock());
        let mut bytes = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut bytes);
        h.clock_time_get(&mut m, 0, 0, 0).unwrap();
        let real = super::super::clock::WallClock::realtime();
        let got = m.read_u64(0).unwrap();
        assert!(real >= got && real - got < 60_000_000_000);
        // The virtual clock is left alone.
        assert_eq!(h.state.clock.elapsed_ns, 0);
    }

    #[test]
    fn clock_time_get_ticks() {
        let mut h = host();
        let mut bytes = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut bytes);
        h.clock_time_get(&mut m, 1, 0, 0).unwrap();
        h.clock_time_get(&mut m, 1, 0, 8).unwrap();
        assert_eq!(m.read_u64(0), Ok(0));
        assert_eq!(m.read_u64(8), Ok(super::super::TICK_NS));
        assert_eq!(h.clock_time_get(&mut m, 1, 0, 9), Err(Errno::Fault));
        assert_eq!(h.clock_time_get(&mut m, 7, 0, 0), Err(Errno::Inval));
        h.clock_res_get(&mut m, 0, 0).unwrap();
        assert_eq!(m.read_u64(0), Ok(super::super::TICK_NS));
    }
}
