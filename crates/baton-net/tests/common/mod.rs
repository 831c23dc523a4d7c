//! What the transport's end-to-end tests share: a loopback address and
//! bounded waits. Every wait here ends by itself.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::time::timeout;

/// The bound on every single wait in these tests.
pub const BOUND: Duration = Duration::from_secs(30);

/// Loopback, any free port.
pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Awaits `fut`, failing the test after [`BOUND`].
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `cond` every 2 ms until it holds, at most [`BOUND`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
