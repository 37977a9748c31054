//! `--json-object` and `--json-schema FILE`: the shape a generated answer must take.

use std::path::PathBuf;

use crate::OutputFormat;
use crate::error::{Error, Result};

/// Options that constrain an answer to JSON (flattened into `chat` and `generate`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputFormatArgs {
    /// Answer with one JSON object (sampling keeps to valid JSON).
    #[arg(long, conflicts_with = "json_schema")]
    pub json_object: bool,
    /// Answer with JSON that the JSON Schema in FILE accepts (sampling keeps to it).
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
}

impl OutputFormatArgs {
    /// The requested format; a schema file is read and must hold a JSON object. The schema's
    /// name is the file's stem, kept to the letters, digits, `_` and `-` a name may hold.
    pub fn format(&self) -> Result<OutputFormat> {
        let Some(path) = &self.json_schema else {
            return Ok(if self.json_object {
                OutputFormat::JsonObject
            } else {
                OutputFormat::Text
            });
        };
        let schema = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidMessage(format!("cannot read the JSON schema {}: {e}", path.display()))
        })?;
        if !matches!(serde_json::from_str(&schema), Ok(serde_json::Value::Object(_))) {
            return Err(Error::InvalidMessage(format!(
                "{} does not hold a JSON object (a JSON Schema)",
                path.display()
            )));
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
        let name: String = stem
            .chars()
            .filter(|c| OutputFormat::is_name_char(*c))
            .take(OutputFormat::MAX_NAME_CHARS)
            .collect();
        let name = if name.is_empty() { "schema".to_owned() } else { name };
        Ok(OutputFormat::JsonSchema { name, schema })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn flags_give_text_an_object_or_a_named_schema_and_bad_files_are_refused() {
        let none = OutputFormatArgs::default();
        assert_eq!(none.format().unwrap(), OutputFormat::Text);
        let object = OutputFormatArgs { json_object: true, json_schema: None };
        assert_eq!(object.format().unwrap(), OutputFormat::JsonObject);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my city.schema.json");
        std::fs::write(&path, r#"{"type":"object"}"#).unwrap();
        let args = OutputFormatArgs { json_object: false, json_schema: Some(path.clone()) };
        assert_eq!(
            args.format().unwrap(),
            OutputFormat::JsonSchema {
                name: "mycityschema".into(),
                schema: r#"{"type":"object"}"#.into()
            }
        );
        std::fs::write(&path, "[1]").unwrap();
        assert!(args.format().unwrap_err().to_string().contains("does not hold a JSON object"));
        let missing =
            OutputFormatArgs { json_object: false, json_schema: Some(dir.path().join("no")) };
        assert!(missing.format().unwrap_err().to_string().contains("cannot read the JSON schema"));
    }
}
