//! Whether a whole JSON answer is one its request's JSON Schema accepts.
//!
//! Engines hold answers to a schema with a grammar, and no engine's grammar holds all of JSON
//! Schema: llama.cpp (the embedded engine, and the server behind Ollama and LM Studio) bounds
//! integers but not other numbers, lets `anyOf` or `$ref` override the keywords beside them,
//! and reads `oneOf` as `anyOf`. An honest executor must never fail this check, so it rejects
//! only what no such reading of the schema accepts: it checks types, `const` and `enum`,
//! `$ref`s into the same document, `anyOf` and `oneOf` (both as "any of"), `properties`,
//! `required`, `additionalProperties`, `items` and `prefixItems`, `minItems` and `maxItems`,
//! `minLength` and `maxLength`, and integer bounds, with the precedence llama.cpp gives them.
//! It does not check `pattern`, `format`, `allOf`, bounds on non-integers or the keywords no
//! grammar engine holds (`not`, `uniqueItems`, `multipleOf`, ...).
//!
//! The schema is the client's, so the work is bounded: past [`MAX_DEPTH`] nested schemas or
//! [`MAX_STEPS`] schema-value pairs (a `$ref` loop, or `anyOf`s nested into an exponential
//! search) the answer is accepted as unchecked rather than held to a check that cannot end.

use serde_json::{Map, Number, Value};

/// Deepest chain of schemas the check follows (`$ref` hops count too).
pub(crate) const MAX_DEPTH: usize = 256;

/// Most schema-value pairs the check looks at for one answer.
pub(crate) const MAX_STEPS: usize = 100_000;

/// Formats llama.cpp writes its own string grammar for, dropping `minLength` and `maxLength`.
const GRAMMAR_FORMATS: [&str; 9] =
    ["date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"];

/// Why `answer` is not one `schema` accepts (`at /path: what is wrong`), or `None` when it
/// is, or when the check ran out of its bounds before it could tell.
pub(crate) fn violation(schema: &Value, answer: &Value) -> Option<String> {
    let mut check = Check { root: schema, steps_left: MAX_STEPS, path: Vec::new(), trying: 0 };
    match check.node(schema, answer, 0) {
        Ok(()) | Err(Stop::OutOfBounds) => None,
        Err(Stop::Violated(why)) => Some(why),
    }
}

/// Why a check stopped before it accepted.
enum Stop {
    /// The value breaks the schema: where and how.
    Violated(String),
    /// The check needed more depth or steps than it may take.
    OutOfBounds,
}

type Checked = Result<(), Stop>;

/// One answer's check: the schema its `$ref`s point into, its budget, and where it is.
struct Check<'a> {
    root: &'a Value,
    steps_left: usize,
    /// The keys and indices from the answer's top to the value being checked.
    path: Vec<String>,
    /// How many alternatives (`anyOf`, a list of types) the value is being tried against.
    trying: usize,
}

impl<'a> Check<'a> {
    /// A violation at the current path. Its message is written only where it can be seen:
    /// not inside an alternative that others may still make up for.
    fn violated(&self, what: impl FnOnce() -> String) -> Checked {
        if self.trying > 0 {
            return Err(Stop::Violated(String::new()));
        }
        let at = match self.path.is_empty() {
            true => "the top".to_owned(),
            false => self.path.iter().map(|segment| format!("/{segment}")).collect(),
        };
        Err(Stop::Violated(format!("at {at}: {}", what())))
    }

    /// Checks `value` against `schema`, `depth` schemas down from the root.
    fn node(&mut self, schema: &'a Value, value: &Value, depth: usize) -> Checked {
        if depth >= MAX_DEPTH || self.steps_left == 0 {
            return Err(Stop::OutOfBounds);
        }
        self.steps_left -= 1;
        let s = match schema {
            Value::Object(s) => s,
            Value::Bool(false) => {
                return self.violated(|| "the schema `false` accepts nothing".into());
            }
            // `true`, and anything that is not a schema, accepts everything.
            _ => return Ok(()),
        };
        if let Some(reference) = s.get("$ref") {
            return match self.resolve(reference) {
                Some(target) => self.node(target, value, depth + 1),
                None => Ok(()),
            };
        }
        if let Some(alternatives) = s.get("oneOf").or_else(|| s.get("anyOf")) {
            return self.any_of(alternatives, value, depth);
        }
        match s.get("type") {
            Some(Value::Array(types)) => self.any_type(s, types, value, depth),
            _ if s.contains_key("const") || s.contains_key("enum") => self.constant(s, value),
            Some(Value::String(name)) => self.typed(s, Some(name), value, depth),
            Some(_) => Ok(()),
            None => self.typed(s, None, value, depth),
        }
    }

    /// The schema a `$ref` into this document points to (`None`: elsewhere, or nowhere).
    fn resolve(&self, reference: &Value) -> Option<&'a Value> {
        let pointer = reference.as_str()?.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// The outcome of the first option `try_one` does not find violated (accepted, or out of
    /// bounds), or `None` when every option is violated.
    fn first_accepting<T>(
        &mut self,
        options: impl IntoIterator<Item = T>,
        mut try_one: impl FnMut(&mut Self, T) -> Checked,
    ) -> Option<Checked> {
        self.trying += 1;
        let mut outcome = None;
        for option in options {
            match try_one(self, option) {
                Err(Stop::Violated(_)) => continue,
                accepted_or_out_of_bounds => {
                    outcome = Some(accepted_or_out_of_bounds);
                    break;
                }
            }
        }
        self.trying -= 1;
        outcome
    }

    /// `anyOf` (and `oneOf`, which grammars hold as `anyOf`): at least one alternative.
    fn any_of(&mut self, alternatives: &'a Value, value: &Value, depth: usize) -> Checked {
        let Some(alternatives) = alternatives.as_array().filter(|a| !a.is_empty()) else {
            return Ok(());
        };
        let outcome = self.first_accepting(alternatives, |this, alternative| {
            this.node(alternative, value, depth + 1)
        });
        if let Some(outcome) = outcome {
            return outcome;
        }
        self.violated(|| {
            format!("it matches none of the schema's {} alternatives", alternatives.len())
        })
    }

    /// `"type": [...]`: the schema's other keywords with any one of the types.
    fn any_type(
        &mut self,
        s: &'a Map<String, Value>,
        types: &'a [Value],
        value: &Value,
        depth: usize,
    ) -> Checked {
        if types.is_empty() {
            return Ok(());
        }
        if s.contains_key("const") || s.contains_key("enum") {
            return self.constant(s, value);
        }
        let outcome = self.first_accepting(types, |this, name| match name.as_str() {
            Some(name) => this.typed(s, Some(name), value, depth),
            None => Ok(()),
        });
        if let Some(outcome) = outcome {
            return outcome;
        }
        self.violated(|| {
            let names: Vec<String> = types.iter().map(Value::to_string).collect();
            format!("it is {}, not one of the types {}", kind(value), names.join(", "))
        })
    }

    /// `const` (which wins over `enum`, as in llama.cpp) or `enum`.
    fn constant(&self, s: &Map<String, Value>, value: &Value) -> Checked {
        if let Some(constant) = s.get("const") {
            return match same_json(constant, value) {
                true => Ok(()),
                false => {
                    self.violated(|| format!("it is not the constant {}", abbreviated(constant)))
                }
            };
        }
        match s.get("enum").and_then(Value::as_array) {
            Some(values) if !values.iter().any(|v| same_json(v, value)) => self
                .violated(|| format!("it is none of the {} values the schema lists", values.len())),
            _ => Ok(()),
        }
    }

    /// A schema with one type (or none, when its keywords decide), as llama.cpp reads it.
    fn typed(
        &mut self,
        s: &'a Map<String, Value>,
        name: Option<&str>,
        value: &Value,
        depth: usize,
    ) -> Checked {
        let has_properties = s.contains_key("properties")
            || s.get("additionalProperties").is_some_and(|a| a != &Value::Bool(true));
        let has_items = s.contains_key("items") || s.contains_key("prefixItems");
        let wrong_type = |this: &Self, wanted: &str| {
            this.violated(|| format!("it is {}, not {wanted}", kind(value)))
        };
        match (name, value) {
            // Without a type the keywords check only values of their own type.
            (None, Value::Object(map)) if has_properties => self.object(s, map, depth),
            (None, Value::Array(items)) if has_items && !s.contains_key("allOf") => {
                self.array(s, items, depth)
            }
            (None, Value::String(text)) if !s.contains_key("allOf") => self.string(s, text),
            (None, _) => Ok(()),
            (Some("object"), Value::Object(_)) if !has_properties && s.contains_key("allOf") => {
                Ok(())
            }
            (Some("object"), Value::Object(map)) => self.object(s, map, depth),
            (Some("object"), _) => wrong_type(self, "an object"),
            (Some("string"), Value::String(_)) if s.contains_key("allOf") => Ok(()),
            (Some("string"), Value::String(text)) => self.string(s, text),
            (Some("string"), _) => wrong_type(self, "a string"),
            (Some("array"), Value::Array(items)) => self.array(s, items, depth),
            (Some("array"), _) => wrong_type(self, "an array"),
            (Some("integer"), Value::Number(n)) => self.integer(s, n),
            (Some("integer"), _) => wrong_type(self, "an integer"),
            (Some("number"), Value::Number(_)) => Ok(()),
            (Some("number"), _) => wrong_type(self, "a number"),
            (Some("boolean"), Value::Bool(_)) => Ok(()),
            (Some("boolean"), _) => wrong_type(self, "a boolean"),
            (Some("null"), Value::Null) => Ok(()),
            (Some("null"), _) => wrong_type(self, "null"),
            // A type no engine knows: its grammar could not be built, so nothing is checked.
            (Some(_), _) => Ok(()),
        }
    }

    /// `properties`, `required` (of the listed properties) and `additionalProperties`.
    fn object(
        &mut self,
        s: &'a Map<String, Value>,
        map: &Map<String, Value>,
        depth: usize,
    ) -> Checked {
        let properties = s.get("properties").and_then(Value::as_object);
        let listed = |name: &str| properties.is_some_and(|p| p.contains_key(name));
        let required = s.get("required").and_then(Value::as_array).into_iter().flatten();
        for name in required.filter_map(Value::as_str) {
            if listed(name) && !map.contains_key(name) {
                return self
                    .violated(|| format!("it lacks the required property {}", quoted(name)));
            }
        }
        // Keys `patternProperties` may claim are not the others `additionalProperties` rules.
        let additional =
            s.get("additionalProperties").filter(|_| !s.contains_key("patternProperties"));
        for (key, item) in map {
            let schema = match properties.and_then(|p| p.get(key)) {
                Some(schema) => schema,
                None => match additional {
                    Some(Value::Bool(false)) => {
                        return self.violated(|| {
                            format!(
                                "it has the property {}, which the schema does not allow",
                                quoted(key)
                            )
                        });
                    }
                    Some(schema @ Value::Object(_)) => schema,
                    _ => continue,
                },
            };
            self.path.push(pointer_segment(key));
            let outcome = self.node(schema, item, depth + 1);
            self.path.pop();
            outcome?;
        }
        Ok(())
    }

    /// `items` (which wins over `prefixItems`, as in llama.cpp), `minItems` and `maxItems`.
    fn array(&mut self, s: &'a Map<String, Value>, items: &[Value], depth: usize) -> Checked {
        let both = s.contains_key("items") && s.contains_key("prefixItems");
        let schema_of = |i: usize| -> Option<&'a Value> {
            match s.get("items").or_else(|| s.get("prefixItems"))? {
                // A tuple: its own items, and no bounds on its length (llama.cpp drops them).
                Value::Array(tuple) => tuple.get(i),
                // With both, grammars disagree on which schema the first items follow.
                _ if both => None,
                schema => Some(schema),
            }
        };
        let tuple =
            matches!(s.get("items").or_else(|| s.get("prefixItems")), Some(Value::Array(_)));
        if !tuple {
            let count = items.len() as u64;
            if let Some(min) = s.get("minItems").and_then(Value::as_u64).filter(|&min| count < min)
            {
                return self.violated(|| {
                    format!("it has {count} items, fewer than the schema's minimum of {min}")
                });
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64).filter(|&max| count > max)
            {
                return self.violated(|| {
                    format!("it has {count} items, more than the schema's maximum of {max}")
                });
            }
        }
        for (i, item) in items.iter().enumerate() {
            let Some(schema) = schema_of(i) else { continue };
            self.path.push(i.to_string());
            let outcome = self.node(schema, item, depth + 1);
            self.path.pop();
            outcome?;
        }
        Ok(())
    }

    /// `minLength` and `maxLength`, unless a `pattern` or a grammar `format` stands instead.
    fn string(&self, s: &Map<String, Value>, text: &str) -> Checked {
        let format = s.get("format").and_then(Value::as_str);
        if s.contains_key("pattern") || format.is_some_and(|f| GRAMMAR_FORMATS.contains(&f)) {
            return Ok(());
        }
        // A grammar counts an escaped character (two for a surrogate pair) or a raw one as
        // one: no fewer than the characters, no more than the UTF-16 units.
        let at_least = text.encode_utf16().count() as u64;
        let at_most = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64).filter(|&min| at_least < min)
        {
            return self.violated(|| {
                format!(
                    "it is {at_least} characters long, shorter than the schema's minimum of {min}"
                )
            });
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64).filter(|&max| at_most > max) {
            return self.violated(|| {
                format!(
                    "it is {at_most} characters long, longer than the schema's maximum of {max}"
                )
            });
        }
        Ok(())
    }

    /// A whole number within `minimum` (or `exclusiveMinimum`) and `maximum` (or
    /// `exclusiveMaximum`), which llama.cpp rounds inwards to the integers they admit.
    fn integer(&self, s: &Map<String, Value>, n: &Number) -> Checked {
        let Some(value) = whole(n) else {
            return self.violated(|| format!("it is {n}, not an integer"));
        };
        let bound = |key: &str, round: fn(f64) -> f64| {
            s.get(key)
                .and_then(Value::as_number)
                .and_then(|b| whole(b).or_else(|| float_bound(b, round)))
        };
        let low = match bound("minimum", f64::ceil) {
            Some(low) => Some(low),
            None => bound("exclusiveMinimum", f64::floor).and_then(|b| b.checked_add(1)),
        };
        let high = match bound("maximum", f64::floor) {
            Some(high) => Some(high),
            None => bound("exclusiveMaximum", f64::ceil).and_then(|b| b.checked_sub(1)),
        };
        if let Some(low) = low.filter(|&low| value < low) {
            return self
                .violated(|| format!("it is {value}, below the schema's least integer {low}"));
        }
        if let Some(high) = high.filter(|&high| value > high) {
            return self
                .violated(|| format!("it is {value}, above the schema's greatest integer {high}"));
        }
        Ok(())
    }
}

/// The whole number `n` is, if it is one that fits an `i128` (`3`, `3.0`, `-1e3`).
fn whole(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    n.as_f64().filter(|f| f.fract() == 0.0).and_then(float_to_i128)
}

/// A fractional bound rounded to the whole number on its inner side.
fn float_bound(n: &Number, round: fn(f64) -> f64) -> Option<i128> {
    n.as_f64().map(round).and_then(float_to_i128)
}

/// `f`, a whole float, as an `i128` when it is well within range.
fn float_to_i128(f: f64) -> Option<i128> {
    // 2^100 is far past every integer JSON tools exchange, and far inside i128.
    const LIMIT: f64 = 1.267_650_600_228_229_4e30;
    #[allow(clippy::cast_possible_truncation)] // `f` is whole and well within range.
    (f.is_finite() && f.abs() < LIMIT).then_some(f as i128)
}

/// JSON equality as JSON Schema means it: `1` and `1.0` are the same number.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (whole(x), whole(y)) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// What kind of JSON value `value` is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if whole(n).is_some() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A key as a JSON string, for messages.
fn quoted(key: &str) -> String {
    abbreviated(&Value::String(key.to_owned()))
}

/// A value's JSON, cut to a length a message can carry.
fn abbreviated(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A key as a JSON Pointer segment (`~` and `/` escaped).
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests;
