//! The grammar that keeps a constrained answer valid: JSON Schema to llama.cpp's GBNF.

use lloom_core::OutputFormat;

use crate::error::{Error, Result};

/// The schema `json_object` answers follow: any JSON object.
const ANY_OBJECT: &str = r#"{"type": "object"}"#;

/// Largest grammar a schema may turn into. The grammar grows faster than the schema (rule
/// names spell out their path: 21 KiB of schema nested 400 deep give 648 KiB of grammar),
/// and the engine's thread loads it while every other sequence waits; 256 KiB load in a few
/// milliseconds.
pub(crate) const MAX_GRAMMAR_BYTES: usize = 256 * 1024;

/// The GBNF grammar an answer in `format` must follow (`None`: free text), compiled before the
/// request is queued so that a schema llama.cpp cannot convert fails at once, as the client's
/// mistake, without taking a slot.
pub(crate) fn for_format(format: &OutputFormat) -> Result<Option<String>> {
    let schema = match format {
        OutputFormat::Text => return Ok(None),
        OutputFormat::JsonObject => ANY_OBJECT,
        OutputFormat::JsonSchema { schema, .. } => schema.as_str(),
    };
    let grammar = llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| {
        Error::Unservable(format!("the JSON schema cannot be turned into a grammar ({e})"))
    })?;
    if grammar.len() > MAX_GRAMMAR_BYTES {
        return Err(Error::Unservable(format!(
            "the JSON schema's grammar is {} KiB, over the {} KiB this engine loads",
            grammar.len() / 1024,
            MAX_GRAMMAR_BYTES / 1024
        )));
    }
    Ok(Some(grammar))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn schema(text: &str) -> OutputFormat {
        OutputFormat::JsonSchema { name: "answer".into(), schema: text.into() }
    }

    #[test]
    fn text_needs_no_grammar_and_json_gets_one_rooted_at_root() {
        assert_eq!(for_format(&OutputFormat::Text).unwrap(), None);
        let object = for_format(&OutputFormat::JsonObject).unwrap().unwrap();
        assert!(object.contains("root ::="), "{object}");
        let city =
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
        let grammar = for_format(&schema(city)).unwrap().unwrap();
        assert!(grammar.contains("root ::=") && grammar.contains("city"), "{grammar}");
    }

    #[test]
    fn a_schema_whose_grammar_is_too_large_is_unservable() {
        let mut deep = String::from(r#"{"type":"string"}"#);
        for _ in 0..400 {
            deep = format!(r#"{{"type":"object","properties":{{"a":{deep}}},"required":["a"]}}"#);
        }
        assert!(deep.len() < lloom_core::WireLimits::default().max_schema_bytes);
        let err = for_format(&schema(&deep)).unwrap_err();
        assert!(err.to_string().contains("KiB, over the 256 KiB"), "{err}");
    }

    #[test]
    fn a_schema_llama_cpp_cannot_convert_is_unservable() {
        for bad in [r#"{"type": 12}"#, r##"{"$ref": "#/nowhere"}"##] {
            let err = for_format(&schema(bad)).unwrap_err();
            assert!(matches!(err, Error::Unservable(_)), "{bad}: {err}");
        }
    }
}
