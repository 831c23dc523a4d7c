//! Parsing of the command line's BYTES and DURATION values (DESIGN §12):
//! `512`, `64KiB`, `256MiB`, `4GiB`; `250ms`, `2s`, `1m`, `1h`.
//!
//! Owns only text-to-number conversion; what the numbers mean is decided by
//! the commands that use them.

use std::time::Duration;

/// A BYTES or DURATION value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// Not a number with a known suffix.
    #[error("`{0}` is not a size: write a number of bytes, optionally with KiB, MiB or GiB (e.g. 512MiB)")]
    Bytes(String),
    /// Not a number with a known suffix.
    #[error("`{0}` is not a duration: write a number with ms, s, m or h (e.g. 250ms, 2s)")]
    Duration(String),
}

fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n = s[..digits].parse().ok()?;
    Some((n, s[digits..].trim()))
}

/// Parses a BYTES value.
///
/// # Errors
///
/// [`UnitError::Bytes`] if it is not a number with an optional KiB/MiB/GiB
/// suffix (K/M/G and KB/MB/GB are read as the binary units too), or overflows.
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Bytes(s.to_string());
    let (n, suffix) = split_number(s.trim()).ok_or_else(err)?;
    let mult: u64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Parses a DURATION value.
///
/// # Errors
///
/// [`UnitError::Duration`] if it is not a number followed by ms, s, m or h.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration(s.to_string());
    let (n, suffix) = split_number(s.trim()).ok_or_else(err)?;
    let ms: u64 = match suffix {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(err()),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(err)
}

/// Formats a byte count for people: `48.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("2M").unwrap(), 2 << 20);
        for bad in [
            "",
            "MiB",
            "12 parsecs",
            "-1",
            "99999999999999999999GiB",
            "1.5GiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "2", "s", "1.5s", "3 fortnights"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(48 << 20), "48.0 MiB");
    }
}
