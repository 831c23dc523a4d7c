//! The framing of a step's output: stdout and stderr writes in order, in
//! one blob that the protocol carries as opaque bytes.
//!
//! Owns [`OutputFrames`]. It must not know where output goes.

use baton_task::wasi::OutStream;

/// A step's output: stdout and stderr writes in order, framed as
/// `[stream: u8][len: u32 LE][bytes]`.
#[derive(Debug, Default)]
pub struct OutputFrames;

impl OutputFrames {
    /// Appends one write.
    pub fn push(buf: &mut Vec<u8>, stream: OutStream, bytes: &[u8]) {
        // A single write is bounded by the guest's memory (< 4 GiB).
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        buf.push(match stream {
            OutStream::Stdout => 1,
            OutStream::Stderr => 2,
        });
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&bytes[..len as usize]);
    }

    /// The writes in a blob, in order. A malformed tail (which only a
    /// hostile peer would send) ends the list.
    pub fn parse(mut bytes: &[u8]) -> Vec<(OutStream, &[u8])> {
        let mut out = Vec::new();
        while bytes.len() >= 5 {
            let stream = match bytes[0] {
                1 => OutStream::Stdout,
                2 => OutStream::Stderr,
                _ => break,
            };
            let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
            let Some(body) = bytes.get(5..5 + len) else {
                break;
            };
            out.push((stream, body));
            bytes = &bytes[5 + len..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_round_trip_and_hostile_tails_end_the_list() {
        let mut buf = Vec::new();
        OutputFrames::push(&mut buf, OutStream::Stdout, b"hello ");
        OutputFrames::push(&mut buf, OutStream::Stderr, b"oops\n");
        OutputFrames::push(&mut buf, OutStream::Stdout, b"");
        let parsed = OutputFrames::parse(&buf);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].1, b"hello ");
        assert!(matches!(parsed[1].0, OutStream::Stderr));
        // Every truncation parses to a prefix of the writes, never panics.
        for cut in 0..buf.len() {
            let p = OutputFrames::parse(&buf[..cut]);
            assert!(p.len() <= 3);
        }
        // A huge announced length or an unknown stream tag ends the list.
        let mut hostile = buf.clone();
        hostile.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, b'x']);
        assert_eq!(OutputFrames::parse(&hostile).len(), 3);
        assert!(OutputFrames::parse(&[9, 1, 0, 0, 0, b'x']).is_empty());
    }
}
