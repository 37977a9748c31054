//! Amounts on the command line: wei (`1500`) or ether (`0.25eth`).

use alloy::primitives::U256;

use crate::error::{Error, Result};

/// Parses `"1500"` (wei) or `"1.5eth"` (ether, up to 18 decimals).
pub fn parse_amount(text: &str) -> Result<U256> {
    let bad =
        || Error::Chain(format!("`{text}` is not an amount: use wei (1500) or ether (0.5eth)"));
    let text = text.trim();
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let Some(ether) = text.strip_suffix("eth") else {
        if text.is_empty() || !digits(text) {
            return Err(bad());
        }
        return text.parse::<U256>().map_err(|_| bad());
    };
    let (whole, fraction) = ether.split_once('.').unwrap_or((ether, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 18 {
        return Err(bad());
    }
    if !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let whole =
        if whole.is_empty() { U256::ZERO } else { whole.parse::<U256>().map_err(|_| bad())? };
    let scaled = format!("{fraction:0<18}");
    let fraction = scaled.parse::<U256>().map_err(|_| bad())?;
    let unit = U256::from(10u64).pow(U256::from(18u64));
    whole.checked_mul(unit).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)
}

/// Formats wei as ether with up to 18 decimals (`1.5 ETH`).
pub fn format_ether(wei: U256) -> String {
    let unit = U256::from(10u64).pow(U256::from(18u64));
    let (whole, fraction) = (wei / unit, wei % unit);
    if fraction.is_zero() {
        return format!("{whole} ETH");
    }
    let fraction = format!("{:0>18}", fraction.to_string());
    format!("{whole}.{} ETH", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wei_and_ether_amounts() {
        assert_eq!(parse_amount("1500").unwrap(), U256::from(1500));
        assert_eq!(parse_amount("1.5eth").unwrap(), U256::from(1_500_000_000_000_000_000u64));
        assert_eq!(parse_amount(".25eth").unwrap(), U256::from(250_000_000_000_000_000u64));
        assert_eq!(parse_amount("2eth").unwrap(), U256::from(2_000_000_000_000_000_000u64));
        for bad in ["", "eth", "-1", "1.2.3eth", "0.0000000000000000001eth", "ten", "1e18"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(format_ether(U256::from(1_500_000_000_000_000_000u64)), "1.5 ETH");
        assert_eq!(format_ether(U256::from(30_000)), "0.00000000000003 ETH");
        assert_eq!(format_ether(U256::ZERO), "0 ETH");
    }
}
