//! A request's own routing choices, in the extra `lloom` field of a chat completion
//! (`extra_body={"lloom": {...}}` in OpenAI's SDKs): the strategy, price ceilings in wei and
//! a minimum context, as `lloom-client chat` takes them on its command line.
//!
//! ```json
//! {"lloom": {"strategy": "cheapest", "max_price": "5000", "min_context": 4096}}
//! ```
//!
//! `max_price` caps both prices; `max_price_per_input_token` and
//! `max_price_per_output_token` cap one each and win over it. Prices are whole wei, as a JSON
//! integer or a decimal string (wei overflow JSON's safe integers). An unknown option is
//! refused, so a misspelt ceiling is never silently ignored.

use lloom_core::U256;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::client::ChatRequest;
use crate::routing::Strategy;

/// The request field that holds the options.
const FIELD: &str = "lloom";
/// The options there are.
const OPTIONS: [&str; 5] = [
    "strategy",
    "max_price",
    "max_price_per_input_token",
    "max_price_per_output_token",
    "min_context",
];
/// Most decimal digits of a U256.
const MAX_WEI_DIGITS: usize = 78;

/// Applies the `lloom` options (absent or null: none) to `request`.
pub(super) fn apply(options: Option<&Value>, request: &mut ChatRequest) -> Result<(), ApiError> {
    let Some(options) = options.filter(|v| !v.is_null()) else { return Ok(()) };
    let Some(options) = options.as_object() else {
        return Err(invalid("`lloom` must be an object"));
    };
    if let Some(unknown) = options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        let known = OPTIONS.join(", ");
        return Err(invalid(format!("lloom.{unknown} is not an option; the options are {known}")));
    }
    if let Some(value) = options.get("strategy") {
        request.strategy = Some(strategy(value)?);
    }
    let both = wei(options, "max_price")?;
    let filter = &mut request.filter;
    filter.max_price_per_input_token = wei(options, "max_price_per_input_token")?.or(both);
    filter.max_price_per_output_token = wei(options, "max_price_per_output_token")?.or(both);
    if let Some(value) = options.get("min_context") {
        let tokens = value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            invalid(format!("lloom.min_context must be a number of tokens, not {value}"))
        })?;
        filter.min_context = Some(tokens);
    }
    Ok(())
}

fn strategy(value: &Value) -> Result<Strategy, ApiError> {
    match value.as_str() {
        Some("cheapest") => Ok(Strategy::Cheapest),
        Some("fastest") => Ok(Strategy::Fastest),
        Some("balanced") => Ok(Strategy::Balanced),
        _ => Err(invalid(format!(
            "lloom.strategy must be \"cheapest\", \"fastest\" or \"balanced\", not {value}"
        ))),
    }
}

/// The price at `key` in whole wei, if it is there.
fn wei(options: &Map<String, Value>, key: &str) -> Result<Option<U256>, ApiError> {
    let Some(value) = options.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    let digits = match value {
        Value::Number(n) if n.is_u64() => return Ok(n.as_u64().map(U256::from)),
        Value::String(s) if !s.is_empty() && s.len() <= MAX_WEI_DIGITS => s.as_str(),
        _ => "",
    };
    if digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(price) = U256::from_str_radix(digits, 10)
        && !digits.is_empty()
    {
        return Ok(Some(price));
    }
    Err(invalid(format!(
        "lloom.{key} must be a whole number of wei (a JSON integer or a decimal string), not \
         {value}"
    )))
}

fn invalid(message: impl AsRef<str>) -> ApiError {
    ApiError::invalid(message.as_ref(), Some(FIELD))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn applied(options: &Value) -> Result<ChatRequest, ApiError> {
        let mut request = ChatRequest::user("m", "hi");
        apply(Some(options), &mut request).map(|()| request)
    }

    #[test]
    fn no_options_change_nothing() {
        let request = applied(&Value::Null).unwrap();
        assert_eq!(request.strategy, None);
        assert_eq!(request.filter, crate::routing::RouteFilter::default());
        assert_eq!(applied(&json!({})).unwrap().strategy, None);
    }

    #[test]
    fn options_set_the_strategy_the_ceilings_and_the_context() {
        let request = applied(&json!({
            "strategy": "cheapest",
            "max_price": "1000000000000000000000",
            "max_price_per_output_token": 7,
            "min_context": 4096,
        }))
        .unwrap();
        assert_eq!(request.strategy, Some(Strategy::Cheapest));
        let filter = request.filter;
        assert_eq!(filter.max_price_per_input_token, Some(U256::from(10u128.pow(21))));
        assert_eq!(filter.max_price_per_output_token, Some(U256::from(7)), "the specific wins");
        assert_eq!(filter.min_context, Some(4096));
        assert_eq!(
            applied(&json!({"strategy": "fastest"})).unwrap().strategy,
            Some(Strategy::Fastest)
        );
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        for (options, message) in [
            (json!("cheapest"), "`lloom` must be an object"),
            (json!({"max_prize": 5}), "lloom.max_prize is not an option; the options are strategy"),
            (json!({"strategy": "random"}), "lloom.strategy must be \"cheapest\""),
            (json!({"max_price": -1}), "lloom.max_price must be a whole number of wei"),
            (json!({"max_price": 1.5}), "lloom.max_price must be a whole number of wei"),
            (json!({"max_price": "0x10"}), "lloom.max_price must be a whole number of wei"),
            (json!({"max_price": ""}), "lloom.max_price must be a whole number of wei"),
            (json!({"max_price": "9".repeat(79)}), "lloom.max_price must be a whole number"),
            (json!({"max_price_per_input_token": "1e3"}), "lloom.max_price_per_input_token must"),
            (json!({"min_context": 5_000_000_000u64}), "lloom.min_context must be a number"),
            (json!({"min_context": "4096"}), "lloom.min_context must be a number"),
        ] {
            let err = applied(&options).unwrap_err();
            assert!(err.message.contains(message), "{options}: {}", err.message);
            assert_eq!(err.param, Some(FIELD));
        }
        // 78 nines overflow a U256 (its largest value has 78 digits and starts with 1).
        let overflow = applied(&json!({"max_price": "9".repeat(78)})).unwrap_err();
        assert!(overflow.message.contains("whole number of wei"), "{}", overflow.message);
    }
}
