//! The glue between wasmtime and the host: registers every
//! `wasi_snapshot_preview1` function on a [`wasmtime::Linker`].
//!
//! Each registered function finds the task's exported `memory`, borrows it
//! together with the [`Host`], converts the raw wasm arguments and calls the
//! matching method in `sys_*.rs`, turning its result into an errno. A
//! missing memory is a trap ([`HostError::NoMemory`]); `proc_exit` unwinds
//! with [`ProcExit`]. This file owns the function list and signatures and
//! must not contain call semantics.

use wasmtime::{Caller, Extern, Linker};

use super::abi::{Errno, WasiResult, MODULE};
use super::mem::GuestMemory;
use super::{Host, HostError, ProcExit};

/// Every `wasi_snapshot_preview1` function, all of which [`add_to_linker`]
/// registers (those baton does not support return `ENOSYS` or `ENOTSUP`).
/// A module importing any other name from `wasi_snapshot_preview1` cannot
/// run.
pub const PROVIDED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

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

/// Registers every `wasi_snapshot_preview1` function (see [`PROVIDED`]) on
/// `linker`; `get` projects the store's data to its [`Host`].
///
/// # Errors
///
/// Fails only if the linker refuses a definition (for example because the
/// functions are already defined and shadowing is off).
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut Host,
) -> wasmtime::Result<()> {
    // Raw wasm arguments are reinterpreted as the unsigned WASI types.
    let u = |v: i32| v as u32;
    let w = |v: i64| v as u64;

    linker.func_wrap(
        MODULE,
        "args_get",
        move |mut c: Caller<'_, T>, a: i32, b: i32| {
            with_memory(&mut c, get, |h, m| h.args_get(m, u(a), u(b)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        move |mut c: Caller<'_, T>, a: i32, b: i32| {
            with_memory(&mut c, get, |h, m| h.args_sizes_get(m, u(a), u(b)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        move |mut c: Caller<'_, T>, a: i32, b: i32| {
            with_memory(&mut c, get, |h, m| h.environ_get(m, u(a), u(b)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        move |mut c: Caller<'_, T>, a: i32, b: i32| {
            with_memory(&mut c, get, |h, m| h.environ_sizes_get(m, u(a), u(b)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        move |mut c: Caller<'_, T>, id: i32, out: i32| {
            with_memory(&mut c, get, |h, m| h.clock_res_get(m, u(id), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        move |mut c: Caller<'_, T>, id: i32, precision: i64, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.clock_time_get(m, u(id), w(precision), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_advise",
        move |mut c: Caller<'_, T>, fd: i32, _offset: i64, _len: i64, advice: i32| {
            without_memory(&mut c, get, |h| h.fd_advise(u(fd), u(advice)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_allocate",
        move |mut c: Caller<'_, T>, fd: i32, _offset: i64, _len: i64| {
            without_memory(&mut c, get, |h| h.fd_allocate(u(fd)))
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", move |mut c: Caller<'_, T>, fd: i32| {
        without_memory(&mut c, get, |h| h.fd_close(u(fd)))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_datasync",
        move |mut c: Caller<'_, T>, fd: i32| without_memory(&mut c, get, |h| h.fd_sync(u(fd))),
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_memory(&mut c, get, |h, m| h.fd_fdstat_get(m, u(fd), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        move |mut c: Caller<'_, T>, fd: i32, flags: i32| {
            without_memory(&mut c, get, |h| h.fd_fdstat_set_flags(u(fd), u(flags)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        move |mut c: Caller<'_, T>, fd: i32, _base: i64, _inheriting: i64| {
            without_memory(&mut c, get, |h| h.fd_fdstat_set_rights(u(fd)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_memory(&mut c, get, |h, m| h.fd_filestat_get(m, u(fd), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        move |mut c: Caller<'_, T>, fd: i32, size: i64| {
            without_memory(&mut c, get, |h| h.fd_filestat_set_size(u(fd), w(size)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        move |mut c: Caller<'_, T>, fd: i32, atim: i64, mtim: i64, flags: i32| {
            without_memory(&mut c, get, |h| {
                h.fd_filestat_set_times(u(fd), w(atim), w(mtim), u(flags))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pread",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_pread(m, u(fd), u(iovs), u(n), w(offset), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_memory(&mut c, get, |h, m| h.fd_prestat_get(m, u(fd), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        move |mut c: Caller<'_, T>, fd: i32, path: i32, len: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_prestat_dir_name(m, u(fd), u(path), u(len))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_pwrite(m, u(fd), u(iovs), u(n), w(offset), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_read(m, u(fd), u(iovs), u(n), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_readdir",
        move |mut c: Caller<'_, T>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_readdir(m, u(fd), u(buf), u(len), w(cookie), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_renumber",
        move |mut c: Caller<'_, T>, from: i32, to: i32| {
            without_memory(&mut c, get, |h| h.fd_renumber(u(from), u(to)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        move |mut c: Caller<'_, T>, fd: i32, offset: i64, whence: i32, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_seek(m, u(fd), offset, u(whence), u(out))
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_sync", move |mut c: Caller<'_, T>, fd: i32| {
        without_memory(&mut c, get, |h| h.fd_sync(u(fd)))
    })?;
    linker.func_wrap(
        MODULE,
        "fd_tell",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_memory(&mut c, get, |h, m| h.fd_tell(m, u(fd), u(out)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.fd_write(m, u(fd), u(iovs), u(n), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        move |mut c: Caller<'_, T>, fd: i32, path: i32, len: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_create_directory(m, u(fd), u(path), u(len))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_get",
        move |mut c: Caller<'_, T>, fd: i32, flags: i32, path: i32, len: i32, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_filestat_get(m, u(fd), u(flags), u(path), u(len), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_filestat_set_times",
        move |mut c: Caller<'_, T>,
              fd: i32,
              flags: i32,
              path: i32,
              len: i32,
              atim: i64,
              mtim: i64,
              fst: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_filestat_set_times(
                    m,
                    u(fd),
                    u(flags),
                    u(path),
                    u(len),
                    w(atim),
                    w(mtim),
                    u(fst),
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        move |mut c: Caller<'_, T>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            without_memory(&mut c, get, |_| Err(Errno::Nosys))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_open",
        move |mut c: Caller<'_, T>,
              fd: i32,
              lookup: i32,
              path: i32,
              len: i32,
              oflags: i32,
              base: i64,
              inheriting: i64,
              fdflags: i32,
              out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_open(
                    m,
                    u(fd),
                    u(lookup),
                    u(path),
                    u(len),
                    u(oflags),
                    w(base),
                    w(inheriting),
                    u(fdflags),
                    u(out),
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_readlink",
        move |mut c: Caller<'_, T>,
              fd: i32,
              path: i32,
              len: i32,
              buf: i32,
              buf_len: i32,
              out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_readlink(m, u(fd), u(path), u(len), u(buf), u(buf_len), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_remove_directory",
        move |mut c: Caller<'_, T>, fd: i32, path: i32, len: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_remove_directory(m, u(fd), u(path), u(len))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_rename",
        move |mut c: Caller<'_, T>,
              fd: i32,
              path: i32,
              len: i32,
              fd2: i32,
              path2: i32,
              len2: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_rename(m, u(fd), u(path), u(len), u(fd2), u(path2), u(len2))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        move |mut c: Caller<'_, T>, _: i32, _: i32, _: i32, _: i32, _: i32| {
            without_memory(&mut c, get, |_| Err(Errno::Nosys))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_unlink_file",
        move |mut c: Caller<'_, T>, fd: i32, path: i32, len: i32| {
            with_memory(&mut c, get, |h, m| {
                h.path_unlink_file(m, u(fd), u(path), u(len))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "poll_oneoff",
        move |mut c: Caller<'_, T>, subs: i32, events: i32, n: i32, out: i32| {
            with_memory(&mut c, get, |h, m| {
                h.poll_oneoff(m, u(subs), u(events), u(n), u(out))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        move |mut c: Caller<'_, T>, status: i32| -> wasmtime::Result<()> {
            let raw = status as u32;
            if raw >= 126 {
                return Err(wasmtime::Error::new(HostError::InvalidExitStatus(raw)));
            }
            get(c.data_mut()).state.exit = Some(status);
            Err(wasmtime::Error::new(ProcExit(status)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "proc_raise",
        move |mut c: Caller<'_, T>, sig: i32| without_memory(&mut c, get, |h| h.proc_raise(u(sig))),
    )?;
    linker.func_wrap(MODULE, "sched_yield", move |mut c: Caller<'_, T>| {
        without_memory(&mut c, get, |h| h.sched_yield())
    })?;
    linker.func_wrap(
        MODULE,
        "random_get",
        move |mut c: Caller<'_, T>, buf: i32, len: i32| {
            with_memory(&mut c, get, |h, m| h.random_get(m, u(buf), u(len)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_accept",
        move |mut c: Caller<'_, T>, _: i32, _: i32, _: i32| {
            without_memory(&mut c, get, |_| Err(Errno::Nosys))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        move |mut c: Caller<'_, T>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            without_memory(&mut c, get, |_| Err(Errno::Nosys))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        move |mut c: Caller<'_, T>, _: i32, _: i32, _: i32, _: i32, _: i32| {
            without_memory(&mut c, get, |_| Err(Errno::Nosys))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        move |mut c: Caller<'_, T>, _: i32, _: i32| {
            without_memory(&mut c, get, |_| Err(Errno::Nosys))
        },
    )?;
    Ok(())
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
