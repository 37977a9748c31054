//! The element type of the KV cache: what one cached key or value costs, and its name on the
//! command line and in the configuration file (llama.cpp's `--cache-type-k` names).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Element type of the KV cache (keys and values alike).
///
/// A quantized cache holds about twice (`q8_0`) or three and a half times (`q4_0`) the tokens
/// of `f16` in the same memory, so more sequences or longer contexts fit a budget; llama.cpp
/// computes attention over it with flash attention, which a quantized value cache requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// 16-bit floats (llama.cpp's default).
    #[default]
    F16,
    /// 8-bit blocks (34 bytes per 32 values).
    Q8_0,
    /// 4-bit blocks (18 bytes per 32 values).
    Q4_0,
}

impl KvType {
    /// Every type, in the order the help text lists them.
    pub const ALL: [Self; 3] = [Self::F16, Self::Q8_0, Self::Q4_0];

    /// Values per quantized block: a quantized cache needs heads whose size is a multiple.
    pub const BLOCK: u64 = 32;

    /// Bytes per 32 elements.
    pub(crate) fn bytes_per_32(self) -> u64 {
        match self {
            Self::F16 => 64,
            Self::Q8_0 => 34,
            Self::Q4_0 => 18,
        }
    }

    /// Whether values are stored in quantized blocks.
    pub fn is_quantized(self) -> bool {
        self != Self::F16
    }

    /// The capability an offer served with this cache announces (`kv-f16`, `kv-q8_0`,
    /// `kv-q4_0`).
    pub fn capability(self) -> String {
        format!("kv-{}", self.name())
    }

    /// The name llama.cpp gives it (`f16`, `q8_0`, `q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|t| t.name() == wanted).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
            Error::EngineConfig(format!(
                "unknown KV cache type {text:?}; choose one of {}",
                names.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for kv in KvType::ALL {
            assert_eq!(kv.name().parse::<KvType>().unwrap(), kv);
            assert_eq!(kv.to_string().to_uppercase().parse::<KvType>().unwrap(), kv);
        }
        for bad in ["", "q8", "f32", "q8_0 x"] {
            let message = bad.parse::<KvType>().unwrap_err().to_string();
            assert!(message.contains("f16, q8_0, q4_0"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn quantized_types_cost_less_than_f16() {
        assert!(!KvType::F16.is_quantized());
        assert!(KvType::Q8_0.is_quantized() && KvType::Q4_0.is_quantized());
        assert!(KvType::Q4_0.bytes_per_32() < KvType::Q8_0.bytes_per_32());
        assert!(KvType::Q8_0.bytes_per_32() < KvType::F16.bytes_per_32());
    }
}
