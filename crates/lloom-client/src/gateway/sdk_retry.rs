//! Whether an HTTP request is an OpenAI SDK's retry: the SDKs count the retries a request has
//! taken in `x-stainless-retry-count` (0 on the first try), and retry a 429 only after waiting
//! out its `retry-after-ms`. Such a retry has waited out what a busy executor asked of it.

use axum::http::HeaderMap;

/// The header in which OpenAI's SDKs count the retries a request has taken.
const SDK_RETRY_COUNT: &str = "x-stainless-retry-count";

/// Whether `headers` say the request is a retry (a count above 0; anything else is not).
pub(super) fn is_sdk_retry(headers: &HeaderMap) -> bool {
    headers
        .get(SDK_RETRY_COUNT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SDK_RETRY_COUNT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn only_a_count_above_zero_is_a_retry() {
        assert!(is_sdk_retry(&with("1")));
        assert!(is_sdk_retry(&with(" 2 ")));
        assert!(!is_sdk_retry(&with("0")), "the first try");
        assert!(!is_sdk_retry(&HeaderMap::new()), "no SDK");
        for bad in ["", "-1", "one", "99999999999", "1.5"] {
            assert!(!is_sdk_retry(&with(bad)), "{bad:?}");
        }
    }
}
