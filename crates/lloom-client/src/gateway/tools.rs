//! Tool calling over any model, in llama.cpp's "generic" tool-call format.
//!
//! OpenAI `tools` become two things the network already carries: a system message listing
//! the tools, and a JSON Schema the executor holds the answer to (its grammar), so the model
//! can only answer `{"tool_call": {"name": …, "arguments": …}}` with one of the tools' names
//! and arguments their schema allows, or (with `tool_choice: "auto"`) `{"response": "…"}`.
//! With `parallel_tool_calls: true` a turn may call several: `{"tool_calls": [{"name": …,
//! "arguments": …}, …]}` (at most [`MAX_PARALLEL_CALLS`]), as llama.cpp's server does; like
//! it, and unlike OpenAI, one call a turn is the default, which small models follow best.
//! The executor signs that JSON text like any answer; once it is verified, the gateway turns
//! it back into OpenAI's `tool_calls` or plain content (a reply also streams as it is
//! generated, `gateway::reply_stream`). No model needs a tool-aware chat
//! template, and no protocol change is needed: what is signed is exactly what was generated.

use serde_json::{Map, Value, json};

use super::error::ApiError;

/// Most tools one request may list (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// Longest tool name (OpenAI's limit); names use `[A-Za-z0-9_-]`.
pub const MAX_TOOL_NAME_CHARS: usize = 64;

/// Most calls one turn may ask for with `parallel_tool_calls`.
pub const MAX_PARALLEL_CALLS: usize = 16;

/// The name of the output schema that holds an answer to the tools.
const SCHEMA_NAME: &str = "tool_call";

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
struct Tool {
    name: String,
    description: Option<String>,
    /// The JSON Schema of its arguments (an object).
    parameters: Value,
}

/// Which answers `tool_choice` allows.
#[derive(Debug, Clone, PartialEq)]
enum Choice {
    /// A tool call or a reply in words.
    Auto,
    /// A call of any tool.
    Required,
    /// A call of this tool.
    Named(String),
}

/// The tools of one request and what its `tool_choice` allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    tools: Vec<Tool>,
    choice: Choice,
    /// Whether a turn may call several tools at once.
    parallel: bool,
}

/// One call the model asked for, with its arguments as JSON text (as OpenAI returns them).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The tool.
    pub name: String,
    /// Its arguments, a JSON object as text.
    pub arguments: String,
}

/// What a verified answer to a request with tools says.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolAnswer {
    /// The model calls one tool or more, in order.
    Calls(Vec<ToolCall>),
    /// The model answers in words (or its answer was cut off before it was whole JSON).
    Text(String),
}

fn invalid(message: &str, param: &'static str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// Reads `tools`, `tool_choice` and `parallel_tool_calls`: `None` when no tool may be called
/// (no tools, or `tool_choice: "none"`), else the tools and the choice; a malformed one is
/// refused.
pub fn parse(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    parallel_tool_calls: Option<bool>,
) -> Result<Option<ToolSpec>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.as_slice().to_vec(),
        Some(_) => return Err(invalid("tools must be a list", "tools")),
    };
    let choice = match tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => Some(Choice::Auto),
        Some(Value::String(s)) if s == "required" => Some(Choice::Required),
        Some(Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| o.get("type").and_then(Value::as_str) == Some("function"));
            let Some(name) = name else {
                return Err(invalid(
                    "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \
                     \"function\", \"function\": {\"name\": …}}",
                    "tool_choice",
                ));
            };
            Some(Choice::Named(name.to_owned()))
        }
        Some(other) => {
            return Err(invalid(&format!("tool_choice {other} is not supported"), "tool_choice"));
        }
    };
    if tools.is_empty() {
        return match choice {
            None | Some(Choice::Auto) => Ok(None),
            Some(_) => Err(invalid(
                "tool_choice asks for a tool call, but no tools are given",
                "tool_choice",
            )),
        };
    }
    if tools.len() > MAX_TOOLS {
        return Err(invalid(&format!("at most {MAX_TOOLS} tools are supported"), "tools"));
    }
    let mut parsed: Vec<Tool> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let tool = parse_tool(i, tool)?;
        if parsed.iter().any(|t| t.name == tool.name) {
            return Err(invalid(
                &format!("tools[{i}]: the name `{}` is given twice", tool.name),
                "tools",
            ));
        }
        parsed.push(tool);
    }
    let choice = choice.unwrap_or(Choice::Auto);
    if let Choice::Named(name) = &choice
        && !parsed.iter().any(|t| &t.name == name)
    {
        return Err(invalid(
            &format!("tool_choice names `{name}`, which is not among the tools"),
            "tool_choice",
        ));
    }
    Ok(Some(ToolSpec { tools: parsed, choice, parallel: parallel_tool_calls == Some(true) }))
}

/// One entry of `tools`: `{"type": "function", "function": {"name", "description",
/// "parameters"}}`.
fn parse_tool(i: usize, tool: &Value) -> Result<Tool, ApiError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(invalid(
            &format!("tools[{i}]: only tools of type `function` are supported"),
            "tools",
        ));
    }
    let Some(function) = tool.get("function").and_then(Value::as_object) else {
        return Err(invalid(&format!("tools[{i}].function must be an object"), "tools"));
    };
    let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_TOOL_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(invalid(
            &format!(
                "tools[{i}].function.name `{name}` must be 1 to {MAX_TOOL_NAME_CHARS} letters, \
                 digits, `_` or `-`"
            ),
            "tools",
        ));
    }
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(invalid(
                &format!("tools[{i}].function.description must be a string"),
                "tools",
            ));
        }
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(invalid(
                &format!("tools[{i}].function.parameters must be an object"),
                "tools",
            ));
        }
    };
    Ok(Tool { name: name.to_owned(), description, parameters })
}

impl ToolSpec {
    /// The JSON Schema the answer is held to (the executor's grammar enforces it).
    pub fn schema(&self) -> Value {
        let calls: Vec<Value> = self
            .tools
            .iter()
            .filter(|t| match &self.choice {
                Choice::Named(name) => &t.name == name,
                Choice::Auto | Choice::Required => true,
            })
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                    "required": ["name", "arguments"],
                })
            })
            .collect();
        let call = match <[Value; 1]>::try_from(calls) {
            Ok([one]) => one,
            Err(many) => json!({"anyOf": many}),
        };
        let call = match self.parallel {
            false => json!({
                "type": "object", "properties": {"tool_call": call}, "required": ["tool_call"],
            }),
            true => json!({
                "type": "object",
                "properties": {"tool_calls": {
                    "type": "array", "items": call,
                    "minItems": 1, "maxItems": MAX_PARALLEL_CALLS,
                }},
                "required": ["tool_calls"],
            }),
        };
        match self.choice {
            Choice::Auto => json!({"anyOf": [
                call,
                {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]},
            ]}),
            Choice::Required | Choice::Named(_) => call,
        }
    }

    /// The schema as the request's output format.
    pub fn format(&self) -> lloom_core::OutputFormat {
        lloom_core::OutputFormat::JsonSchema {
            name: SCHEMA_NAME.into(),
            schema: self.schema().to_string(),
        }
    }

    /// The system message that tells the model about the tools and the answer's form.
    pub fn instructions(&self) -> String {
        let listed: Vec<Value> = self
            .tools
            .iter()
            .map(|t| {
                let mut entry = Map::new();
                entry.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    entry.insert("description".into(), json!(d));
                }
                entry.insert("parameters".into(), t.parameters.clone());
                Value::Object(entry)
            })
            .collect();
        let tools = Value::Array(listed);
        let one = "{\"name\": \"<the tool's name>\", \"arguments\": {<its arguments>}}";
        let (a_call, call) = match self.parallel {
            false => ("a tool call", format!("{{\"tool_call\": {one}}}")),
            true => ("tool calls", format!("{{\"tool_calls\": [{one}, …]}}")),
        };
        let how = match &self.choice {
            Choice::Auto => format!(
                "Respond in JSON, either with {a_call}, {call}, or with a reply to the user, \
                 {{\"response\": \"<your reply>\"}}."
            ),
            Choice::Required => format!("Respond in JSON with {a_call}: {call}."),
            Choice::Named(name) if self.parallel => {
                format!("Respond in JSON with calls of the tool `{name}`: {call}.")
            }
            Choice::Named(name) => {
                format!("Respond in JSON with a call of the tool `{name}`: {call}.")
            }
        };
        format!("You can call these tools to answer the user's request:\n{tools}\n\n{how}")
    }
}

/// Reads the verified answer to a request with tools. An answer that begins as a reply is
/// one, as it was streamed (`gateway::reply_stream`), also when cut off
/// (`max_tokens`); only whole JSON of the schema's shape is a call; anything else is returned
/// as text.
pub fn read_answer(text: &str) -> ToolAnswer {
    if let Some(reply) = super::reply_stream::reply_of(text) {
        return ToolAnswer::Text(reply);
    }
    let Ok(Value::Object(mut answer)) = serde_json::from_str::<Value>(text) else {
        return ToolAnswer::Text(text.to_owned());
    };
    if let Some(call) = answer.remove("tool_call").and_then(read_call) {
        return ToolAnswer::Calls(vec![call]);
    }
    if let Some(Value::Array(list)) = answer.remove("tool_calls") {
        let calls: Option<Vec<ToolCall>> = list.into_iter().map(read_call).collect();
        if let Some(calls) = calls.filter(|c| !c.is_empty()) {
            return ToolAnswer::Calls(calls);
        }
    }
    match answer.remove("response") {
        Some(Value::String(reply)) => ToolAnswer::Text(reply),
        _ => ToolAnswer::Text(text.to_owned()),
    }
}

/// `{"name": …, "arguments": …}` as a call.
fn read_call(call: Value) -> Option<ToolCall> {
    let Value::Object(mut call) = call else { return None };
    match (call.remove("name"), call.remove("arguments")) {
        (Some(Value::String(name)), Some(arguments)) => {
            Some(ToolCall { name, arguments: arguments.to_string() })
        }
        _ => None,
    }
}

/// An earlier assistant turn's `tool_calls`, as the text the model would have generated: one
/// call as `{"tool_call": …}`, several as `{"tool_calls": […]}`.
pub fn calls_as_text(tool_calls: &Value) -> Result<String, ApiError> {
    let bad = || {
        invalid("an assistant message's tool_calls must be a list of function calls", "messages")
    };
    let calls = tool_calls.as_array().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        let function = call.get("function").ok_or_else(bad)?;
        let name = function.get("name").and_then(Value::as_str).ok_or_else(bad)?;
        // Arguments come as JSON text; what is not JSON is passed on as the string it is.
        let arguments = match function.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
            Some(other) => other.clone(),
            None => json!({}),
        };
        out.push(json!({"name": name, "arguments": arguments}));
    }
    Ok(match <[Value; 1]>::try_from(out) {
        Ok([one]) => json!({"tool_call": one}),
        Err(many) => json!({"tool_calls": many}),
    }
    .to_string())
}

/// A tool's result, as the text of the turn that reports it to the model.
pub fn result_as_text(tool_call_id: Option<&str>, content: &str) -> String {
    json!({"tool_response": {"tool_call_id": tool_call_id, "content": content}}).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}}])
    }

    #[test]
    fn no_tools_or_tool_choice_none_ask_for_nothing() {
        assert_eq!(parse(None, None, None).unwrap(), None);
        assert_eq!(parse(Some(&json!([])), Some(&json!("auto")), Some(true)).unwrap(), None);
        assert_eq!(parse(Some(&weather()), Some(&json!("none")), None).unwrap(), None);
    }

    #[test]
    fn the_schema_allows_only_the_chosen_tools_and_a_reply_only_with_auto() {
        let auto = parse(Some(&weather()), None, None).unwrap().unwrap();
        let schema = auto.schema();
        assert_eq!(schema["anyOf"][1]["required"], json!(["response"]));
        let calls = &schema["anyOf"][0]["properties"]["tool_call"]["anyOf"];
        assert_eq!(calls[0]["properties"]["name"]["const"], "get_weather");
        assert_eq!(calls[0]["properties"]["arguments"]["required"], json!(["city"]));
        assert_eq!(
            calls[1]["properties"]["arguments"],
            json!({"type": "object", "properties": {}})
        );

        let named = json!({"type": "function", "function": {"name": "get_time"}});
        let named = parse(Some(&weather()), Some(&named), None).unwrap().unwrap();
        let call = &named.schema()["properties"]["tool_call"];
        assert_eq!(call["properties"]["name"]["const"], "get_time");
        assert!(named.instructions().contains("a call of the tool `get_time`"));
        let required = parse(Some(&weather()), Some(&json!("required")), None).unwrap().unwrap();
        assert!(required.schema()["anyOf"].is_null());
        assert!(required.instructions().contains("\"get_weather\""));
    }

    #[test]
    fn parallel_calls_are_a_bounded_list_of_the_same_calls() {
        let parallel = parse(Some(&weather()), Some(&json!("required")), Some(true)).unwrap();
        let schema = parallel.unwrap().schema();
        let list = &schema["properties"]["tool_calls"];
        assert_eq!(list["type"], "array");
        assert_eq!((list["minItems"].clone(), list["maxItems"].clone()), (json!(1), json!(16)));
        assert_eq!(list["items"]["anyOf"][0]["properties"]["name"]["const"], "get_weather");
        assert_eq!(schema["required"], json!(["tool_calls"]));
        let auto = parse(Some(&weather()), None, Some(true)).unwrap().unwrap();
        assert!(auto.schema()["anyOf"][0]["properties"]["tool_calls"].is_object());
        assert!(auto.instructions().contains(r#"{"tool_calls": [{"name""#));
        // `false`, or not given, keeps one call a turn.
        let single = parse(Some(&weather()), None, Some(false)).unwrap().unwrap();
        assert!(single.schema()["anyOf"][0]["properties"]["tool_call"].is_object());
        assert!(single.instructions().contains("either with a tool call"));
    }

    #[test]
    fn malformed_tools_and_choices_are_refused_naming_what_is_wrong() {
        let cases = [
            (json!({"name": "f"}), json!(null), "tools must be a list"),
            (json!([{"type": "retrieval"}]), json!(null), "only tools of type `function`"),
            (json!([{"type": "function"}]), json!(null), "function must be an object"),
            (
                json!([{"type": "function", "function": {"name": "my tool"}}]),
                json!(null),
                "`my tool` must be",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                json!(null),
                "parameters must be an object",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "description": 3}}]),
                json!(null),
                "description must be a string",
            ),
            (
                json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]),
                json!(null),
                "given twice",
            ),
            (
                weather(),
                json!({"type": "function", "function": {"name": "nope"}}),
                "not among the tools",
            ),
            (weather(), json!({"type": "function"}), "tool_choice must be"),
            (weather(), json!(7), "tool_choice 7 is not supported"),
            (json!([]), json!("required"), "no tools are given"),
        ];
        for (tools, choice, needle) in cases {
            let err = parse(Some(&tools), Some(&choice), None).unwrap_err();
            assert!(err.message.contains(needle), "{tools} {choice}: {}", err.message);
        }
        let many: Vec<Value> = (0..=MAX_TOOLS)
            .map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}}))
            .collect();
        assert!(
            parse(Some(&Value::Array(many)), None, None)
                .unwrap_err()
                .message
                .contains("at most 128")
        );
    }

    #[test]
    fn answers_read_back_as_calls_or_text() {
        let call = read_answer(
            r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#,
        );
        let paris =
            ToolCall { name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() };
        assert_eq!(call, ToolAnswer::Calls(vec![paris.clone()]));
        assert_eq!(read_answer(r#"{"response": "Hello!"}"#), ToolAnswer::Text("Hello!".into()));
        // Cut off before the JSON was whole: the text as it is.
        let cut = r#"{"tool_call": {"name": "get_wea"#;
        assert_eq!(read_answer(cut), ToolAnswer::Text(cut.into()));
        // A reply cut off: what it said so far, as it was streamed.
        let cut = r#"{"response": "Hello, wor"#;
        assert_eq!(read_answer(cut), ToolAnswer::Text("Hello, wor".into()));
        // Several at once, in order.
        let both = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_time", "arguments": {}}]}"#;
        let time = ToolCall { name: "get_time".into(), arguments: "{}".into() };
        assert_eq!(read_answer(both), ToolAnswer::Calls(vec![paris, time]));
        // An empty list, or an entry without its arguments, is no call.
        for odd in [r#"{"tool_calls": []}"#, r#"{"tool_calls": [{"name": "get_time"}]}"#] {
            assert_eq!(read_answer(odd), ToolAnswer::Text(odd.into()));
        }
    }

    #[test]
    fn earlier_turns_become_the_text_the_model_would_have_written() {
        let calls = json!([{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]);
        let text = calls_as_text(&calls).unwrap();
        assert_eq!(
            read_answer(&text),
            read_answer(
                r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#
            )
        );
        assert!(calls_as_text(&json!("x")).is_err());
        // Several calls of one turn become one `tool_calls` list, read back in order.
        let two = json!([
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]);
        let text = calls_as_text(&two).unwrap();
        assert!(text.starts_with(r#"{"tool_calls":["#), "{text}");
        let ToolAnswer::Calls(read) = read_answer(&text) else { panic!("{text}") };
        assert_eq!(
            read.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["get_weather", "get_time"]
        );
        let result = result_as_text(Some("call_1"), "18 °C");
        assert_eq!(
            serde_json::from_str::<Value>(&result).unwrap()["tool_response"]["content"],
            "18 °C"
        );
    }
}
