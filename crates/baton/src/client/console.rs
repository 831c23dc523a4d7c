//! The terminal: the task's stdout and stderr, streamed live, and baton's
//! one-line status on stderr.
//!
//! The task's stdout is baton's stdout and nothing else is ever written
//! there. baton's own lines (the status line when stderr is a terminal,
//! warnings) go to stderr and only at line boundaries: the status line is
//! drawn only when the task's output on the terminal ends with a newline,
//! and is erased before the task writes again.
//!
//! Owns the process's stdout/stderr handles; no other module writes to them
//! while a task runs.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use baton_task::wasi::{OutStream, OutputSink};

/// Minimum time between two redraws of the status line.
const REDRAW: Duration = Duration::from_millis(100);

struct Inner {
    stdout_tty: bool,
    stderr_tty: bool,
    /// Whether the last byte written to each stream was a newline (or
    /// nothing was written yet).
    out_at_line_start: bool,
    err_at_line_start: bool,
    /// Whether a status line is on the screen now.
    status_shown: bool,
    last_draw: Option<Instant>,
    /// Set when stdout is gone (a closed pipe): further output is dropped
    /// rather than failing the task.
    stdout_broken: bool,
}

/// Shared handle on the terminal. Clone it into the task's output sink.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Mutex<Inner>>,
}

impl Console {
    /// The process's console, shared by the running command and `main`'s
    /// final error line.
    pub fn global() -> &'static Console {
        static GLOBAL: std::sync::OnceLock<Console> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(Console::new)
    }

    /// A console on the process's stdout and stderr.
    fn new() -> Console {
        Console {
            inner: Arc::new(Mutex::new(Inner {
                stdout_tty: io::stdout().is_terminal(),
                stderr_tty: io::stderr().is_terminal(),
                out_at_line_start: true,
                err_at_line_start: true,
                status_shown: false,
                last_draw: None,
                stdout_broken: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a status line will be shown at all.
    pub fn shows_status(&self) -> bool {
        self.lock().stderr_tty
    }

    /// Shows `text` as the status line, at most every 100 ms and only at a
    /// line boundary.
    pub fn status(&self, text: &str) {
        let mut inner = self.lock();
        if !inner.stderr_tty || !inner.at_line_boundary() {
            return;
        }
        if inner.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        inner.last_draw = Some(Instant::now());
        let mut err = io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K\x1b[2m{text}\x1b[0m");
        let _ = err.flush();
        inner.status_shown = true;
    }

    /// Prints one line of baton's own on stderr (warnings, summaries),
    /// starting on a fresh line.
    pub fn line(&self, text: &str) {
        let mut inner = self.lock();
        inner.clear_status();
        let mut err = io::stderr().lock();
        if !inner.err_at_line_start
            || (inner.stdout_tty && inner.stderr_tty && !inner.out_at_line_start)
        {
            let _ = writeln!(err);
        }
        let _ = writeln!(err, "{text}");
        let _ = err.flush();
        inner.err_at_line_start = true;
        if inner.stdout_tty && inner.stderr_tty {
            inner.out_at_line_start = true;
        }
    }

    /// Erases the status line, if shown.
    pub fn clear(&self) {
        self.lock().clear_status();
    }

    /// A sink that writes the task's output through this console.
    pub fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(ConsoleSink {
            console: self.clone(),
        })
    }

    /// Writes task output to stdout or stderr, keeping the status line off it.
    pub fn write(&self, stream: OutStream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.clear_status();
        let ends_line = bytes.last() == Some(&b'\n');
        match stream {
            OutStream::Stdout => {
                if inner.stdout_broken {
                    return;
                }
                let mut out = io::stdout().lock();
                if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
                    inner.stdout_broken = true;
                    tracing::warn!("stdout is closed; the task's further output is discarded");
                }
                inner.out_at_line_start = ends_line;
            }
            OutStream::Stderr => {
                let mut err = io::stderr().lock();
                let _ = err.write_all(bytes).and_then(|()| err.flush());
                inner.err_at_line_start = ends_line;
            }
        }
    }
}

impl Inner {
    fn at_line_boundary(&self) -> bool {
        // When both streams are the same terminal, a partial stdout line
        // would be overwritten by the status line too.
        self.err_at_line_start && (!self.stdout_tty || self.out_at_line_start)
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.status_shown = false;
        }
    }
}

struct ConsoleSink {
    console: Console,
}

impl OutputSink for ConsoleSink {
    fn write(&mut self, stream: OutStream, bytes: &[u8]) {
        self.console.write(stream, bytes);
    }
}
