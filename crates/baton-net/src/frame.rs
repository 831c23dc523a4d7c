//! The byte layout of baton's QUIC streams: stream headers and
//! length-prefixed message frames.
//!
//! Owns the wire layout below [`Message::encode`]: every stream starts with
//! a 4-byte header (`b"bN"`, layout version 1, stream kind). The control
//! stream, the output stream and a *unidirectional* bulk stream then carry
//! frames, each a 4-byte big-endian length followed by that many bytes of
//! one encoded [`Message`]. A *bidirectional* bulk stream carries one
//! resumable transfer instead:
//!
//! ```text
//! opener -> peer:  header | transfer id (32 bytes) | total (u64 BE) | bytes [offset, total) | FIN
//! peer -> opener:  offset (u64 BE: bytes of this transfer it already holds) | FIN
//! ```
//!
//! A length (frame or total) is checked against the stream's limit *before*
//! anything is allocated, and buffers grow only as bytes arrive, so a
//! hostile length costs nothing. The functions are generic over tokio's
//! `AsyncRead`/`AsyncWrite` so they can be tested without a network. This
//! module must not know about connections, routing or the store of partial
//! transfers: `conn` decides which stream a message goes on, `bulk` what a
//! transfer id means and where partial bytes are kept.

use std::io;

use baton_proto::{Channel, Limits, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::NetError;

/// The magic bytes that open every baton stream.
pub const STREAM_MAGIC: [u8; 2] = *b"bN";
/// The version of the stream layout.
pub const STREAM_VERSION: u8 = 1;
/// Size of a frame's length prefix in bytes.
pub const LENGTH_PREFIX: usize = 4;

/// The largest frame the 4-byte length prefix can describe.
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

/// Per-channel frame size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest control frame (hello, heartbeats, acks, agreements).
    pub control: usize,
    /// Largest bulk frame (a module or a checkpoint).
    pub bulk: usize,
    /// Largest output frame.
    pub output: usize,
    /// Bounds on texts, chunks and meta inside messages (their
    /// `max_message` is replaced by the channel's limit).
    pub values: Limits,
}

impl Default for FrameLimits {
    /// 1 MiB control, 4 GiB bulk (a checkpoint of a full wasm32 memory,
    /// which does not compress when it is random, must fit; a receiver's
    /// buffer grows only as bytes arrive), 16 MiB output frames; the
    /// protocol's default value bounds.
    fn default() -> FrameLimits {
        FrameLimits {
            control: 1 << 20,
            bulk: MAX_FRAME_LIMIT,
            output: 16 << 20,
            values: Limits::default(),
        }
    }
}

impl FrameLimits {
    /// The frame limit of a channel.
    pub fn max(&self, channel: Channel) -> usize {
        match channel {
            Channel::Control => self.control,
            Channel::Bulk => self.bulk,
            Channel::Output => self.output,
        }
    }

    /// Checks that every limit fits the length prefix and is not zero.
    ///
    /// # Errors
    ///
    /// [`NetError::Config`] naming the bad limit.
    pub fn check(&self) -> Result<(), NetError> {
        for (name, v) in [
            ("control", self.control),
            ("bulk", self.bulk),
            ("output", self.output),
        ] {
            if v == 0 || v > MAX_FRAME_LIMIT {
                return Err(NetError::Config(format!(
                    "{name} frame limit {v} must be between 1 and {MAX_FRAME_LIMIT} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// What a stream carries, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The connection's one bidirectional control stream.
    Control,
    /// A bulk stream: unidirectional with one framed message (small
    /// messages), or bidirectional with one resumable transfer.
    Bulk,
    /// The sender's one long-lived unidirectional output stream.
    Output,
}

impl StreamKind {
    /// The stream kind for a message channel.
    pub fn of(channel: Channel) -> StreamKind {
        match channel {
            Channel::Control => StreamKind::Control,
            Channel::Bulk => StreamKind::Bulk,
            Channel::Output => StreamKind::Output,
        }
    }

    /// The channel whose messages the stream carries.
    pub fn channel(self) -> Channel {
        match self {
            StreamKind::Control => Channel::Control,
            StreamKind::Bulk => Channel::Bulk,
            StreamKind::Output => Channel::Output,
        }
    }

    fn tag(self) -> u8 {
        match self {
            StreamKind::Control => 0,
            StreamKind::Bulk => 1,
            StreamKind::Output => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<StreamKind> {
        match tag {
            0 => Some(StreamKind::Control),
            1 => Some(StreamKind::Bulk),
            2 => Some(StreamKind::Output),
            _ => None,
        }
    }
}

fn stream_err(channel: Channel, source: io::Error) -> NetError {
    NetError::Stream { channel, source }
}

/// Writes a stream header.
///
/// # Errors
///
/// [`NetError::Stream`] if the stream fails.
pub async fn write_header<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: StreamKind,
) -> Result<(), NetError> {
    let header = [STREAM_MAGIC[0], STREAM_MAGIC[1], STREAM_VERSION, kind.tag()];
    w.write_all(&header)
        .await
        .map_err(|e| stream_err(kind.channel(), e))
}

/// Reads a stream header. `channel` only labels a stream failure (the
/// kind is not known before the header).
///
/// # Errors
///
/// [`NetError::Protocol`] for bad magic, version or kind;
/// [`NetError::Stream`] if the stream fails or ends first.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    channel: Channel,
) -> Result<StreamKind, NetError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)
        .await
        .map_err(|e| stream_err(channel, e))?;
    if header[..2] != STREAM_MAGIC {
        return Err(NetError::Protocol(
            "stream does not start with a baton header".into(),
        ));
    }
    if header[2] != STREAM_VERSION {
        return Err(NetError::Protocol(format!(
            "stream layout version {} (this build speaks {STREAM_VERSION})",
            header[2]
        )));
    }
    StreamKind::from_tag(header[3])
        .ok_or_else(|| NetError::Protocol(format!("unknown stream kind {}", header[3])))
}

/// Writes one frame: the length of `bytes`, then `bytes`.
///
/// # Errors
///
/// [`NetError::FrameTooLarge`] if `bytes` exceeds `max` (nothing is
/// written); [`NetError::Stream`] if the stream fails.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    channel: Channel,
    bytes: &[u8],
    max: usize,
) -> Result<(), NetError> {
    if bytes.len() > max.min(MAX_FRAME_LIMIT) {
        return Err(NetError::FrameTooLarge {
            channel,
            len: bytes.len() as u64,
            max,
        });
    }
    let len = (bytes.len() as u32).to_be_bytes();
    w.write_all(&len)
        .await
        .map_err(|e| stream_err(channel, e))?;
    w.write_all(bytes).await.map_err(|e| stream_err(channel, e))
}

/// Reads one frame's bytes, or `None` if the stream ends cleanly before a
/// length prefix.
///
/// # Errors
///
/// [`NetError::FrameTooLarge`] if the announced length exceeds `max`
/// (checked before allocating); [`NetError::Stream`] if the stream fails or
/// ends inside a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    channel: Channel,
    max: usize,
) -> Result<Option<Vec<u8>>, NetError> {
    let mut len = [0u8; LENGTH_PREFIX];
    let mut got = 0;
    while got < LENGTH_PREFIX {
        let n = r
            .read(&mut len[got..])
            .await
            .map_err(|e| stream_err(channel, e))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(stream_err(
                channel,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a length prefix",
                ),
            ));
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(NetError::FrameTooLarge {
            channel,
            len: len as u64,
            max,
        });
    }
    // Grow with the data, not with the announced length.
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    let read = r
        .take(len as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| stream_err(channel, e))?;
    if read != len {
        return Err(stream_err(
            channel,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended after {read} of a {len}-byte frame"),
            ),
        ));
    }
    Ok(Some(buf))
}

/// Size of a transfer id on a resumable bulk stream (a BLAKE3 hash).
pub const TRANSFER_ID_LEN: usize = 32;

/// Writes the opening of a resumable bulk stream after its header: the
/// transfer id and the total length of the encoded message.
///
/// # Errors
///
/// [`NetError::Stream`] if the stream fails.
pub async fn write_bulk_open<W: AsyncWrite + Unpin>(
    w: &mut W,
    id: &[u8; TRANSFER_ID_LEN],
    total: u64,
) -> Result<(), NetError> {
    let mut open = [0u8; TRANSFER_ID_LEN + 8];
    open[..TRANSFER_ID_LEN].copy_from_slice(id);
    open[TRANSFER_ID_LEN..].copy_from_slice(&total.to_be_bytes());
    w.write_all(&open)
        .await
        .map_err(|e| stream_err(Channel::Bulk, e))
}

/// Reads the opening of a resumable bulk stream (after its header):
/// `(transfer id, total length)`.
///
/// # Errors
///
/// [`NetError::FrameTooLarge`] if the total exceeds `max` (checked before
/// the caller allocates anything); [`NetError::Protocol`] for a zero total
/// (no message encodes to nothing); [`NetError::Stream`] if the stream
/// fails or ends first.
pub async fn read_bulk_open<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<([u8; TRANSFER_ID_LEN], u64), NetError> {
    let mut open = [0u8; TRANSFER_ID_LEN + 8];
    r.read_exact(&mut open)
        .await
        .map_err(|e| stream_err(Channel::Bulk, e))?;
    let mut id = [0u8; TRANSFER_ID_LEN];
    id.copy_from_slice(&open[..TRANSFER_ID_LEN]);
    let mut total = [0u8; 8];
    total.copy_from_slice(&open[TRANSFER_ID_LEN..]);
    let total = u64::from_be_bytes(total);
    if total > max.min(MAX_FRAME_LIMIT) as u64 {
        return Err(NetError::FrameTooLarge {
            channel: Channel::Bulk,
            len: total,
            max,
        });
    }
    if total == 0 {
        return Err(NetError::Protocol(
            "a bulk transfer announced zero bytes".into(),
        ));
    }
    Ok((id, total))
}

/// Writes the answer to a resumable bulk stream's opening: how many bytes
/// of the transfer the receiver already holds.
///
/// # Errors
///
/// [`NetError::Stream`] if the stream fails.
pub async fn write_resume_offset<W: AsyncWrite + Unpin>(
    w: &mut W,
    offset: u64,
) -> Result<(), NetError> {
    w.write_all(&offset.to_be_bytes())
        .await
        .map_err(|e| stream_err(Channel::Bulk, e))
}

/// Reads the answer to a resumable bulk stream's opening, for a transfer of
/// `total` bytes.
///
/// # Errors
///
/// [`NetError::Protocol`] if the offset exceeds `total`;
/// [`NetError::Stream`] if the stream fails or ends first.
pub async fn read_resume_offset<R: AsyncRead + Unpin>(
    r: &mut R,
    total: u64,
) -> Result<u64, NetError> {
    let mut offset = [0u8; 8];
    r.read_exact(&mut offset)
        .await
        .map_err(|e| stream_err(Channel::Bulk, e))?;
    let offset = u64::from_be_bytes(offset);
    if offset > total {
        return Err(NetError::Protocol(format!(
            "the peer claims to hold {offset} bytes of a {total}-byte bulk transfer"
        )));
    }
    Ok(offset)
}

/// Decodes a frame read from a `channel` stream and checks that the message
/// belongs on that channel.
///
/// # Errors
///
/// [`NetError::Decode`] if the bytes are not a valid message;
/// [`NetError::WrongChannel`] if the message belongs on another channel.
pub fn decode(channel: Channel, bytes: &[u8], limits: &FrameLimits) -> Result<Message, NetError> {
    let values = Limits {
        max_message: limits.max(channel),
        ..limits.values
    };
    let msg =
        Message::decode(bytes, &values).map_err(|source| NetError::Decode { channel, source })?;
    if msg.channel() != channel {
        return Err(NetError::WrongChannel {
            kind: msg.kind(),
            expected: msg.channel(),
            got: channel,
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::message::Goodbye;
    use baton_proto::SessionId;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let msg = Message::Goodbye(Goodbye {
            session: SessionId(7),
        });
        write_header(&mut a, StreamKind::Control).await.unwrap();
        write_frame(&mut a, Channel::Control, &msg.encode(), 1024)
            .await
            .unwrap();
        drop(a);
        assert_eq!(
            read_header(&mut b, Channel::Control).await.unwrap(),
            StreamKind::Control
        );
        let bytes = read_frame(&mut b, Channel::Control, 1024)
            .await
            .unwrap()
            .unwrap();
        let limits = FrameLimits::default();
        assert_eq!(decode(Channel::Control, &bytes, &limits).unwrap(), msg);
        assert!(read_frame(&mut b, Channel::Control, 1024)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn oversize_prefix_is_refused_before_reading() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b, Channel::Bulk, 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::FrameTooLarge { len, max, .. } if len == u32::MAX as u64 && max == 1 << 20),
            "{err}"
        );
        assert!(err.is_peer_violation());
    }

    #[tokio::test]
    async fn truncated_frame_and_garbage_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"abc").await.unwrap();
        drop(a);
        let err = read_frame(&mut b, Channel::Control, 100).await.unwrap_err();
        assert!(err.to_string().contains("3 of a 10-byte frame"), "{err}");

        let err = decode(Channel::Control, b"garbage!", &FrameLimits::default()).unwrap_err();
        assert!(matches!(err, NetError::Decode { .. }), "{err}");
        assert!(err.is_peer_violation());
    }

    #[tokio::test]
    async fn a_bad_header_is_a_protocol_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"HTTP").await.unwrap();
        let err = read_header(&mut b, Channel::Control).await.unwrap_err();
        assert!(matches!(err, NetError::Protocol(_)), "{err}");
    }

    #[tokio::test]
    async fn a_bulk_opening_round_trips_and_hostile_values_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let id = [7u8; TRANSFER_ID_LEN];
        write_bulk_open(&mut a, &id, 1000).await.unwrap();
        assert_eq!(read_bulk_open(&mut b, 1000).await.unwrap(), (id, 1000));

        write_bulk_open(&mut a, &id, u64::MAX).await.unwrap();
        let err = read_bulk_open(&mut b, 1000).await.unwrap_err();
        assert!(
            matches!(
                err,
                NetError::FrameTooLarge {
                    len: u64::MAX,
                    max: 1000,
                    ..
                }
            ),
            "{err}"
        );
        write_bulk_open(&mut a, &id, 0).await.unwrap();
        let err = read_bulk_open(&mut b, 1000).await.unwrap_err();
        assert!(err.is_peer_violation(), "{err}");

        write_resume_offset(&mut a, 10).await.unwrap();
        assert_eq!(read_resume_offset(&mut b, 10).await.unwrap(), 10);
        write_resume_offset(&mut a, 11).await.unwrap();
        let err = read_resume_offset(&mut b, 10).await.unwrap_err();
        assert!(err.is_peer_violation(), "{err}");

        // A truncated opening is a stream failure, not a hang.
        a.write_all(&[1, 2, 3]).await.unwrap();
        drop(a);
        let err = read_bulk_open(&mut b, 1000).await.unwrap_err();
        assert!(matches!(err, NetError::Stream { .. }), "{err}");
    }

    #[test]
    fn a_message_on_the_wrong_channel_is_refused() {
        let msg = Message::Goodbye(Goodbye {
            session: SessionId(1),
        });
        let err = decode(Channel::Bulk, &msg.encode(), &FrameLimits::default()).unwrap_err();
        assert!(matches!(err, NetError::WrongChannel { .. }), "{err}");
    }
}
