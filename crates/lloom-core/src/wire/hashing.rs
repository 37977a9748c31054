//! The two content hashes the signed commitments carry.

use alloy_primitives::{B256, keccak256};

use super::RequestBody;

/// `requestHash`: keccak256 of the postcard encoding of the request body.
///
/// postcard's encoding is deterministic and specified (postcard wire format 1.0), so any
/// implementation can reproduce this hash; the protocol page documents the layout.
pub fn request_hash(body: &RequestBody) -> B256 {
    // Serializing plain data (strings, numbers, vectors) into a Vec cannot fail.
    let bytes = postcard::to_stdvec(body).unwrap_or_default();
    keccak256(bytes)
}

/// `contentHash`: keccak256 of the UTF-8 bytes of the returned text, exactly as streamed.
pub fn content_hash(text: &str) -> B256 {
    keccak256(text.as_bytes())
}
