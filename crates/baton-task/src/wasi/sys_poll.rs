//! `poll_oneoff`: waiting for clocks and descriptor readiness.
//!
//! The rule: descriptor subscriptions are always ready (stdin is in memory,
//! stdout and stderr never block, files are in memory); reading reports the
//! bytes left (with `hangup` at the end). If any descriptor subscription is
//! present, the call returns at once with those events and any clock whose
//! deadline has already passed. Otherwise time passes until the earliest
//! clock deadline (instantly on the virtual clock: it jumps there) and every
//! clock due by then is reported. Events are written in subscription order.
//! This file must not touch files beyond reading sizes and positions.

use super::abi::{
    eventtype, Errno, WasiResult, EVENT_SIZE, FD_READWRITE_HANGUP, SUBSCRIPTION_CLOCK_ABSTIME,
    SUBSCRIPTION_SIZE,
};
use super::fd::Desc;
use super::mem::GuestMemory;
use super::Host;

/// One decoded subscription.
struct Sub {
    userdata: u64,
    kind: SubKind,
}

enum SubKind {
    /// A clock, with its monotonic deadline.
    Clock(u64),
    /// A descriptor, with `(bytes available, hangup)`.
    Fd { ty: u8, nbytes: u64, hangup: bool },
}

impl Host {
    pub(crate) fn poll_oneoff(
        &mut self,
        mem: &mut GuestMemory<'_>,
        subs: u32,
        events: u32,
        nsubs: u32,
        nevents: u32,
    ) -> WasiResult<()> {
        if nsubs == 0 {
            return Err(Errno::Inval);
        }
        mem.check_array(subs, nsubs, SUBSCRIPTION_SIZE)?;
        mem.check_array(events, nsubs, EVENT_SIZE)?;
        mem.check(nevents, 4)?;
        // Decode everything first: the event array may overlap the
        // subscriptions. The subscription array is in bounds, so this
        // allocation is bounded by the guest's memory size.
        let mut decoded = Vec::with_capacity(nsubs as usize);
        let mut earliest: Option<u64> = None;
        let mut any_fd = false;
        for i in 0..nsubs {
            let at = subs + i * SUBSCRIPTION_SIZE;
            let userdata = mem.read_u64(at)?;
            let kind = match mem.read_u8(at + 8)? {
                eventtype::CLOCK => {
                    let id = mem.read_u32(at + 16)?;
                    let timeout = mem.read_u64(at + 24)?;
                    let flags = mem.read_u16(at + 40)?;
                    if flags & !SUBSCRIPTION_CLOCK_ABSTIME != 0 {
                        return Err(Errno::Inval);
                    }
                    let absolute = flags & SUBSCRIPTION_CLOCK_ABSTIME != 0;
                    let deadline = self.clocks().deadline(id, timeout, absolute)?;
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                    SubKind::Clock(deadline)
                }
                ty @ (eventtype::FD_READ | eventtype::FD_WRITE) => {
                    any_fd = true;
                    let fd = mem.read_u32(at + 16)?;
                    let (nbytes, hangup) = self.readiness(fd, ty)?;
                    SubKind::Fd { ty, nbytes, hangup }
                }
                _ => return Err(Errno::Inval),
            };
            decoded.push(Sub { userdata, kind });
        }
        if !any_fd {
            if let Some(deadline) = earliest {
                self.clocks().wait_until(deadline);
            }
        }
        let now = self.clocks().monotonic_now();
        let mut n: u32 = 0;
        for sub in &decoded {
            let mut e = [0u8; EVENT_SIZE as usize];
            e[0..8].copy_from_slice(&sub.userdata.to_le_bytes());
            match sub.kind {
                SubKind::Clock(deadline) => {
                    if deadline > now {
                        continue;
                    }
                    e[10] = eventtype::CLOCK;
                }
                SubKind::Fd { ty, nbytes, hangup } => {
                    e[10] = ty;
                    e[16..24].copy_from_slice(&nbytes.to_le_bytes());
                    if hangup {
                        e[24..26].copy_from_slice(&FD_READWRITE_HANGUP.to_le_bytes());
                    }
                }
            }
            mem.write_bytes(events + n * EVENT_SIZE, &e)?;
            n += 1;
        }
        mem.write_u32(nevents, n)
    }

    /// `(nbytes, hangup)` for a descriptor subscription: `EBADF` for a
    /// descriptor that cannot be polled that way (as wasmtime).
    fn readiness(&self, fd: u32, ty: u8) -> WasiResult<(u64, bool)> {
        let desc = self.state.fds.get(fd)?;
        if ty == eventtype::FD_READ {
            let left = match desc {
                Desc::Stdin => (self.state.stdin.len() as u64).saturating_sub(self.state.stdin_pos),
                Desc::File { ino, pos, .. } => {
                    self.state.vfs.node(*ino)?.size().saturating_sub(*pos)
                }
                _ => return Err(Errno::Badf),
            };
            Ok((left, left == 0))
        } else {
            match desc {
                Desc::Stdout | Desc::Stderr | Desc::File { .. } => Ok((1, false)),
                _ => Err(Errno::Badf),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::abi::clockid;
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

    fn clock_sub(m: &mut GuestMemory<'_>, at: u32, userdata: u64, timeout: u64, flags: u16) {
        m.write_u64(at, userdata).unwrap();
        m.write_u8(at + 8, eventtype::CLOCK).unwrap();
        m.write_u32(at + 16, clockid::MONOTONIC).unwrap();
        m.write_u64(at + 24, timeout).unwrap();
        m.write_u16(at + 40, flags).unwrap();
    }

    #[test]
    fn sleeping_advances_the_virtual_clock_to_the_earliest_deadline() {
        let mut h = host();
        let mut bytes = vec![0u8; 1024];
        let mut m = GuestMemory::new(&mut bytes);
        clock_sub(&mut m, 0, 11, 5_000, 0);
        clock_sub(&mut m, 48, 22, 2_000, 0);
        h.poll_oneoff(&mut m, 0, 512, 2, 1000).unwrap();
        assert_eq!(m.read_u32(1000), Ok(1));
        assert_eq!(m.read_u64(512), Ok(22));
        assert_eq!(m.read_u8(522), Ok(eventtype::CLOCK));
        assert_eq!(h.state.clock.elapsed_ns, 2_000);
        // An absolute deadline in the past fires at once.
        clock_sub(&mut m, 0, 33, 10, SUBSCRIPTION_CLOCK_ABSTIME);
        h.poll_oneoff(&mut m, 0, 512, 1, 1000).unwrap();
        assert_eq!(m.read_u32(1000), Ok(1));
        assert_eq!(h.state.clock.elapsed_ns, 2_000);
    }

    #[test]
    fn stdin_is_always_ready_and_clocks_do_not_wait_then() {
        let mut h = host();
        let mut bytes = vec![0u8; 1024];
        let mut m = GuestMemory::new(&mut bytes);
        clock_sub(&mut m, 0, 1, 1_000_000, 0);
        m.write_u64(48, 2).unwrap();
        m.write_u8(56, eventtype::FD_READ).unwrap();
        m.write_u32(64, 0).unwrap();
        h.poll_oneoff(&mut m, 0, 512, 2, 1000).unwrap();
        assert_eq!(m.read_u32(1000), Ok(1));
        assert_eq!(m.read_u64(512), Ok(2));
        assert_eq!(m.read_u8(522), Ok(eventtype::FD_READ));
        assert_eq!(m.read_u64(528), Ok(5));
        assert_eq!(h.state.clock.elapsed_ns, 0);
    }

    #[test]
    fn bad_subscriptions() {
        let mut h = host();
        let mut bytes = vec![0u8; 1024];
        let mut m = GuestMemory::new(&mut bytes);
        assert_eq!(h.poll_oneoff(&mut m, 0, 512, 0, 1000), Err(Errno::Inval));
        assert_eq!(h.poll_oneoff(&mut m, 0, 512, 100, 1000), Err(Errno::Fault));
        assert_eq!(
            h.poll_oneoff(&mut m, 0, 512, u32::MAX, 1000),
            Err(Errno::Fault)
        );
        m.write_u8(8, 7).unwrap();
        assert_eq!(h.poll_oneoff(&mut m, 0, 512, 1, 1000), Err(Errno::Inval));
        m.write_u8(8, eventtype::FD_WRITE).unwrap();
        m.write_u32(16, 0).unwrap();
        assert_eq!(h.poll_oneoff(&mut m, 0, 512, 1, 1000), Err(Errno::Badf));
        clock_sub(&mut m, 0, 1, 1, 0);
        m.write_u32(16, 9).unwrap();
        assert_eq!(h.poll_oneoff(&mut m, 0, 512, 1, 1000), Err(Errno::Inval));
    }
}
