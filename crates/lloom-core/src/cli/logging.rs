//! Logging set-up shared by the node binaries.

/// Environment variable holding a `tracing` filter (e.g. `info`, `lloom_core=debug`).
pub const LOG_ENV: &str = "LLOOM_LOG";

/// Environment variable choosing how log lines look: `text` (the default, for people) or
/// `json` (one JSON object a line, for log collectors such as Loki, Elasticsearch or a cloud
/// provider's agent).
pub const LOG_FORMAT_ENV: &str = "LLOOM_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (the message and the
    /// event's fields) and the spans it is in.
    Json,
}

impl LogFormat {
    /// The format `value` names (`text` or `json`, in any case); `None` for anything else.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Logs to stderr, filtered by `$LLOOM_LOG` (default: warnings, without Kademlia's noise
/// about having no peers yet), as text or, with `$LLOOM_LOG_FORMAT=json`, JSON lines. An
/// unknown format logs text and says so.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error"));
    let asked = std::env::var(LOG_FORMAT_ENV).unwrap_or_default();
    let format = LogFormat::parse(&asked);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second initialization (tests driving `run` twice) is harmless and ignored.
    let _ = match format {
        Some(LogFormat::Json) => builder.json().try_init(),
        Some(LogFormat::Text) | None => builder.try_init(),
    };
    if format.is_none() {
        tracing::warn!(value = %asked, "unknown {LOG_FORMAT_ENV}; logging text (choose text or json)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_named_text_or_json_and_nothing_else() {
        for (value, format) in
            [("", LogFormat::Text), ("text", LogFormat::Text), (" JSON ", LogFormat::Json)]
        {
            assert_eq!(LogFormat::parse(value), Some(format), "{value:?}");
        }
        for bad in ["yaml", "jsonl", "logfmt"] {
            assert_eq!(LogFormat::parse(bad), None, "{bad}");
        }
    }
}
