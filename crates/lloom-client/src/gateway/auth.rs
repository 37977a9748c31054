//! API keys for the gateway. The gateway signs requests with the client's key, so whoever can
//! reach it spends that client's funds: with keys configured, every `/v1/*` request must carry
//! `Authorization: Bearer <key>` (what OpenAI SDKs send for `api_key`), or it is answered with
//! a 401 before anything is signed. Keys are kept only as hashes; each has a name that labels
//! its usage in the metrics, and may have a budget: the most it may spend, in wei, over the
//! gateway's life (kept in a [`super::SpendLedger`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lloom_core::chain::parse_amount;
use lloom_core::{B256, U256, keccak256};

use super::GatewayState;
use super::error::ApiError;
use crate::error::{Error, Result};

/// Shortest key accepted: shorter ones can be guessed.
pub const MIN_KEY_CHARS: usize = 16;
/// Longest key accepted.
pub const MAX_KEY_CHARS: usize = 256;
/// Most keys one gateway holds.
pub const MAX_KEYS: usize = 10_000;
/// Longest key name (it becomes a metrics label).
const MAX_NAME_CHARS: usize = 64;

/// The keys a gateway accepts, as hashes, each with its name and perhaps a budget. Empty: no
/// key is asked for.
#[derive(Clone, Default)]
pub struct ApiKeys {
    by_digest: HashMap<B256, Arc<str>>,
    /// Key name → the most it may spend, in wei.
    budgets: HashMap<Arc<str>, U256>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.by_digest.len())
    }
}

/// The name of the key a request was let in with, for the handlers.
#[derive(Clone, Debug)]
pub(super) struct KeyName(pub(super) Arc<str>);

impl ApiKeys {
    /// One key, named `default`.
    pub fn single(key: &str) -> Result<Self> {
        let mut keys = Self::default();
        keys.add("default", key).map_err(Error::ApiKeys)?;
        Ok(keys)
    }

    /// Parses a key file: one key per line, as `NAME KEY BUDGET`, `NAME KEY` or just `KEY`
    /// (named `key-<line>`); blank lines and lines starting with `#` are skipped. Names are
    /// letters, digits, `_`, `-` and `.`; a budget is an amount in wei (`5000000`) or ether
    /// (`0.01eth`).
    pub fn parse(text: &str) -> Result<Self> {
        let mut keys = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = index + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, key, budget) = match fields.as_slice() {
                [key] => (format!("key-{number}"), *key, None),
                [name, key] => ((*name).to_owned(), *key, None),
                [name, key, budget] => ((*name).to_owned(), *key, Some(*budget)),
                _ => {
                    return Err(Error::ApiKeys(format!(
                        "line {number}: expected `NAME KEY BUDGET`, `NAME KEY` or `KEY`, found {} fields",
                        fields.len()
                    )));
                }
            };
            let at_line = |reason: String| Error::ApiKeys(format!("line {number}: {reason}"));
            keys.add(&name, key).map_err(at_line)?;
            if let Some(budget) = budget {
                let budget = parse_amount(budget)
                    .map_err(|e| at_line(format!("the budget of `{name}`: {}", strip_chain(&e))))?;
                keys.budgets.insert(name.as_str().into(), budget);
            }
        }
        if keys.is_empty() {
            return Err(Error::ApiKeys("the key file holds no key".into()));
        }
        Ok(keys)
    }

    /// The keys given to a gateway: `key` (named `default`) and the keys in `file`, together;
    /// empty when neither is given.
    pub fn load(key: Option<&str>, file: Option<&Path>) -> Result<Self> {
        let mut keys = match key {
            Some(key) => Self::single(key)?,
            None => Self::default(),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::ApiKeys(format!("cannot read the key file {}: {e}", path.display()))
            })?;
            let more = Self::parse(&text)
                .map_err(|e| Error::ApiKeys(format!("{}: {}", path.display(), strip(&e))))?;
            keys = keys.merge(more)?;
        }
        Ok(keys)
    }

    /// Adds the keys of `other`, with their budgets; a key or name present in both is refused.
    pub fn merge(mut self, other: Self) -> Result<Self> {
        for (digest, name) in other.by_digest {
            self.insert(digest, name).map_err(Error::ApiKeys)?;
        }
        self.budgets.extend(other.budgets);
        Ok(self)
    }

    /// Gives `budget` to every key that has none of its own.
    pub fn with_default_budget(mut self, budget: U256) -> Self {
        for name in self.by_digest.values() {
            self.budgets.entry(name.clone()).or_insert(budget);
        }
        self
    }

    /// The most the key named `name` may spend, in wei (`None`: no limit).
    pub fn budget(&self, name: &str) -> Option<U256> {
        self.budgets.get(name).copied()
    }

    /// Whether any key has a budget (the gateway then needs a [`super::SpendLedger`]).
    pub fn has_budgets(&self) -> bool {
        !self.budgets.is_empty()
    }

    /// Whether no key is configured (the gateway is open).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether a key of `self` is also one of `other`'s.
    pub fn shares_a_key_with(&self, other: &Self) -> bool {
        self.by_digest.keys().any(|digest| other.by_digest.contains_key(digest))
    }

    /// The keys' names, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.by_digest.values().cloned().collect();
        names.sort();
        names
    }

    fn add(&mut self, name: &str, key: &str) -> std::result::Result<(), String> {
        check_name(name)?;
        check_key(key)?;
        self.insert(keccak256(key.as_bytes()), name.into())
    }

    fn insert(&mut self, digest: B256, name: Arc<str>) -> std::result::Result<(), String> {
        if self.by_digest.len() >= MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        if self.by_digest.contains_key(&digest) {
            return Err(format!("the key named `{name}` is given twice"));
        }
        if self.by_digest.values().any(|n| *n == name) {
            return Err(format!("the name `{name}` is given to two keys"));
        }
        self.by_digest.insert(digest, name);
        Ok(())
    }

    /// Which key `headers` present, or the 401 to answer. An empty set lets every request in,
    /// unnamed.
    pub(super) fn admit(
        &self,
        headers: &HeaderMap,
    ) -> std::result::Result<Option<KeyName>, ApiError> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing API key: send the header `Authorization: Bearer <key>`",
                "missing_api_key",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return Err(unauthorized(
                "the Authorization header must be `Bearer <key>`",
                "invalid_api_key",
            ));
        };
        match self.by_digest.get(&keccak256(token.as_bytes())) {
            Some(name) => Ok(Some(KeyName(name.clone()))),
            None => Err(unauthorized("incorrect API key", "invalid_api_key")),
        }
    }
}

/// An amount's parse error without its `chain:` prefix.
fn strip_chain(error: &lloom_core::Error) -> String {
    match error {
        lloom_core::Error::Chain(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// The reason inside an [`Error::ApiKeys`], so a wrapper does not repeat its prefix.
fn strip(error: &Error) -> String {
    match error {
        Error::ApiKeys(reason) => reason.clone(),
        other => other.to_string(),
    }
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key name `{name}` must be 1 to {MAX_NAME_CHARS} letters, digits, `_`, `-` or `.`"
        ))
    }
}

fn check_key(key: &str) -> std::result::Result<(), String> {
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a key must be printable ASCII without spaces".into());
    }
    if key.len() < MIN_KEY_CHARS || key.len() > MAX_KEY_CHARS {
        return Err(format!(
            "a key must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters (this one has {}); \
             `openssl rand -hex 24` makes a good one",
            key.len()
        ));
    }
    Ok(())
}

fn unauthorized(message: &str, code: &'static str) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_owned(),
        kind: "invalid_request_error",
        param: None,
        code: Some(code),
        retry_after: None,
    }
}

/// Middleware: lets a request in only with one of the gateway's keys.
pub(super) async fn require_key(
    State(state): State<Arc<GatewayState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.config.api_keys.admit(request.headers()) {
        Ok(name) => {
            if let Some(name) = name {
                request.extensions_mut().insert(name);
            }
            next.run(request).await
        }
        Err(error) => refused(&state, error),
    }
}

/// Middleware of `/metrics`: lets a scrape in only with the metrics key, where one is set.
pub(super) async fn require_metrics_key(
    State(state): State<Arc<GatewayState>>,
    request: Request,
    next: Next,
) -> Response {
    match state.config.metrics_keys.admit(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(error) => refused(&state, error),
    }
}

/// The 401 for a request without a key it needs, counted.
fn refused(state: &GatewayState, error: ApiError) -> Response {
    state.counters.count_unauthorized();
    let mut response = error.into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123";

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_key_file_names_its_keys_and_skips_comments() {
        let text = format!("# team keys\n\nalice {KEY}\n  {KEY}-bob  \n");
        let keys = ApiKeys::parse(&text).unwrap();
        assert_eq!(keys.len(), 2);
        let names: Vec<String> = keys.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["alice", "key-4"]);
        let admitted = keys.admit(&bearer(&format!("Bearer {KEY}"))).unwrap().unwrap();
        assert_eq!(&*admitted.0, "alice");
        let admitted = keys.admit(&bearer(&format!("bearer {KEY}-bob"))).unwrap().unwrap();
        assert_eq!(&*admitted.0, "key-4");
        // Keys are kept as hashes: the debug form shows neither keys nor digests.
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
    }

    #[test]
    fn bad_key_files_are_refused_with_the_line() {
        let cases = [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("short", "line 1: a key must be 16 to 256 characters (this one has 5)"),
            (
                &format!("a b {KEY} 5"),
                "line 1: expected `NAME KEY BUDGET`, `NAME KEY` or `KEY`, found 4 fields",
            ),
            (
                &format!("alice {KEY} lots"),
                "line 1: the budget of `alice`: `lots` is not an amount",
            ),
            (&format!("alice {KEY} -5"), "line 1: the budget of `alice`"),
            (&format!("al!ce {KEY}"), "line 1: key name `al!ce`"),
            (&format!("alice {KEY}\nbob {KEY}"), "line 2: the key named `bob` is given twice"),
            (
                &format!("alice {KEY}\nalice {KEY}x"),
                "line 2: the name `alice` is given to two keys",
            ),
            (&format!("alice {KEY}\u{e9}"), "printable ASCII"),
            (&format!("alice {}", "k".repeat(MAX_KEY_CHARS + 1)), "16 to 256 characters"),
        ];
        for (text, needle) in cases {
            let error = ApiKeys::parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
        assert!(ApiKeys::single("too short").is_err());
        let one = ApiKeys::single(KEY).unwrap();
        let error = one.clone().merge(ApiKeys::parse(&format!("other {KEY}")).unwrap());
        assert!(error.unwrap_err().to_string().contains("given twice"));
        let both = one.merge(ApiKeys::parse(&format!("other {KEY}x")).unwrap()).unwrap();
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn budgets_come_from_the_key_file_or_the_default() {
        let text = format!("alice {KEY} 1500\nbob {KEY}b 0.5eth\ncarol {KEY}c\n");
        let keys = ApiKeys::parse(&text).unwrap();
        assert!(keys.has_budgets());
        assert_eq!(keys.budget("alice"), Some(U256::from(1500)));
        assert_eq!(keys.budget("bob"), Some(U256::from(500_000_000_000_000_000u64)));
        assert_eq!(keys.budget("carol"), None);
        let keys = keys.with_default_budget(U256::from(7));
        assert_eq!(keys.budget("alice"), Some(U256::from(1500)), "its own budget stays");
        assert_eq!(keys.budget("carol"), Some(U256::from(7)));
        assert!(!ApiKeys::single(KEY).unwrap().has_budgets());
        let merged = ApiKeys::single(KEY)
            .unwrap()
            .merge(ApiKeys::parse("d 0123456789abcdefXXXX 9").unwrap());
        assert_eq!(merged.unwrap().budget("d"), Some(U256::from(9)));
    }

    #[test]
    fn keys_load_from_the_command_line_and_a_file_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, format!("ops {KEY}x\n")).unwrap();
        let keys = ApiKeys::load(Some(KEY), Some(&file)).unwrap();
        let names: Vec<String> = keys.names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["default", "ops"]);
        assert!(ApiKeys::load(None, None).unwrap().is_empty());
        let missing = dir.path().join("nothing");
        let error = ApiKeys::load(None, Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("cannot read the key file") && error.contains("nothing"), "{error}");
        std::fs::write(&file, "short\n").unwrap();
        let error = ApiKeys::load(None, Some(&file)).unwrap_err().to_string();
        assert!(
            error.starts_with("gateway API keys: ") && error.contains(": line 1: a key"),
            "{error}"
        );
        assert_eq!(error.matches("gateway API keys").count(), 1, "{error}");
    }

    #[test]
    fn requests_without_the_right_bearer_key_are_refused() {
        let keys = ApiKeys::single(KEY).unwrap();
        let cases = [
            (HeaderMap::new(), "missing_api_key"),
            (bearer(KEY), "invalid_api_key"),
            (bearer(&format!("Basic {KEY}")), "invalid_api_key"),
            (bearer("Bearer 0123456789abcdef0124"), "invalid_api_key"),
            (bearer(&format!("Bearer {KEY}x")), "invalid_api_key"),
            (bearer("Bearer"), "invalid_api_key"),
        ];
        for (headers, code) in cases {
            let error = keys.admit(&headers).unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (StatusCode::UNAUTHORIZED, Some(code)),
                "{headers:?}"
            );
        }
        assert_eq!(&*keys.admit(&bearer(&format!("Bearer {KEY}"))).unwrap().unwrap().0, "default");
        // No keys: everyone is let in.
        assert!(ApiKeys::default().admit(&HeaderMap::new()).unwrap().is_none());
    }
}
