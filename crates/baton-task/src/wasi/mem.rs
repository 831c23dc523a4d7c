//! Bounds-checked access to the guest's linear memory.
//!
//! This file owns the only code that turns guest pointers and lengths into
//! byte ranges. Every access is checked against the memory's size and
//! returns `EFAULT` when it falls outside (including arithmetic overflow);
//! nothing here panics or allocates based on a guest-supplied length. It
//! must not know about files, descriptors or any other host state.

use super::abi::{Errno, WasiResult, IOVEC_SIZE};

/// A view of the guest's linear memory for the duration of one host call.
pub(crate) struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

impl<'a> GuestMemory<'a> {
    /// Wraps the memory's bytes.
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        GuestMemory { bytes }
    }

    /// The byte range `ptr .. ptr + len`, or `EFAULT`.
    fn range(&self, ptr: u32, len: u32) -> WasiResult<std::ops::Range<usize>> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::Fault)?;
        if end > self.bytes.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    /// Checks that `ptr .. ptr + len` lies inside memory.
    pub(crate) fn check(&self, ptr: u32, len: u32) -> WasiResult<()> {
        self.range(ptr, len).map(|_| ())
    }

    /// Checks that an array of `count` elements of `size` bytes at `ptr` lies
    /// inside memory.
    pub(crate) fn check_array(&self, ptr: u32, count: u32, size: u32) -> WasiResult<()> {
        let len = count.checked_mul(size).ok_or(Errno::Fault)?;
        self.check(ptr, len)
    }

    /// Borrows `len` bytes at `ptr`.
    pub(crate) fn slice(&self, ptr: u32, len: u32) -> WasiResult<&[u8]> {
        let r = self.range(ptr, len)?;
        Ok(&self.bytes[r])
    }

    /// Mutably borrows `len` bytes at `ptr`.
    pub(crate) fn slice_mut(&mut self, ptr: u32, len: u32) -> WasiResult<&mut [u8]> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.bytes[r])
    }

    /// Borrows a UTF-8 string of `len` bytes at `ptr` (`EILSEQ` if not UTF-8).
    pub(crate) fn str(&self, ptr: u32, len: u32) -> WasiResult<&str> {
        std::str::from_utf8(self.slice(ptr, len)?).map_err(|_| Errno::Ilseq)
    }

    /// Copies `data` to `ptr`.
    pub(crate) fn write_bytes(&mut self, ptr: u32, data: &[u8]) -> WasiResult<()> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::Fault)?;
        self.slice_mut(ptr, len)?.copy_from_slice(data);
        Ok(())
    }

    fn read_array<const N: usize>(&self, ptr: u32) -> WasiResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(ptr, N as u32)?);
        Ok(out)
    }

    /// Reads a little-endian `u8` at `ptr`.
    pub(crate) fn read_u8(&self, ptr: u32) -> WasiResult<u8> {
        Ok(self.read_array::<1>(ptr)?[0])
    }

    /// Reads a little-endian `u16` at `ptr`.
    pub(crate) fn read_u16(&self, ptr: u32) -> WasiResult<u16> {
        self.read_array(ptr).map(u16::from_le_bytes)
    }

    /// Reads a little-endian `u32` at `ptr`.
    pub(crate) fn read_u32(&self, ptr: u32) -> WasiResult<u32> {
        self.read_array(ptr).map(u32::from_le_bytes)
    }

    /// Reads a little-endian `u64` at `ptr`.
    pub(crate) fn read_u64(&self, ptr: u32) -> WasiResult<u64> {
        self.read_array(ptr).map(u64::from_le_bytes)
    }

    /// Writes a `u8` at `ptr`.
    pub(crate) fn write_u8(&mut self, ptr: u32, v: u8) -> WasiResult<()> {
        self.write_bytes(ptr, &[v])
    }

    /// Writes a little-endian `u16` at `ptr`.
    #[cfg(test)]
    pub(crate) fn write_u16(&mut self, ptr: u32, v: u16) -> WasiResult<()> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// Writes a little-endian `u32` at `ptr`.
    pub(crate) fn write_u32(&mut self, ptr: u32, v: u32) -> WasiResult<()> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// Writes a little-endian `u64` at `ptr`.
    pub(crate) fn write_u64(&mut self, ptr: u32, v: u64) -> WasiResult<()> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// Reads iovec number `i` of the array at `iovs` as `(buf, buf_len)`.
    pub(crate) fn iovec(&self, iovs: u32, i: u32) -> WasiResult<(u32, u32)> {
        let at = i
            .checked_mul(IOVEC_SIZE)
            .and_then(|off| iovs.checked_add(off))
            .ok_or(Errno::Fault)?;
        Ok((self.read_u32(at)?, self.read_u32(at.wrapping_add(4))?))
    }

    /// Validates an iovec array: the array itself and every buffer it names
    /// must lie inside memory. Returns the total length of the buffers, or
    /// `EINVAL` if it does not fit in a `u32` (as `readv`/`writev` do).
    pub(crate) fn check_iovecs(&self, iovs: u32, count: u32) -> WasiResult<u32> {
        self.check_array(iovs, count, IOVEC_SIZE)?;
        let mut total: u32 = 0;
        for i in 0..count {
            let (buf, len) = self.iovec(iovs, i)?;
            self.check(buf, len)?;
            total = total.checked_add(len).ok_or(Errno::Inval)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_is_fault() {
        let mut bytes = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut bytes);
        assert_eq!(m.read_u32(13), Err(Errno::Fault));
        assert_eq!(m.read_u32(12), Ok(0));
        assert_eq!(m.write_u64(u32::MAX, 1), Err(Errno::Fault));
        assert_eq!(m.slice(u32::MAX, u32::MAX).err(), Some(Errno::Fault));
        assert_eq!(m.check_array(0, u32::MAX, 8), Err(Errno::Fault));
        assert_eq!(m.iovec(0, u32::MAX), Err(Errno::Fault));
    }

    #[test]
    fn iovec_totals_overflow_is_inval() {
        let mut bytes = vec![0u8; 64];
        // Two iovecs, each naming 0x8000_0000 bytes at 0: out of bounds.
        bytes[4..8].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        let m = GuestMemory::new(&mut bytes);
        assert_eq!(m.check_iovecs(0, 1), Err(Errno::Fault));
        let mut bytes = vec![0u8; 64];
        // Iovecs each 40 bytes long at 0: in bounds, total 80.
        for i in 0..2usize {
            bytes[i * 8 + 4..i * 8 + 8].copy_from_slice(&40u32.to_le_bytes());
        }
        let m = GuestMemory::new(&mut bytes);
        assert_eq!(m.check_iovecs(0, 2), Ok(80));
    }

    #[test]
    fn invalid_utf8_is_ilseq() {
        let mut bytes = vec![0xffu8; 4];
        let m = GuestMemory::new(&mut bytes);
        assert_eq!(m.str(0, 4).err(), Some(Errno::Ilseq));
    }
}
