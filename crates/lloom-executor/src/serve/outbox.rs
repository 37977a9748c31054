//! Frames waiting to be written: frames that are ready together (the last chunk and the final
//! response of a short answer, a chunk and its checkpoint) leave in one write, so they cross
//! the connection as one multiplexer frame, one encrypted frame and one TCP segment.

use std::time::Duration;

use futures::{AsyncWrite, AsyncWriteExt};
use lloom_core::wire::encode_frame;
use lloom_core::{WireLimits, WireMessage};

/// Encoded frames not yet written.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    bytes: Vec<u8>,
}

impl Outbox {
    /// Encodes `message` (refusing one over the limits) and queues it.
    pub(crate) fn push(
        &mut self,
        message: &WireMessage,
        limits: &WireLimits,
    ) -> lloom_core::Result<()> {
        let frame = encode_frame(message, limits)?;
        self.bytes.extend_from_slice(&frame);
        Ok(())
    }

    /// Writes every queued frame and flushes; a peer that does not take them within `timeout`
    /// is cut off with a timeout error.
    pub(crate) async fn flush<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        timeout: Duration,
    ) -> lloom_core::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let write = async {
            stream.write_all(&self.bytes).await?;
            stream.flush().await
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| lloom_core::Error::Timeout(timeout))??;
        self.bytes.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lloom_core::StreamChunk;
    use lloom_core::wire::read_frame;

    fn chunk(index: u32, text: &str) -> WireMessage {
        WireMessage::Chunk(StreamChunk { index, text: text.into() })
    }

    #[tokio::test]
    async fn queued_frames_leave_in_one_write_and_decode_in_order() {
        let limits = WireLimits::default();
        let mut outbox = Outbox::default();
        outbox.push(&chunk(0, "Paris"), &limits).unwrap();
        outbox.push(&chunk(1, "."), &limits).unwrap();
        let mut written = futures::io::Cursor::new(Vec::new());
        outbox.flush(&mut written, Duration::from_secs(1)).await.unwrap();
        outbox.flush(&mut written, Duration::from_secs(1)).await.unwrap(); // nothing left
        let mut reader = futures::io::Cursor::new(written.into_inner());
        for (index, text) in [(0, "Paris"), (1, ".")] {
            let frame = read_frame(&mut reader, &limits).await.unwrap();
            assert_eq!(frame, Some(chunk(index, text)));
        }
        assert_eq!(read_frame(&mut reader, &limits).await.unwrap(), None);
    }

    #[test]
    fn an_oversized_frame_is_refused_and_not_queued() {
        let limits = WireLimits { max_frame_bytes: 16, ..WireLimits::default() };
        let mut outbox = Outbox::default();
        assert!(outbox.push(&chunk(0, &"x".repeat(64)), &limits).is_err());
        assert!(outbox.bytes.is_empty());
    }
}
