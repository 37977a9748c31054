//! The grammar that keeps a constrained answer valid: JSON Schema to llama.cpp's GBNF.

use lloom_core::OutputFormat;

use crate::error::{Error, Result};

/// The schema `json_object` answers follow: any JSON object.
const ANY_OBJECT: &str = r#"{"type": "object"}"#;

/// The GBNF grammar an answer in `format` must follow (`None`: free text), compiled before the
/// request is queued so that a schema llama.cpp cannot convert fails at once, as the client's
/// mistake, without taking a slot.
pub(crate) fn for_format(format: &OutputFormat) -> Result<Option<String>> {
    let schema = match format {
        OutputFormat::Text => return Ok(None),
        OutputFormat::JsonObject => ANY_OBJECT,
        OutputFormat::JsonSchema { schema, .. } => schema.as_str(),
    };
    llama_cpp_2::json_schema_to_grammar(schema).map(Some).map_err(|e| {
        Error::Unservable(format!("the JSON schema cannot be turned into a grammar ({e})"))
    })
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
    fn a_schema_llama_cpp_cannot_convert_is_unservable() {
        for bad in [r#"{"type": 12}"#, r##"{"$ref": "#/nowhere"}"##] {
            let err = for_format(&schema(bad)).unwrap_err();
            assert!(matches!(err, Error::Unservable(_)), "{bad}: {err}");
        }
    }
}
