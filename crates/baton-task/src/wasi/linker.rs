//! The glue between wasmtime and the host: registers every
//! `wasi_snapshot_preview1` function on a [`wasmtime::Linker`].
//!
//! Each call's signature is written once, in the table at the end of this
//! file, with the name of the `Host` method (in `sys_*.rs`) that implements
//! it. From the table, `wasi_imports!` generates [`PROVIDED`] and
//! [`add_to_linker`]: every registered function converts its raw wasm
//! arguments to the declared WASI types (`i32` to `u32`, `i64` to `u64`,
//! signed where the table says so), borrows the task's exported `memory`
//! together with the [`Host`] if the call needs it, and turns the method's
//! result into an errno. A missing memory is a trap ([`HostError::NoMemory`]);
//! `proc_exit` unwinds with [`ProcExit`]. This file owns the function list
//! and signatures and must not contain call semantics.

use wasmtime::{Caller, Extern, Linker};

use super::abi::{Errno, WasiResult, MODULE};
use super::mem::GuestMemory;
use super::{Host, HostError, ProcExit};

/// A WASI parameter type and the raw wasm type it arrives as.
trait Param {
    /// The wasm value type of the parameter.
    type Raw;
    /// Reinterprets the raw bits as the WASI type (no range check: WASI
    /// unsigned values use the whole range).
    fn from_raw(raw: Self::Raw) -> Self;
}

impl Param for u32 {
    type Raw = i32;
    fn from_raw(raw: i32) -> u32 {
        raw as u32
    }
}

impl Param for u64 {
    type Raw = i64;
    fn from_raw(raw: i64) -> u64 {
        raw as u64
    }
}

/// Signed: `fd_seek`'s offset (a `filedelta`).
impl Param for i64 {
    type Raw = i64;
    fn from_raw(raw: i64) -> i64 {
        raw
    }
}

/// Signed: `proc_exit`'s status.
impl Param for i32 {
    type Raw = i32;
    fn from_raw(raw: i32) -> i32 {
        raw
    }
}

fn errno(r: WasiResult<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw(),
    }
}

/// Runs `f` with the host and the task's memory.
fn with_memory<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut Host,
    f: impl FnOnce(&mut Host, &mut GuestMemory<'_>) -> WasiResult<()>,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::new(HostError::NoMemory));
    };
    let (bytes, data) = memory.data_and_store_mut(caller);
    let mut mem = GuestMemory::new(bytes);
    Ok(errno(f(get(data), &mut mem)))
}

/// Runs `f` with the host only.
fn without_memory<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut Host,
    f: impl FnOnce(&mut Host) -> WasiResult<()>,
) -> wasmtime::Result<i32> {
    Ok(errno(f(get(caller.data_mut()))))
}

/// `proc_exit`: records the status and unwinds the guest with
/// [`ProcExit`]; statuses outside `[0, 126)` are a trap, as in wasmtime.
fn proc_exit<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut Host,
    status: i32,
) -> wasmtime::Result<()> {
    let raw = status as u32;
    if raw >= 126 {
        return Err(wasmtime::Error::new(HostError::InvalidExitStatus(raw)));
    }
    get(caller.data_mut()).state.exit = Some(status);
    Err(wasmtime::Error::new(ProcExit(status)))
}

/// Registers one function of the table; the first token says how it is
/// called:
///
/// * `memory method`: `Host::method(memory, args...)`;
/// * `host method`: `Host::method(args...)`, without the memory;
/// * `nosys`: not provided, returns `ENOSYS` whatever the arguments;
/// * `exit`: [`proc_exit`], which returns no errno.
macro_rules! register {
    ($linker:ident, $get:ident, $name:ident ($($arg:ident: $ty:ty),*) memory $method:ident) => {
        $linker.func_wrap(
            MODULE,
            stringify!($name),
            move |mut c: Caller<'_, T>, $($arg: <$ty as Param>::Raw),*| {
                with_memory(&mut c, $get, |h, m| {
                    h.$method(m, $(<$ty as Param>::from_raw($arg)),*)
                })
            },
        )?
    };
    ($linker:ident, $get:ident, $name:ident ($($arg:ident: $ty:ty),*) host $method:ident) => {
        $linker.func_wrap(
            MODULE,
            stringify!($name),
            move |mut c: Caller<'_, T>, $($arg: <$ty as Param>::Raw),*| {
                without_memory(&mut c, $get, |h| h.$method($(<$ty as Param>::from_raw($arg)),*))
            },
        )?
    };
    ($linker:ident, $get:ident, $name:ident ($($arg:ident: $ty:ty),*) nosys) => {
        $linker.func_wrap(
            MODULE,
            stringify!($name),
            move |mut c: Caller<'_, T>, $(_: <$ty as Param>::Raw),*| {
                without_memory(&mut c, $get, |_| Err(Errno::Nosys))
            },
        )?
    };
    ($linker:ident, $get:ident, $name:ident ($status:ident: $ty:ty) exit) => {
        $linker.func_wrap(
            MODULE,
            stringify!($name),
            move |mut c: Caller<'_, T>, $status: <$ty as Param>::Raw| {
                proc_exit(&mut c, $get, <$ty as Param>::from_raw($status))
            },
        )?
    };
}

/// Generates [`PROVIDED`] and [`add_to_linker`] from the table of calls.
macro_rules! wasi_imports {
    ($($name:ident ($($arg:ident: $ty:ty),* $(,)?) => $how:ident $($method:ident)?;)*) => {
        /// Every `wasi_snapshot_preview1` function, all of which
        /// [`add_to_linker`] registers (those baton does not support return
        /// `ENOSYS` or `ENOTSUP`). A module importing any other name from
        /// `wasi_snapshot_preview1` cannot run.
        pub const PROVIDED: &[&str] = &[$(stringify!($name)),*];

        /// Registers every `wasi_snapshot_preview1` function (see
        /// [`PROVIDED`]) on `linker`; `get` projects the store's data to its
        /// [`Host`].
        ///
        /// # Errors
        ///
        /// Fails only if the linker refuses a definition (for example
        /// because the functions are already defined and shadowing is off).
        pub fn add_to_linker<T: 'static>(
            linker: &mut Linker<T>,
            get: fn(&mut T) -> &mut Host,
        ) -> wasmtime::Result<()> {
            $(register!(linker, get, $name ($($arg: $ty),*) $how $($method)?);)*
            Ok(())
        }
    };
}

// The preview1 calls in witx order, with their witx parameter names (an
// `out`/`*_out` parameter is where a result is written). `u32` is also every
// pointer and size; `i64` is signed, `u64` not.
wasi_imports! {
    args_get(argv: u32, argv_buf: u32) => memory args_get;
    args_sizes_get(argc_out: u32, argv_buf_size_out: u32) => memory args_sizes_get;
    environ_get(environ: u32, environ_buf: u32) => memory environ_get;
    environ_sizes_get(count_out: u32, buf_size_out: u32) => memory environ_sizes_get;
    clock_res_get(id: u32, out: u32) => memory clock_res_get;
    clock_time_get(id: u32, precision: u64, out: u32) => memory clock_time_get;
    fd_advise(fd: u32, offset: u64, len: u64, advice: u32) => host fd_advise;
    fd_allocate(fd: u32, offset: u64, len: u64) => host fd_allocate;
    fd_close(fd: u32) => host fd_close;
    fd_datasync(fd: u32) => host fd_sync;
    fd_fdstat_get(fd: u32, out: u32) => memory fd_fdstat_get;
    fd_fdstat_set_flags(fd: u32, flags: u32) => host fd_fdstat_set_flags;
    fd_fdstat_set_rights(fd: u32, base: u64, inheriting: u64) => host fd_fdstat_set_rights;
    fd_filestat_get(fd: u32, out: u32) => memory fd_filestat_get;
    fd_filestat_set_size(fd: u32, size: u64) => host fd_filestat_set_size;
    fd_filestat_set_times(fd: u32, atim: u64, mtim: u64, fst_flags: u32)
        => host fd_filestat_set_times;
    fd_pread(fd: u32, iovs: u32, iovs_len: u32, offset: u64, nread_out: u32)
        => memory fd_pread;
    fd_prestat_get(fd: u32, out: u32) => memory fd_prestat_get;
    fd_prestat_dir_name(fd: u32, path: u32, path_len: u32) => memory fd_prestat_dir_name;
    fd_pwrite(fd: u32, iovs: u32, iovs_len: u32, offset: u64, nwritten_out: u32)
        => memory fd_pwrite;
    fd_read(fd: u32, iovs: u32, iovs_len: u32, nread_out: u32) => memory fd_read;
    fd_readdir(fd: u32, buf: u32, buf_len: u32, cookie: u64, bufused_out: u32)
        => memory fd_readdir;
    fd_renumber(fd: u32, to: u32) => host fd_renumber;
    fd_seek(fd: u32, offset: i64, whence: u32, newoffset_out: u32) => memory fd_seek;
    fd_sync(fd: u32) => host fd_sync;
    fd_tell(fd: u32, out: u32) => memory fd_tell;
    fd_write(fd: u32, iovs: u32, iovs_len: u32, nwritten_out: u32) => memory fd_write;
    path_create_directory(fd: u32, path: u32, path_len: u32) => memory path_create_directory;
    path_filestat_get(fd: u32, flags: u32, path: u32, path_len: u32, out: u32)
        => memory path_filestat_get;
    path_filestat_set_times(
        fd: u32, flags: u32, path: u32, path_len: u32, atim: u64, mtim: u64, fst_flags: u32,
    ) => memory path_filestat_set_times;
    path_link(
        old_fd: u32, old_flags: u32, old_path: u32, old_path_len: u32,
        new_fd: u32, new_path: u32, new_path_len: u32,
    ) => nosys;
    path_open(
        fd: u32, dirflags: u32, path: u32, path_len: u32, oflags: u32,
        rights_base: u64, rights_inheriting: u64, fdflags: u32, fd_out: u32,
    ) => memory path_open;
    path_readlink(fd: u32, path: u32, path_len: u32, buf: u32, buf_len: u32, bufused_out: u32)
        => memory path_readlink;
    path_remove_directory(fd: u32, path: u32, path_len: u32) => memory path_remove_directory;
    path_rename(
        fd: u32, old_path: u32, old_path_len: u32, new_fd: u32, new_path: u32, new_path_len: u32,
    ) => memory path_rename;
    path_symlink(old_path: u32, old_path_len: u32, fd: u32, new_path: u32, new_path_len: u32)
        => nosys;
    path_unlink_file(fd: u32, path: u32, path_len: u32) => memory path_unlink_file;
    poll_oneoff(subs: u32, events: u32, nsubscriptions: u32, nevents_out: u32)
        => memory poll_oneoff;
    proc_exit(rval: i32) => exit;
    proc_raise(sig: u32) => host proc_raise;
    sched_yield() => host sched_yield;
    random_get(buf: u32, buf_len: u32) => memory random_get;
    sock_accept(fd: u32, flags: u32, fd_out: u32) => nosys;
    sock_recv(
        fd: u32, ri_data: u32, ri_data_len: u32, ri_flags: u32, ro_datalen_out: u32,
        ro_flags_out: u32,
    ) => nosys;
    sock_send(fd: u32, si_data: u32, si_data_len: u32, si_flags: u32, so_datalen_out: u32)
        => nosys;
    sock_shutdown(fd: u32, how: u32) => nosys;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provided_lists_each_preview1_function_once() {
        let mut names: Vec<_> = PROVIDED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 46);
        assert_eq!(PROVIDED.len(), 46);
    }

    #[test]
    fn every_provided_function_is_registered() {
        let engine = wasmtime::Engine::default();
        let mut linker: Linker<Host> = Linker::new(&engine);
        add_to_linker(&mut linker, |h| h).unwrap();
        let mut store = wasmtime::Store::new(
            &engine,
            Host::new(
                super::super::HostState::new(&super::super::tests::config()).unwrap(),
                Box::new(|_, _: &[u8]| {}),
                super::super::ClockMode::Virtual {
                    start_realtime_ns: 0,
                },
            ),
        );
        for name in PROVIDED {
            assert!(
                linker.get(&mut store, MODULE, name).is_ok(),
                "{name} is not registered"
            );
        }
        let defined = linker.iter(&mut store).count();
        assert_eq!(defined, PROVIDED.len());
    }

    /// Every function's wasm type, from the preview1 witx (all pointers and
    /// sizes are i32; every call but `proc_exit` returns an errno).
    const SIGNATURES: &[&str] = &[
        "args_get(i32 i32) -> i32",
        "args_sizes_get(i32 i32) -> i32",
        "environ_get(i32 i32) -> i32",
        "environ_sizes_get(i32 i32) -> i32",
        "clock_res_get(i32 i32) -> i32",
        "clock_time_get(i32 i64 i32) -> i32",
        "fd_advise(i32 i64 i64 i32) -> i32",
        "fd_allocate(i32 i64 i64) -> i32",
        "fd_close(i32) -> i32",
        "fd_datasync(i32) -> i32",
        "fd_fdstat_get(i32 i32) -> i32",
        "fd_fdstat_set_flags(i32 i32) -> i32",
        "fd_fdstat_set_rights(i32 i64 i64) -> i32",
        "fd_filestat_get(i32 i32) -> i32",
        "fd_filestat_set_size(i32 i64) -> i32",
        "fd_filestat_set_times(i32 i64 i64 i32) -> i32",
        "fd_pread(i32 i32 i32 i64 i32) -> i32",
        "fd_prestat_get(i32 i32) -> i32",
        "fd_prestat_dir_name(i32 i32 i32) -> i32",
        "fd_pwrite(i32 i32 i32 i64 i32) -> i32",
        "fd_read(i32 i32 i32 i32) -> i32",
        "fd_readdir(i32 i32 i32 i64 i32) -> i32",
        "fd_renumber(i32 i32) -> i32",
        "fd_seek(i32 i64 i32 i32) -> i32",
        "fd_sync(i32) -> i32",
        "fd_tell(i32 i32) -> i32",
        "fd_write(i32 i32 i32 i32) -> i32",
        "path_create_directory(i32 i32 i32) -> i32",
        "path_filestat_get(i32 i32 i32 i32 i32) -> i32",
        "path_filestat_set_times(i32 i32 i32 i32 i64 i64 i32) -> i32",
        "path_link(i32 i32 i32 i32 i32 i32 i32) -> i32",
        "path_open(i32 i32 i32 i32 i32 i64 i64 i32 i32) -> i32",
        "path_readlink(i32 i32 i32 i32 i32 i32) -> i32",
        "path_remove_directory(i32 i32 i32) -> i32",
        "path_rename(i32 i32 i32 i32 i32 i32) -> i32",
        "path_symlink(i32 i32 i32 i32 i32) -> i32",
        "path_unlink_file(i32 i32 i32) -> i32",
        "poll_oneoff(i32 i32 i32 i32) -> i32",
        "proc_exit(i32) -> ",
        "proc_raise(i32) -> i32",
        "sched_yield() -> i32",
        "random_get(i32 i32) -> i32",
        "sock_accept(i32 i32 i32) -> i32",
        "sock_recv(i32 i32 i32 i32 i32 i32) -> i32",
        "sock_send(i32 i32 i32 i32 i32) -> i32",
        "sock_shutdown(i32 i32) -> i32",
    ];

    #[test]
    fn every_function_has_its_preview1_signature() {
        let engine = wasmtime::Engine::default();
        let mut linker: Linker<Host> = Linker::new(&engine);
        add_to_linker(&mut linker, |h| h).unwrap();
        let mut store = wasmtime::Store::new(
            &engine,
            Host::new(
                super::super::HostState::new(&super::super::tests::config()).unwrap(),
                Box::new(|_, _: &[u8]| {}),
                super::super::ClockMode::Virtual {
                    start_realtime_ns: 0,
                },
            ),
        );
        let join = |types: &mut dyn Iterator<Item = wasmtime::ValType>| {
            types.map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
        };
        let items: Vec<_> = linker.iter(&mut store).collect();
        let mut found: Vec<String> = items
            .into_iter()
            .map(|(_, name, item)| {
                let Extern::Func(f) = item else {
                    panic!("{name} is not a function")
                };
                let ty = f.ty(&store);
                format!(
                    "{name}({}) -> {}",
                    join(&mut ty.params()),
                    join(&mut ty.results())
                )
            })
            .collect();
        let mut want: Vec<String> = SIGNATURES.iter().map(|s| s.to_string()).collect();
        found.sort();
        want.sort();
        assert_eq!(found, want);
    }
}
