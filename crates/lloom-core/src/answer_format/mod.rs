//! Whether an answer has the shape its request asked for (its [`OutputFormat`]).
//!
//! An executor that ignores a request's format (a backend that drops `response_format`, or
//! one that lies) returns prose where JSON was asked for; the client rejects that answer as
//! it rejects a wrong content hash. The check parses the text and, for a whole answer to a
//! JSON Schema, checks it against the schema as far as grammar engines hold schemas
//! (the private `json_schema` module).

mod json_schema;

use serde::de::IgnoredAny;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::{FinishReason, OutputFormat, SamplingParams};

/// Checks `content`, the whole text of an answer that ended with `finish`, against the format
/// its request's `sampling` asked for. An answer that ended `Stop` with no stop sequence to
/// cut it short must be whole JSON; any other (cut off by `max_tokens`, a stop sequence,
/// cancellation or a failure) may be the start of JSON, and its schema is not checked.
pub fn check_answer_format(
    sampling: &SamplingParams,
    finish: FinishReason,
    content: &str,
) -> Result<()> {
    let wanted = match &sampling.format {
        OutputFormat::Text => return Ok(()),
        OutputFormat::JsonObject => "a JSON object",
        OutputFormat::JsonSchema { .. } => "JSON",
    };
    let violated = |why: String| Err(Error::FormatViolated { wanted, why });
    let start = content.trim_start();
    let object = matches!(sampling.format, OutputFormat::JsonObject);
    if object && !start.is_empty() && !start.starts_with('{') {
        return violated("it does not start with `{`".into());
    }
    let whole = finish == FinishReason::Stop && sampling.stop.is_empty();
    match serde_json::from_str::<IgnoredAny>(content) {
        Ok(_) => {}
        Err(e) if e.is_eof() && !whole => return Ok(()),
        Err(e) if e.is_eof() => return violated(format!("it ended before its JSON did ({e})")),
        Err(e) => return violated(e.to_string()),
    }
    match &sampling.format {
        OutputFormat::JsonSchema { schema, .. } if whole => check_schema(schema, content),
        _ => Ok(()),
    }
}

/// Checks `content`, whole JSON, against `schema` (one a request carried: a JSON object no
/// larger than the wire's limit).
fn check_schema(schema: &str, content: &str) -> Result<()> {
    let (Ok(schema), Ok(answer)) =
        (serde_json::from_str::<Value>(schema), serde_json::from_str::<Value>(content))
    else {
        return Ok(());
    };
    match json_schema::violation(&schema, &answer) {
        None => Ok(()),
        Some(why) => Err(Error::FormatViolated { wanted: "JSON its schema accepts", why }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sampling(format: OutputFormat, stop: &[&str]) -> SamplingParams {
        let stop = stop.iter().map(|s| (*s).to_owned()).collect();
        SamplingParams { format, stop, ..SamplingParams::default() }
    }

    #[test]
    fn whole_json_passes_and_a_cut_off_answer_may_be_its_start() {
        let schema = OutputFormat::JsonSchema { name: "s".into(), schema: "{}".into() };
        for format in [OutputFormat::JsonObject, schema.clone()] {
            let s = sampling(format, &[]);
            check_answer_format(&s, FinishReason::Stop, "{\"capital\": \"Paris\"}\n").unwrap();
            check_answer_format(&s, FinishReason::Length, "{\"capital\": \"Pa").unwrap();
            check_answer_format(&s, FinishReason::Cancelled, "").unwrap();
        }
        // A stop sequence may cut a complete-looking answer short.
        let s = sampling(OutputFormat::JsonObject, &["\n"]);
        check_answer_format(&s, FinishReason::Stop, "{").unwrap();
        // Text asks for nothing; a schema may ask for something other than an object.
        check_answer_format(&SamplingParams::default(), FinishReason::Stop, "Paris.").unwrap();
        check_answer_format(&sampling(schema, &[]), FinishReason::Stop, "[1, 2]").unwrap();
    }

    #[test]
    fn prose_half_json_and_other_shapes_are_violations() {
        let object = sampling(OutputFormat::JsonObject, &[]);
        let cases = [
            (FinishReason::Stop, "The capital is Paris.", "does not start with `{`"),
            (FinishReason::Length, "[1, 2", "does not start with `{`"),
            (FinishReason::Stop, "{\"capital\": \"Pa", "ended before its JSON did"),
            (FinishReason::Length, "{\"capital\" \"Paris\"", "expected `:`"),
            (FinishReason::Stop, "{} and more", "trailing characters"),
        ];
        for (finish, text, why) in cases {
            let err = check_answer_format(&object, finish, text).unwrap_err();
            assert!(matches!(err, Error::FormatViolated { .. }), "{text}: {err}");
            assert!(err.to_string().contains(why), "{text}: {err}");
            assert!(err.is_peer_fault(), "{err}");
        }
    }
}
