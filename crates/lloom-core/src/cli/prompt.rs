//! A prompt given on the command line, or `-` for one read from standard input
//! (`cat notes.txt | lloom-client chat - --system "Summarise this."`).

use std::io::Read;

use crate::WireLimits;
use crate::error::{Error, Result};

/// The prompt argument that stands for standard input.
pub const STDIN_PROMPT: &str = "-";

/// `arg` itself, or for [`STDIN_PROMPT`] all of `stdin`, which must be UTF-8 text of at most
/// one request frame ([`WireLimits::DEFAULT_MAX_FRAME_BYTES`]); more is refused before any of
/// it is sent, not cut short.
pub fn read_prompt(arg: &str, stdin: impl Read) -> Result<String> {
    if arg != STDIN_PROMPT {
        return Ok(arg.to_owned());
    }
    let limit = u64::from(WireLimits::DEFAULT_MAX_FRAME_BYTES);
    let mut bytes = Vec::new();
    stdin.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::InvalidMessage(format!(
            "the prompt on standard input is over {limit} bytes, the most one request carries"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidMessage("the prompt on standard input is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(Error::InvalidMessage("the prompt on standard input is empty".into()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_dash_reads_standard_input_and_anything_else_is_the_prompt() {
        let stdin = "Line one.\nLine two.\n".as_bytes();
        assert_eq!(read_prompt("-", stdin).unwrap(), "Line one.\nLine two.\n");
        assert_eq!(read_prompt("Hi", "ignored".as_bytes()).unwrap(), "Hi");
    }

    #[test]
    fn empty_oversized_or_binary_input_is_refused() {
        let err = read_prompt("-", " \n".as_bytes()).unwrap_err().to_string();
        assert!(err.contains("the prompt on standard input is empty"), "{err}");
        let err = read_prompt("-", &[0xff, 0xfe, b'a'][..]).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        let big = vec![b'a'; WireLimits::DEFAULT_MAX_FRAME_BYTES as usize + 1];
        let err = read_prompt("-", &big[..]).unwrap_err().to_string();
        assert!(err.contains("is over 1048576 bytes, the most one request carries"), "{err}");
        let just_fits = vec![b'a'; WireLimits::DEFAULT_MAX_FRAME_BYTES as usize];
        assert_eq!(read_prompt("-", &just_fits[..]).unwrap().len(), just_fits.len());
    }
}
