//! Length-prefixed, versioned frames.
//!
//! ```text
//! frame   = length:u32 big-endian ‖ payload        (length = payload size)
//! payload = version:u8 (= WIRE_VERSION) ‖ postcard(WireMessage)
//! ```
//!
//! The length is checked against [`WireLimits::max_frame_bytes`] before a buffer is allocated,
//! a payload must be consumed exactly (no trailing bytes), and every decoded message passes
//! [`WireMessage::validate`] before it is returned.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{WireLimits, WireMessage};
use crate::error::{Error, Result};

/// The wire format version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Size of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Encodes `msg` as one frame, refusing to produce a frame the receiver would reject.
pub fn encode_frame(msg: &WireMessage, limits: &WireLimits) -> Result<Vec<u8>> {
    msg.validate(limits)?;
    let mut out = vec![0u8; FRAME_HEADER_BYTES];
    out.push(WIRE_VERSION);
    let mut out = postcard::to_extend(msg, out)?;
    let payload_len = out.len() - FRAME_HEADER_BYTES;
    check_len(payload_len as u64, limits)?;
    let len = u32::try_from(payload_len).map_err(|_| too_large(payload_len as u64, limits))?;
    if let Some(header) = out.get_mut(..FRAME_HEADER_BYTES) {
        header.copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

/// Decodes one frame from the front of `buf`; returns the message and the bytes consumed.
pub fn decode_frame(buf: &[u8], limits: &WireLimits) -> Result<(WireMessage, usize)> {
    let header: [u8; FRAME_HEADER_BYTES] = buf
        .get(..FRAME_HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Truncated { expected: FRAME_HEADER_BYTES as u64, got: buf.len() as u64 })?;
    let len = checked_frame_len(u32::from_be_bytes(header), limits)?;
    let end = FRAME_HEADER_BYTES + len;
    let payload = buf
        .get(FRAME_HEADER_BYTES..end)
        .ok_or(Error::Truncated { expected: end as u64, got: buf.len() as u64 })?;
    Ok((decode_payload(payload, limits)?, end))
}

/// Decodes a payload (version byte + postcard body) that has already been delimited.
pub fn decode_payload(payload: &[u8], limits: &WireLimits) -> Result<WireMessage> {
    check_len(payload.len() as u64, limits)?;
    let (&version, body) = payload.split_first().ok_or(Error::Truncated { expected: 1, got: 0 })?;
    if version != WIRE_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let (msg, rest): (WireMessage, _) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(Error::InvalidMessage(format!("{} trailing bytes after message", rest.len())));
    }
    msg.validate(limits)?;
    Ok(msg)
}

/// Reads one frame. Returns `Ok(None)` on a clean end of stream before a new frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: &WireLimits,
) -> Result<Option<WireMessage>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let n = reader.read(header.get_mut(filled..).unwrap_or_default()).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(Error::Truncated {
                expected: FRAME_HEADER_BYTES as u64,
                got: filled as u64,
            });
        }
        filled += n;
    }
    let len = checked_frame_len(u32::from_be_bytes(header), limits)?;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Truncated { expected: len as u64, got: 0 },
        _ => Error::Io(e),
    })?;
    decode_payload(&payload, limits).map(Some)
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &WireMessage,
    limits: &WireLimits,
) -> Result<()> {
    let frame = encode_frame(msg, limits)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// The announced payload length as a `usize`, if it is within the limit.
fn checked_frame_len(len: u32, limits: &WireLimits) -> Result<usize> {
    check_len(u64::from(len), limits)?;
    usize::try_from(len).map_err(|_| too_large(u64::from(len), limits))
}

fn check_len(len: u64, limits: &WireLimits) -> Result<()> {
    if len > u64::from(limits.max_frame_bytes) {
        return Err(too_large(len, limits));
    }
    Ok(())
}

fn too_large(len: u64, limits: &WireLimits) -> Error {
    Error::TooLarge { what: "frame", size: len, limit: u64::from(limits.max_frame_bytes) }
}
