//! OpenAI-style JSON errors: `{"error": {"message", "type", "param", "code"}}` with the right
//! HTTP status.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lloom_core::U256;
use serde_json::json;

use crate::error::Error;

/// Retry-after of a 503 for a model whose executors are gone for now: about the time the
/// client takes to fetch a fresh directory (its TTL, 5 s by default).
const MODEL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The header in which OpenAI's SDKs look first for the wait, in milliseconds (`Retry-After`
/// holds whole seconds only).
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// An error answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// The offending parameter.
    pub param: Option<&'static str>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
    /// When to ask again: `Retry-After` (whole seconds, rounded up) and `retry-after-ms`.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// A 400 for an invalid parameter.
    pub fn invalid(message: &str, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.to_owned(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    /// A 429 for a gateway already answering `limit` completions.
    pub fn gateway_busy(limit: usize) -> Self {
        let mut api = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "gateway_busy",
            format!("the gateway is answering {limit} completions already; retry shortly"),
        );
        api.retry_after = Some(Duration::from_secs(1));
        api
    }

    /// A 429 for an API key over its requests or tokens per minute.
    pub fn key_rate_limited(key_name: &str, retry_after: Duration) -> Self {
        let mut api = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            format!(
                "the API key `{key_name}` is over its rate limit; retry after {}",
                crate::wait_text::wait_text(retry_after)
            ),
        );
        api.retry_after = Some(retry_after);
        api
    }

    /// A 402 for an API key that has spent its budget (not a 429: SDKs would retry a 429 at
    /// once). With a budget period, `reset` says which and when the next begins (unix
    /// seconds), and `Retry-After` the seconds until then from `now`.
    pub fn budget_spent(
        key_name: &str,
        spent: U256,
        budget: U256,
        reset: Option<(super::BudgetPeriod, u64)>,
        now: u64,
    ) -> Self {
        let (kind, whole_again) = match reset {
            Some((period, at)) => (
                format!("{period} "),
                format!("; it is whole again at {}", super::period::rfc3339(at)),
            ),
            None => (String::new(), String::new()),
        };
        let mut api = Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "insufficient_quota",
            format!(
                "the API key `{key_name}` has spent {spent} wei of its {kind}budget of {budget} wei{whole_again}"
            ),
        );
        api.retry_after = reset.map(|(_, at)| Duration::from_secs(at.saturating_sub(now)));
        api
    }

    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self { status, message, kind, param: None, code: Some(code), retry_after: None }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            // Its executors are gone for now: worth asking again (SDKs retry a 503 by themselves).
            Error::NoExecutor { last_offered_secs: Some(_), .. } => {
                let mut api = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "model_unavailable",
                    message,
                );
                api.retry_after = Some(MODEL_RETRY_AFTER);
                api
            }
            Error::NoExecutor { .. } => {
                let mut api = Self::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    message,
                );
                api.param = Some("model");
                api
            }
            Error::InvalidRequest(_) => Self::invalid(&message, None),
            Error::OutsideLimits { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no_offer_within_limits",
                message,
            ),
            Error::ContextExceeded { .. } => {
                // OpenAI's own code, which SDK users check to shorten a conversation.
                let mut api = Self::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "context_length_exceeded",
                    message,
                );
                api.param = Some("messages");
                api
            }
            Error::AllBusy { retry_after } => {
                let mut api = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "all_executors_busy",
                    message,
                );
                api.retry_after = Some(retry_after);
                api
            }
            Error::DeadlineExceeded(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "deadline_exceeded",
                message,
            ),
            Error::Refused { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "refused_by_executor",
                message,
            ),
            Error::AllFailed { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "api_error", "no_verified_answer", message)
            }
            Error::NoValidator(_) | Error::ValidatorRefused { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "network_unavailable",
                message,
            ),
            _ => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "internal_error", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(millis.div_ceil(1_000)));
            headers.insert(RETRY_AFTER_MS, HeaderValue::from(millis));
        }
        response
    }
}
