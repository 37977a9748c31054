//! A server-sent-events reader that takes bytes as they arrive, in pieces of any size.
//!
//! Events end at a blank line (`\n\n`, `\r\n\r\n` or `\r\r`); `data:` lines of one event are
//! joined with `\n`; lines starting with `:` are comments (keep-alives) and ignored, as are
//! `event:`, `id:` and `retry:` fields. An event larger than the limit is an error, so a peer
//! cannot make the reader hold unbounded data.

/// Why the stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseError(pub String);

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseParser {
    buffer: Vec<u8>,
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser refusing events over `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self { buffer: Vec::new(), max_event_bytes }
    }

    /// Feeds bytes; returns the `data` of every event completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, skip)) = find_event_end(&self.buffer) {
            let raw: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            if let Some(data) = event_data(&raw)? {
                events.push(data);
            }
        }
        if self.buffer.len() > self.max_event_bytes {
            return Err(SseError(format!(
                "an event is larger than {} bytes",
                self.max_event_bytes
            )));
        }
        Ok(events)
    }

    /// Bytes held for an incomplete event.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

/// Position and length of the first blank-line separator.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        for sep in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if buf.get(i..i + sep.len()) == Some(sep) {
                return Some((i, sep.len()));
            }
        }
        i += 1;
    }
    None
}

/// The joined `data` lines of one event, or `None` for an event without data (a comment).
fn event_data(raw: &[u8]) -> Result<Option<String>, SseError> {
    let text = std::str::from_utf8(raw).map_err(|_| SseError("an event is not UTF-8".into()))?;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\n\ndata: {\"a\":1}\n\nevent: message\r\ndata: line one\r\ndata: line two\r\n\r\n:ping\n\ndata: [DONE]\n\n";

    fn all_at_once() -> Vec<String> {
        SseParser::new(1024).push(STREAM.as_bytes()).unwrap()
    }

    #[test]
    fn events_comments_multiline_data_and_crlf() {
        assert_eq!(all_at_once(), vec!["{\"a\":1}", "line one\nline two", "[DONE]"]);
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..bytes.len() {
            let mut p = SseParser::new(1024);
            let mut events = p.push(&bytes[..cut]).unwrap();
            events.extend(p.push(&bytes[cut..]).unwrap());
            assert_eq!(events, all_at_once(), "split at {cut}");
        }
        // One byte at a time.
        let mut p = SseParser::new(1024);
        let events: Vec<String> =
            bytes.iter().flat_map(|b| p.push(std::slice::from_ref(b)).unwrap()).collect();
        assert_eq!(events, all_at_once());
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn oversized_and_non_utf8_events_are_errors() {
        let mut p = SseParser::new(16);
        assert!(p.push(b"data: 0123456789abcdefghij").is_err());
        let mut p = SseParser::new(16);
        assert!(p.push(b"data: \xff\xfe\n\n").is_err());
    }
}
