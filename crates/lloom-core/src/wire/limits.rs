//! Hard limits on everything a peer can make us decode or hold.

/// Size limits applied to every decoded wire message.
///
/// The frame limit is checked on the length prefix *before* any buffer is allocated; the
/// per-field limits are checked right after decoding, before a message is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame (version byte + payload) accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Most chat messages in one request.
    pub max_messages: usize,
    /// Most stop sequences in one request.
    pub max_stop_sequences: usize,
    /// Longest stop sequence, in bytes.
    pub max_stop_bytes: usize,
    /// Longest model name, in bytes.
    pub max_model_bytes: usize,
    /// Longest text of one stream chunk, in bytes.
    pub max_chunk_bytes: usize,
    /// Longest error message, in bytes.
    pub max_error_message_bytes: usize,
    /// Longest JSON Schema an answer may be asked to follow, in bytes (the executor compiles
    /// it into a grammar before any work starts).
    pub max_schema_bytes: usize,
}

impl WireLimits {
    /// Default largest frame: 1 MiB.
    pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1024 * 1024;
}

impl Default for WireLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_messages: 256,
            max_stop_sequences: 8,
            max_stop_bytes: 64,
            max_model_bytes: 256,
            max_chunk_bytes: 64 * 1024,
            max_error_message_bytes: 1024,
            max_schema_bytes: 32 * 1024,
        }
    }
}
