//! The `code` values of a signed [`ErrorCommitment`](crate::ErrorCommitment).

/// Why an executor refused or aborted a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The queue is full; retry after `retryAfterMillis`.
    Busy,
    /// The client exceeded its rate limit; retry after `retryAfterMillis`.
    RateLimited,
    /// The request failed a verification rule or is malformed.
    InvalidRequest,
    /// The executor does not serve the requested model.
    UnknownModel,
    /// The offered price is below the executor's announced price.
    PriceTooLow,
    /// The deadline passed before work could start.
    DeadlineExceeded,
    /// The nonce was already used.
    NonceReplayed,
    /// The model backend failed.
    BackendFailure,
    /// Any other internal failure.
    Internal,
    /// The client's escrow on the settlement contract is below what this executor requires.
    InsufficientEscrow,
    /// The prompt plus the requested output tokens do not fit this executor's context; an
    /// executor with a longer context may serve it, a shorter prompt will.
    ContextExceeded,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// Every code this version knows, in the order of their values.
    pub const KNOWN: [Self; 11] = [
        Self::Busy,
        Self::RateLimited,
        Self::InvalidRequest,
        Self::UnknownModel,
        Self::PriceTooLow,
        Self::DeadlineExceeded,
        Self::NonceReplayed,
        Self::BackendFailure,
        Self::Internal,
        Self::InsufficientEscrow,
        Self::ContextExceeded,
    ];

    /// A short snake_case name, for metrics and logs (`other` for an unknown code).
    pub fn name(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::RateLimited => "rate_limited",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownModel => "unknown_model",
            Self::PriceTooLow => "price_too_low",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::NonceReplayed => "nonce_replayed",
            Self::BackendFailure => "backend_failure",
            Self::Internal => "internal",
            Self::InsufficientEscrow => "insufficient_escrow",
            Self::ContextExceeded => "context_exceeded",
            Self::Other(_) => "other",
        }
    }

    /// The on-chain/wire `uint16` value.
    pub fn code(self) -> u16 {
        match self {
            Self::Busy => 1,
            Self::RateLimited => 2,
            Self::InvalidRequest => 3,
            Self::UnknownModel => 4,
            Self::PriceTooLow => 5,
            Self::DeadlineExceeded => 6,
            Self::NonceReplayed => 7,
            Self::BackendFailure => 8,
            Self::Internal => 9,
            Self::InsufficientEscrow => 10,
            Self::ContextExceeded => 11,
            Self::Other(c) => c,
        }
    }

    /// Parses a wire value; unknown values map to [`ErrorCode::Other`].
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Self::Busy,
            2 => Self::RateLimited,
            3 => Self::InvalidRequest,
            4 => Self::UnknownModel,
            5 => Self::PriceTooLow,
            6 => Self::DeadlineExceeded,
            7 => Self::NonceReplayed,
            8 => Self::BackendFailure,
            9 => Self::Internal,
            10 => Self::InsufficientEscrow,
            11 => Self::ContextExceeded,
            c => Self::Other(c),
        }
    }

    /// Whether the same request may succeed on another executor or later. A
    /// [`ContextExceeded`](Self::ContextExceeded) request may succeed only on an executor with
    /// a longer context, which the caller has to choose; it is not counted here.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Busy
                | Self::RateLimited
                | Self::BackendFailure
                | Self::Internal
                | Self::NonceReplayed
                | Self::InsufficientEscrow
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_unknown_ones_are_kept() {
        for code in 1..=11 {
            let parsed = ErrorCode::from_code(code);
            assert!(!matches!(parsed, ErrorCode::Other(_)), "{code} is known");
            assert_eq!(parsed.code(), code);
            assert_eq!(ErrorCode::KNOWN.get(usize::from(code) - 1), Some(&parsed));
        }
        let names: std::collections::HashSet<&str> =
            ErrorCode::KNOWN.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::KNOWN.len(), "names are distinct");
        assert!(!names.contains(ErrorCode::Other(12).name()));
        assert_eq!(ErrorCode::from_code(11), ErrorCode::ContextExceeded);
        assert_eq!(ErrorCode::from_code(12), ErrorCode::Other(12));
        assert_eq!(ErrorCode::Other(12).code(), 12);
        // Only a longer context helps: the caller picks such an executor itself.
        assert!(!ErrorCode::ContextExceeded.is_retryable());
        assert!(ErrorCode::Busy.is_retryable());
    }
}
