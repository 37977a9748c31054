//! The memory budget an operator gives the executor: a size (`24GiB`, `512MiB`, `1500000000`)
//! or a share of the memory free at start (`0.8`, `80%`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How much memory models may use on the serving device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryBudget {
    /// A fixed number of bytes.
    Bytes(u64),
    /// A share (0, 1] of the memory free when the executor starts.
    FractionOfFree(f64),
}

impl Default for MemoryBudget {
    /// 90 % of the free memory: room for the rest of the process and the system.
    fn default() -> Self {
        Self::FractionOfFree(0.9)
    }
}

impl MemoryBudget {
    /// The budget in bytes, given the memory free now.
    pub fn resolve(&self, free_bytes: u64) -> u64 {
        match *self {
            Self::Bytes(bytes) => bytes,
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            Self::FractionOfFree(share) => (free_bytes as f64 * share) as u64,
        }
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Bytes(bytes) => write!(f, "{}", format_bytes(bytes)),
            Self::FractionOfFree(share) => write!(f, "{}% of free memory", share * 100.0),
        }
    }
}

/// `1536 MiB`, `3.2 GiB`: sizes for people.
pub fn format_bytes(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    #[allow(clippy::cast_precision_loss)]
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

const UNITS: &[(&str, u64)] = &[
    ("tib", 1 << 40),
    ("gib", 1 << 30),
    ("mib", 1 << 20),
    ("kib", 1 << 10),
    ("tb", 1_000_000_000_000),
    ("gb", 1_000_000_000),
    ("mb", 1_000_000),
    ("kb", 1_000),
    ("t", 1 << 40),
    ("g", 1 << 30),
    ("m", 1 << 20),
    ("k", 1 << 10),
    ("b", 1),
];

impl FromStr for MemoryBudget {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::EngineConfig(format!(
                "memory budget `{text}`: {why} (give a size like 24GiB or 512MiB, or a share of free memory like 0.8 or 80%)"
            ))
        };
        let lower = text.trim().to_ascii_lowercase();
        if let Some(percent) = lower.strip_suffix('%') {
            let value: f64 = percent.trim().parse().map_err(|_| bad("not a number"))?;
            return fraction(value / 100.0).ok_or_else(|| bad("a percentage must be in (0, 100]"));
        }
        let (number, multiplier) = UNITS
            .iter()
            .find_map(|(unit, m)| lower.strip_suffix(unit).map(|n| (n.trim(), *m)))
            .unwrap_or((lower.as_str(), 0));
        if multiplier == 0 {
            // No unit: a whole number is bytes, a decimal is a share.
            if let Ok(bytes) = number.parse::<u64>() {
                return positive_bytes(bytes).ok_or_else(|| bad("must be more than 0"));
            }
            let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
            return fraction(value).ok_or_else(|| bad("a share must be in (0, 1]"));
        }
        let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
        if !value.is_finite() || value <= 0.0 {
            return Err(bad("must be more than 0"));
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let bytes = (value * multiplier as f64) as u64;
        positive_bytes(bytes).ok_or_else(|| bad("must be more than 0"))
    }
}

fn fraction(value: f64) -> Option<MemoryBudget> {
    (value.is_finite() && value > 0.0 && value <= 1.0)
        .then_some(MemoryBudget::FractionOfFree(value))
}

fn positive_bytes(bytes: u64) -> Option<MemoryBudget> {
    (bytes > 0).then_some(MemoryBudget::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_shares_parse() {
        let p = |s: &str| s.parse::<MemoryBudget>().unwrap();
        assert_eq!(p("24GiB"), MemoryBudget::Bytes(24 << 30));
        assert_eq!(p("512 MiB"), MemoryBudget::Bytes(512 << 20));
        assert_eq!(p("1.5g"), MemoryBudget::Bytes(3 << 29));
        assert_eq!(p("2GB"), MemoryBudget::Bytes(2_000_000_000));
        assert_eq!(p("1500000000"), MemoryBudget::Bytes(1_500_000_000));
        assert_eq!(p("0.8"), MemoryBudget::FractionOfFree(0.8));
        assert_eq!(p("80%"), MemoryBudget::FractionOfFree(0.8));
        assert_eq!(p("1.0"), MemoryBudget::FractionOfFree(1.0));
    }

    #[test]
    fn nonsense_is_refused_with_the_accepted_forms() {
        for bad in ["", "lots", "0", "0GiB", "-1GiB", "1.5", "150%", "0%", "NaN", "inf", "12XB"] {
            let err = bad.parse::<MemoryBudget>().unwrap_err().to_string();
            assert!(err.contains("24GiB") && err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn a_share_resolves_against_free_memory() {
        assert_eq!(MemoryBudget::FractionOfFree(0.5).resolve(8 << 30), 4 << 30);
        assert_eq!(MemoryBudget::Bytes(123).resolve(8 << 30), 123);
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(300 << 20), "300 MiB");
    }
}
