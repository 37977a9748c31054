#![allow(clippy::unwrap_used, clippy::needless_pass_by_value, clippy::redundant_clone)]

use serde_json::{Value, json};

use super::*;

/// Asserts `answer` breaks `schema`, with a message containing `why`.
#[track_caller]
fn rejects(schema: Value, answer: Value, why: &str) {
    let Some(message) = violation(&schema, &answer) else {
        panic!("{answer} passed {schema}, wanted a violation: {why}");
    };
    assert!(message.contains(why), "{answer} against {schema}: {message:?} lacks {why:?}");
}

/// Asserts `schema` accepts `answer` (or cannot tell).
#[track_caller]
fn accepts(schema: Value, answer: Value) {
    if let Some(message) = violation(&schema, &answer) {
        panic!("{answer} failed {schema}: {message}");
    }
}

#[test]
fn types_are_checked_with_integers_as_whole_numbers() {
    accepts(json!({"type": "string"}), json!("Paris"));
    rejects(json!({"type": "string"}), json!(3), "at the top: it is an integer, not a string");
    accepts(json!({"type": "integer"}), json!(3));
    accepts(json!({"type": "integer"}), json!(3.0));
    rejects(json!({"type": "integer"}), json!(3.5), "it is 3.5, not an integer");
    accepts(json!({"type": "number"}), json!(3.5));
    rejects(json!({"type": "number"}), json!("3.5"), "not a number");
    accepts(json!({"type": "boolean"}), json!(false));
    rejects(json!({"type": "boolean"}), json!(null), "not a boolean");
    accepts(json!({"type": "null"}), json!(null));
    rejects(json!({"type": "null"}), json!(0), "not null");
    rejects(json!({"type": "object"}), json!([]), "it is an array, not an object");
    rejects(json!({"type": "array"}), json!({}), "it is an object, not an array");
    accepts(json!({"type": ["string", "null"]}), json!(null));
    rejects(json!({"type": ["string", "null"]}), json!(1), "not one of the types");
    // A type no engine knows builds no grammar, so nothing holds the answer to it.
    accepts(json!({"type": "date"}), json!(1));
}

#[test]
fn boolean_schemas_and_empty_schemas() {
    accepts(json!(true), json!({"anything": [1]}));
    accepts(json!({}), json!("anything"));
    rejects(json!(false), json!(1), "accepts nothing");
    rejects(
        json!({"type": "object", "properties": {"a": false}}),
        json!({"a": 1}),
        "at /a: the schema `false` accepts nothing",
    );
}

#[test]
fn const_and_enum_compare_numbers_by_value_and_override_type() {
    accepts(json!({"const": 1}), json!(1.0));
    rejects(json!({"const": "Paris"}), json!("Lyon"), "not the constant \"Paris\"");
    accepts(json!({"enum": ["a", {"b": [1]}]}), json!({"b": [1.0]}));
    rejects(json!({"enum": ["a", "b"]}), json!("c"), "none of the 2 values");
    // llama.cpp writes the grammar from `const` and `enum` alone.
    accepts(json!({"type": "string", "enum": [1, 2]}), json!(2));
    accepts(json!({"const": "x", "enum": ["y"]}), json!("x"));
    rejects(json!({"const": "x", "enum": ["y"]}), json!("y"), "constant");
}

#[test]
fn objects_check_listed_required_properties_and_additional_ones() {
    let city = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["name", "country"],
    });
    accepts(city.clone(), json!({"name": "Paris", "population": 2102650}));
    // Extra properties pass without `additionalProperties: false` (llama.cpp allows them).
    accepts(city.clone(), json!({"name": "Paris", "mayor": "A. Hidalgo"}));
    rejects(city.clone(), json!({"population": 1}), "lacks the required property \"name\"");
    rejects(city.clone(), json!({"name": 7}), "at /name: it is an integer, not a string");
    // `country` is required but not listed: grammars cannot require it, so neither do we.
    accepts(city, json!({"name": "Paris"}));

    let closed = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": false,
    });
    rejects(closed.clone(), json!({"a": 1, "b": 2}), "has the property \"b\"");
    accepts(closed, json!({}));
    let typed_rest = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    accepts(typed_rest.clone(), json!({"x": 1, "y": 2}));
    rejects(typed_rest, json!({"x": 1, "y/z": "2"}), "at /y~1z: it is a string");
    let patterns = json!({
        "type": "object",
        "patternProperties": {"^x": {}},
        "additionalProperties": false,
    });
    accepts(patterns, json!({"x1": 1, "other": 2}));
}

#[test]
fn arrays_check_items_counts_and_tuples() {
    let names = json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2});
    accepts(names.clone(), json!(["a", "b"]));
    rejects(names.clone(), json!([]), "0 items, fewer than the schema's minimum of 1");
    rejects(names.clone(), json!(["a", "b", "c"]), "3 items, more than the schema's maximum of 2");
    rejects(names, json!(["a", 2]), "at /1: it is an integer, not a string");

    let pair = json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]});
    accepts(pair.clone(), json!(["Paris", 75]));
    // Tuple lengths: llama.cpp drops the bounds, so only the present items are checked.
    accepts(pair.clone(), json!(["Paris"]));
    rejects(pair, json!([75, "Paris"]), "at /0: it is an integer, not a string");
    // `items` as a list is the old tuple form.
    rejects(json!({"items": [{"type": "null"}]}), json!([1]), "at /0: it is an integer, not null");
    // With both, readings disagree on what the first items follow: those are not checked.
    let both =
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}});
    accepts(both, json!([1, "x"]));
}

#[test]
fn strings_check_lengths_between_characters_and_utf16_units() {
    let short = json!({"type": "string", "minLength": 2, "maxLength": 3});
    accepts(short.clone(), json!("ab"));
    accepts(short.clone(), json!("abc"));
    rejects(short.clone(), json!("a"), "1 characters long, shorter than the schema's minimum of 2");
    rejects(
        short.clone(),
        json!("abcd"),
        "4 characters long, longer than the schema's maximum of 3",
    );
    // One emoji is one character, or two UTF-16 units when a grammar writes it escaped.
    accepts(json!({"type": "string", "minLength": 2}), json!("🙂"));
    accepts(json!({"type": "string", "maxLength": 1}), json!("🙂"));
    rejects(json!({"type": "string", "maxLength": 1}), json!("🙂🙂"), "longer");
    // A pattern or a date format is the grammar instead of the lengths.
    accepts(json!({"type": "string", "maxLength": 1, "pattern": "^a+$"}), json!("aaaa"));
    accepts(json!({"type": "string", "maxLength": 1, "format": "date"}), json!("2026-12-05"));
    rejects(json!({"type": "string", "maxLength": 1, "format": "email"}), json!("a@b"), "longer");
}

#[test]
fn integer_bounds_round_inwards_and_other_numbers_are_not_bounded() {
    let range = json!({"type": "integer", "minimum": 1, "maximum": 10});
    accepts(range.clone(), json!(1));
    accepts(range.clone(), json!(10));
    rejects(range.clone(), json!(0), "it is 0, below the schema's least integer 1");
    rejects(range, json!(11), "it is 11, above the schema's greatest integer 10");
    let exclusive = json!({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5});
    accepts(exclusive.clone(), json!(4));
    rejects(exclusive.clone(), json!(0), "least integer 1");
    rejects(exclusive, json!(5), "greatest integer 4");
    let fractional = json!({"type": "integer", "minimum": 0.5, "maximum": 2.5});
    rejects(fractional.clone(), json!(0), "least integer 1");
    rejects(fractional, json!(3), "greatest integer 2");
    // `minimum` takes precedence over `exclusiveMinimum`, as in llama.cpp.
    accepts(json!({"type": "integer", "minimum": 0, "exclusiveMinimum": 5}), json!(0));
    accepts(json!({"type": "integer", "minimum": -1e3}), json!(-1000));
    // Grammars do not bound non-integers, so an honest executor may break such bounds.
    accepts(json!({"type": "number", "minimum": 1, "maximum": 2}), json!(7.5));
}

#[test]
fn any_of_and_one_of_need_one_alternative_and_override_their_siblings() {
    let either = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
    accepts(either.clone(), json!("a"));
    accepts(either.clone(), json!(1));
    rejects(either, json!(null), "matches none of the schema's 2 alternatives");
    // `oneOf` is read as `anyOf`: matching two alternatives passes.
    accepts(json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}), json!(1));
    // The keywords beside `anyOf` are not held by llama.cpp's grammar.
    accepts(json!({"type": "string", "anyOf": [{"type": "integer"}]}), json!(1));
    // `allOf` is not checked.
    accepts(json!({"allOf": [{"type": "string"}, {"type": "integer"}]}), json!(true));
}

#[test]
fn refs_point_into_the_schema_and_others_are_not_checked() {
    let schema = json!({
        "$defs": {"city": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "type": "array",
        "items": {"$ref": "#/$defs/city"},
    });
    accepts(schema.clone(), json!([{"name": "Paris"}]));
    rejects(schema, json!([{"name": 1}]), "at /0/name: it is an integer, not a string");
    // A `$ref` overrides its siblings.
    accepts(json!({"$defs": {"a": {}}, "$ref": "#/$defs/a", "type": "string"}), json!(1));
    accepts(json!({"$ref": "https://example.invalid/s.json"}), json!(1));
    accepts(json!({"$ref": "#/nowhere"}), json!(1));
}

#[test]
fn schemas_that_would_not_end_are_accepted_unchecked() {
    // A `$ref` loop runs into the depth bound.
    accepts(json!({"$ref": "#"}), json!(1));
    let looping = json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    accepts(looping, json!(1));
    // Alternatives 40 deep, each level two `$ref`s to the one below: a small schema that
    // would take 2^40 steps to rule an answer out of.
    let mut defs = serde_json::Map::new();
    defs.insert("l0".into(), json!({"type": "null"}));
    for level in 1..=40 {
        let below = format!("#/$defs/l{}", level - 1);
        defs.insert(format!("l{level}"), json!({"anyOf": [{"$ref": below}, {"$ref": below}]}));
    }
    let schema = json!({"$defs": defs, "$ref": "#/$defs/l40"});
    accepts(schema, json!(1));
    // Deep answers are bounded the same way.
    let mut deep_schema = json!({"type": "integer"});
    let mut deep_answer = json!("not an integer");
    for _ in 0..MAX_DEPTH + 10 {
        deep_schema = json!({"type": "array", "items": deep_schema});
        deep_answer = json!([deep_answer]);
    }
    accepts(deep_schema, deep_answer);
}

#[test]
fn a_violation_far_down_names_its_whole_path() {
    let schema = json!({
        "type": "object",
        "properties": {"cities": {"type": "array", "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        }}},
    });
    rejects(
        schema.clone(),
        json!({"cities": [{"name": "Paris"}, {"name": ["Lyon"]}]}),
        "at /cities/1/name: it is an array, not a string",
    );
    rejects(schema, json!({"cities": [{}]}), "at /cities/0: it lacks the required property");
}
