//! The reply inside an answer to a request with tools, read as it streams.
//!
//! With `tool_choice: "auto"` the model answers either with tool calls or with a reply,
//! `{"response": "…"}` ([`tools`](super::tools)). Most turns of an agent are replies, and a
//! reply should reach the user as it is generated, as an answer without tools does; calls are
//! read only from the whole, verified answer. [`ReplyReader`] reads the answer's JSON text
//! piece by piece: once it has begun as `{"response": "`, it decodes the string's characters
//! (escapes included, also when split between pieces) as they come; an answer that begins any
//! other way is a call, and none of it is streamed.

/// What a reply begins with, JSON whitespace aside.
const REPLY_START: &str = "{\"response\":\"";

/// Offsets into [`REPLY_START`] where JSON allows whitespace: before `{`, after it, after the
/// key and after the colon (not inside the key).
const WHITESPACE_AT: [usize; 4] = [0, 1, 11, 12];

/// Reads an answer to a request with tools as it streams; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct ReplyReader {
    state: State,
    /// Text read but not decoded yet: the answer's start until it is known, then an escape
    /// split between pieces.
    pending: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The answer's start has not shown yet whether it is a reply.
    #[default]
    Start,
    /// Inside the reply's string.
    Reply,
    /// After the reply's closing quote.
    Closed,
    /// The answer is not a reply (a tool call).
    NotReply,
}

impl ReplyReader {
    /// A reader at the start of an answer.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Whether the answer is a reply, as far as it has been read.
    pub(super) fn is_reply(&self) -> bool {
        matches!(self.state, State::Reply | State::Closed)
    }

    /// Reads the answer's next piece; returns the reply's text it adds (empty when none).
    pub(super) fn push(&mut self, piece: &str) -> String {
        match self.state {
            State::NotReply | State::Closed => return String::new(),
            State::Start | State::Reply => self.pending.push_str(piece),
        }
        if self.state == State::Start {
            match reply_content_at(&self.pending) {
                Start::Undecided => return String::new(),
                Start::NotReply => {
                    self.state = State::NotReply;
                    self.pending = String::new();
                    return String::new();
                }
                Start::ContentAt(at) => {
                    self.state = State::Reply;
                    self.pending.drain(..at);
                }
            }
        }
        self.decode()
    }

    /// Decodes what is pending of the reply's string, up to its end or to an escape not read
    /// whole yet (kept for the next piece).
    fn decode(&mut self) -> String {
        let mut out = String::with_capacity(self.pending.len());
        let mut used = 0;
        let text = self.pending.as_str();
        while let Some(c) = text.get(used..).and_then(|rest| rest.chars().next()) {
            match c {
                '"' => {
                    self.state = State::Closed;
                    used = text.len();
                    break;
                }
                '\\' => match unescape(text.get(used..).unwrap_or_default()) {
                    Some((decoded, len)) => {
                        out.push(decoded);
                        used += len;
                    }
                    None => break,
                },
                c => {
                    out.push(c);
                    used += c.len_utf8();
                }
            }
        }
        self.pending.drain(..used);
        out
    }
}

/// The reply in a whole answer `text` when it is one, also when it was cut off before its end
/// (`max_tokens`); `None` for any other answer.
pub(super) fn reply_of(text: &str) -> Option<String> {
    let mut reader = ReplyReader::new();
    let reply = reader.push(text);
    reader.is_reply().then_some(reply)
}

/// What an answer's start says.
enum Start {
    /// Too little of it yet.
    Undecided,
    /// Not a reply.
    NotReply,
    /// A reply, whose string's content begins at this byte offset.
    ContentAt(usize),
}

fn reply_content_at(head: &str) -> Start {
    let expected = REPLY_START.as_bytes();
    let mut matched = 0;
    for (at, c) in head.char_indices() {
        if matches!(c, ' ' | '\t' | '\n' | '\r') && WHITESPACE_AT.contains(&matched) {
            continue;
        }
        if expected.get(matched).is_none_or(|&e| char::from(e) != c) {
            return Start::NotReply;
        }
        matched += 1;
        if matched == expected.len() {
            return Start::ContentAt(at + c.len_utf8());
        }
    }
    Start::Undecided
}

/// The character an escape at the start of `text` stands for and the bytes it takes, or
/// `None` when `text` ends before the escape does. A surrogate pair is one character; a
/// malformed escape or a lone surrogate stands for U+FFFD (the executor's grammar allows
/// neither).
fn unescape(text: &str) -> Option<(char, usize)> {
    let kind = text.get(1..)?.chars().next()?;
    let simple = match kind {
        '"' => '"',
        '\\' => '\\',
        '/' => '/',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => return unescape_unicode(text),
        other => return Some((char::REPLACEMENT_CHARACTER, 1 + other.len_utf8())),
    };
    Some((simple, 2))
}

/// `\uXXXX`, or a surrogate pair `\uXXXX\uXXXX`, at the start of `text`.
fn unescape_unicode(text: &str) -> Option<(char, usize)> {
    // `None`: `text` ends first; `Some(None)`: not four hex digits.
    let unit = |at: usize| -> Option<Option<u32>> {
        let hex = text.as_bytes().get(at..at + 4)?;
        let digits = hex.iter().all(u8::is_ascii_hexdigit).then(|| std::str::from_utf8(hex).ok());
        Some(digits.flatten().and_then(|hex| u32::from_str_radix(hex, 16).ok()))
    };
    let Some(high) = unit(2)? else { return Some((char::REPLACEMENT_CHARACTER, 2)) };
    if !(0xD800..0xDC00).contains(&high) {
        return Some((char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER), 6));
    }
    // A high surrogate: the low one must follow as the next escape.
    if text.as_bytes().get(6..8)? != b"\\u" {
        return Some((char::REPLACEMENT_CHARACTER, 6));
    }
    match unit(8)? {
        Some(low) if (0xDC00..0xE000).contains(&low) => {
            let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            Some((char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 12))
        }
        _ => Some((char::REPLACEMENT_CHARACTER, 6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` in pieces cut at each char boundary of `cuts`; returns the reply's text.
    fn read_in_pieces(text: &str, cuts: &[usize]) -> (String, ReplyReader) {
        let mut reader = ReplyReader::new();
        let mut out = String::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([text.len()].iter()) {
            out.push_str(&reader.push(text.get(from..cut).unwrap_or_default()));
            from = cut;
        }
        (out, reader)
    }

    #[test]
    fn a_reply_streams_the_same_text_however_it_is_cut() {
        let reply = "Line one\nsaid \"hi\" \\ back/slash\ttab é 😀 \u{1} end";
        let answer = serde_json::json!({ "response": reply }).to_string();
        // serde writes only some escapes; add the rest JSON allows.
        let answer =
            answer.replace("é", "\\u00e9").replace("😀", "\\ud83d\\ude00").replace('/', "\\/");
        let boundaries: Vec<usize> = answer.char_indices().map(|(i, _)| i).collect();
        for &cut in &boundaries {
            let (out, reader) = read_in_pieces(&answer, &[cut]);
            assert_eq!(out, reply, "cut at {cut}");
            assert_eq!(reader.state, State::Closed);
        }
        // Every character its own piece.
        let (out, _) = read_in_pieces(&answer, &boundaries);
        assert_eq!(out, reply);
        assert_eq!(reply_of(&answer).as_deref(), Some(reply));
    }

    #[test]
    fn whitespace_between_tokens_is_allowed_but_not_inside_the_key() {
        for answer in
            ["{\"response\":\"x\"}", " {\n  \"response\" : \"x\" }", "{\t\"response\":\r\n\"x\"}"]
        {
            assert_eq!(reply_of(answer).as_deref(), Some("x"), "{answer:?}");
        }
        assert_eq!(reply_of("{\" response\":\"x\"}"), None);
        assert_eq!(reply_of("{\"responses\":\"x\"}"), None);
        assert_eq!(reply_of("{\"response\": 5}"), None);
    }

    #[test]
    fn a_tool_call_streams_nothing() {
        let answer = r#"{"tool_call": {"name": "f", "arguments": {"response": "no"}}}"#;
        let (out, reader) = read_in_pieces(answer, &[1, 3, 10]);
        assert!(out.is_empty());
        assert!(!reader.is_reply());
        assert_eq!(reply_of(answer), None);
    }

    #[test]
    fn a_reply_cut_off_gives_what_was_generated_and_nothing_after_it_closes() {
        assert_eq!(
            reply_of(r#"{"response": "Paris is the cap"#).as_deref(),
            Some("Paris is the cap")
        );
        // An escape cut in half is left out.
        assert_eq!(reply_of(r#"{"response": "caf\u00"#).as_deref(), Some("caf"));
        assert_eq!(reply_of(r#"{"response": "a\"#).as_deref(), Some("a"));
        assert_eq!(reply_of(r#"{"response": ""#).as_deref(), Some(""));
        assert_eq!(reply_of(r#"{"response": "#), None, "its string not begun");
        assert_eq!(reply_of(r#"{"resp"#), None, "not known to be a reply yet");
        let mut reader = ReplyReader::new();
        assert_eq!(reader.push(r#"{"response": "done"} trailing "quoted""#), "done");
        assert_eq!(reader.push(" more \"text\""), "");
    }

    #[test]
    fn malformed_escapes_and_lone_surrogates_stand_for_the_replacement_character() {
        assert_eq!(reply_of(r#"{"response": "a\qb"}"#).as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(reply_of(r#"{"response": "a\ud83dx"}"#).as_deref(), Some("a\u{FFFD}x"));
        assert_eq!(reply_of(r#"{"response": "a\ud83d€"}"#).as_deref(), Some("a\u{FFFD}€"));
        assert_eq!(reply_of(r#"{"response": "a\ude00x"}"#).as_deref(), Some("a\u{FFFD}x"));
        assert_eq!(reply_of(r#"{"response": "a\ud83d\u0041"}"#).as_deref(), Some("a\u{FFFD}A"));
        assert_eq!(reply_of(r#"{"response": "a\uzzzzb"}"#).as_deref(), Some("a\u{FFFD}zzzzb"));
    }
}
