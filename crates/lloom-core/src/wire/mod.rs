//! Wire messages and their bounded, versioned binary codec.

mod codec;
mod digested;
mod error_code;
mod hashing;
mod limits;
mod messages;

pub use codec::{
    FRAME_HEADER_BYTES, WIRE_VERSION, decode_frame, decode_payload, encode_frame, read_frame,
    write_frame,
};
pub use digested::{DigestedRequest, RequestWithDigest};
pub use error_code::ErrorCode;
pub use hashing::{content_hash, request_hash};
pub use limits::WireLimits;
pub use messages::{
    ChatMessage, OutputFormat, RequestBody, Role, SamplingParams, SignedError, SignedRequest,
    SignedResponse, StreamChunk, WireMessage,
};
