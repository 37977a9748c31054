//! The `finishReason` codes of a [`ResponseCommitment`](super::ResponseCommitment).

use crate::error::{Error, Result};

/// Why generation ended, as signed in `ResponseCommitment.finishReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum FinishReason {
    /// A stop sequence or the end-of-sequence token was produced.
    Stop = 0,
    /// `maxOutputTokens` was reached.
    Length = 1,
    /// The client cancelled or went away; the commitment covers what was generated.
    Cancelled = 2,
    /// The backend failed; the commitment covers what was generated before the failure.
    Error = 3,
    /// Not finished: a mid-stream checkpoint covering the content streamed so far.
    Partial = 4,
}

impl FinishReason {
    /// The on-chain `uint8` code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses an on-chain code.
    pub fn from_code(code: u8) -> Result<Self> {
        Ok(match code {
            0 => Self::Stop,
            1 => Self::Length,
            2 => Self::Cancelled,
            3 => Self::Error,
            4 => Self::Partial,
            other => return Err(Error::InvalidMessage(format!("unknown finish reason {other}"))),
        })
    }

    /// The OpenAI-style name (`stop`, `length`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
            Self::Partial => "partial",
        }
    }
}
