//! Assembling streamed text from token pieces: whole UTF-8 characters only, and never any part
//! of a stop sequence.

/// Turns token bytes into text to send, detecting stop sequences.
///
/// Bytes that do not yet form a whole UTF-8 character, and a tail that could still become a
/// stop sequence, are held back until more bytes arrive or the generation ends.
#[derive(Debug, Default)]
pub struct StreamText {
    pending: Vec<u8>,
    unsent: String,
    stops: Vec<String>,
    longest_stop: usize,
    stopped: bool,
}

impl StreamText {
    /// A new assembler that stops at any of `stops`.
    pub fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest_stop = stops.iter().map(String::len).max().unwrap_or(0);
        Self { stops, longest_stop, ..Self::default() }
    }

    /// Whether a stop sequence was produced.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds the bytes of one token; returns the text that is now safe to send.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        if self.stopped {
            return String::new();
        }
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes (not just incomplete): replace them rather than stall.
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                self.unsent.push_str(&text);
                return self.release(false);
            }
            Err(e) => e.valid_up_to(),
        };
        let complete: Vec<u8> = self.pending.drain(..valid).collect();
        self.unsent.push_str(&String::from_utf8_lossy(&complete));
        self.release(false)
    }

    /// The generation ended: returns whatever is left to send.
    pub fn finish(&mut self) -> String {
        if !self.stopped && !self.pending.is_empty() {
            let rest = String::from_utf8_lossy(&self.pending).into_owned();
            self.unsent.push_str(&rest);
            self.pending.clear();
        }
        self.release(true)
    }

    fn release(&mut self, end: bool) -> String {
        if self.stopped {
            return String::new();
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.unsent.find(s.as_str())).min() {
            self.stopped = true;
            self.unsent.truncate(at);
            return std::mem::take(&mut self.unsent);
        }
        if end || self.longest_stop == 0 {
            return std::mem::take(&mut self.unsent);
        }
        // Hold back the longest tail that is a prefix of some stop sequence.
        let mut keep = 0;
        for stop in &self.stops {
            for len in (1..stop.len().min(self.unsent.len() + 1)).rev() {
                if self.unsent.is_char_boundary(self.unsent.len() - len)
                    && stop.is_char_boundary(len)
                    && self.unsent.ends_with(&stop[..len])
                {
                    keep = keep.max(len);
                    break;
                }
            }
        }
        let cut = self.unsent.len() - keep;
        let rest = self.unsent.split_off(cut);
        std::mem::replace(&mut self.unsent, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let mut st = StreamText::new(&stops);
        let mut out = String::new();
        for p in pieces {
            out.push_str(&st.push(p));
        }
        out.push_str(&st.finish());
        (out, st.stopped())
    }

    #[test]
    fn utf8_split_across_tokens_is_reassembled() {
        let euro = "€".as_bytes();
        let (out, stopped) = run(&[], &[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!((out.as_str(), stopped), ("a€b", false));
    }

    #[test]
    fn stop_sequence_across_tokens_is_never_emitted() {
        let stops = &["\n\nUser:"];
        let mut st = StreamText::new(&stops.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(st.push(b"Paris."), "Paris.");
        assert_eq!(st.push(b"\n"), "");
        assert_eq!(st.push(b"\nUs"), "");
        assert_eq!(st.push(b"er: hi"), "");
        assert!(st.stopped());
        assert_eq!(st.finish(), "");
    }

    #[test]
    fn false_alarm_is_released() {
        let (out, stopped) = run(&["STOP"], &[b"ST", b"OR", b"Y"]);
        assert_eq!((out.as_str(), stopped), ("STORY", false));
    }

    #[test]
    fn text_before_the_stop_is_kept() {
        let (out, stopped) = run(&["</s>", "###"], &[b"one two ##", b"# three"]);
        assert_eq!((out.as_str(), stopped), ("one two ", true));
    }

    #[test]
    fn invalid_bytes_do_not_stall_the_stream() {
        let (out, _) = run(&[], &[b"ok", &[0xff, 0xfe], b"!"]);
        assert!(out.starts_with("ok") && out.ends_with('!'));
    }
}
