//! `lloom-client chat --interactive`: a conversation, one verified answer a turn.
//!
//! Each line read is a user turn; the request carries the conversation so far (the system
//! message, then earlier turns and their verified answers), signed afresh, so any executor
//! can take any turn. `/reset` starts the conversation again, `/exit` (or the end of input)
//! ends it. A turn that fails is reported and left out of the conversation, which goes on.
//! When the conversation has outgrown every executor's context (each refuses it with a signed
//! `ContextExceeded`, or, with no `--max-tokens`, would leave fewer than [`MIN_ANSWER_TOKENS`]
//! for the answer), its oldest turns are left out until it fits, and the user is told; a turn
//! that does not fit even alone is reported, and the conversation stays as it was.

use std::io::{BufRead, Read, Write};

use lloom_core::{ChatMessage, Role, U256, WireLimits};

use crate::cli::stream_answer;
use crate::client::{ChatRequest, Client};
use crate::error::{Error, Result};
use crate::report::{receipt_json, render_receipt};

/// The fewest tokens a turn's answer is given room for when no `--max-tokens` is set: a
/// conversation whose context leaves less has its oldest turns left out.
pub const MIN_ANSWER_TOKENS: u32 = 256;

/// Longest line read as one turn, in bytes: one request frame.
const MAX_LINE_BYTES: u64 = WireLimits::DEFAULT_MAX_FRAME_BYTES as u64;

/// What the verified answers of a conversation cost (a stream that broke is paid for its
/// last checkpoint, which `lloom-client receipts` lists, not counted here).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Verified answers.
    pub answers: u64,
    /// Turns that got no verified answer.
    pub failures: u64,
    /// Prompt and generated tokens paid for.
    pub tokens: u64,
    /// Wei owed for them.
    pub cost: U256,
}

/// How a conversation reports.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Every attempt and the full receipt of each answer.
    pub verbose: bool,
    /// One JSON receipt a line on `out` instead of text.
    pub json: bool,
    /// Times a turn is asked again when every executor is busy or the model's executors are
    /// restarting.
    pub retries: u32,
}

/// Holds a conversation with the network: `template` gives the model, the system message (its
/// messages) and the sampling; `first` is a first turn; further turns are read from `input`.
pub async fn converse(
    client: &Client,
    template: &ChatRequest,
    first: Option<String>,
    input: &mut (dyn BufRead + Send),
    style: Style,
    out: &mut (dyn Write + Send),
) -> Result<Totals> {
    let mut history: Vec<ChatMessage> = Vec::new();
    // The executor that answered the last turn: asked first, its prompt cache holding the
    // history.
    let mut last_executor = None;
    let mut totals = Totals::default();
    let mut next = first;
    loop {
        let line = match next.take() {
            Some(line) => line,
            None => {
                note(&format!("{}> ", template.model), false);
                match read_turn(input)? {
                    Some(line) => line,
                    None => break,
                }
            }
        };
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.clear();
                last_executor = None;
                note("[a new conversation]", true);
                continue;
            }
            "/help" => {
                note("[a line is your turn; /reset starts over; /exit ends]", true);
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage { role: Role::User, content: line.trim_end().to_owned() });
        keep_within(&mut history, WireLimits::default().max_messages, template.messages.len());
        // What is sent: the history, less its oldest turns while it does not fit (kept so
        // only once a shorter conversation is answered).
        let mut sent = history.clone();
        let answered = loop {
            let mut request = template.clone();
            request.messages.extend(sent.iter().cloned());
            request.prefer = last_executor;
            match stream_answer(client, request, style.retries, style.verbose, style.json, out)
                .await
            {
                Err(Error::ContextExceeded { .. }) if drop_oldest_exchange(&mut sent) > 0 => {
                    let kept = sent.len();
                    note(
                        &format!(
                            "[the conversation outgrew the model's context: the oldest turns are left out, {kept} messages kept]"
                        ),
                        true,
                    );
                }
                answered => break answered,
            }
        };
        match answered {
            Ok(receipt) => {
                last_executor = Some(receipt.executor);
                history = sent;
                totals.answers += 1;
                totals.tokens += receipt.input_tokens + receipt.output_tokens;
                totals.cost = totals.cost.saturating_add(receipt.cost);
                history.push(ChatMessage { role: Role::Assistant, content: receipt.text.clone() });
                if style.json {
                    writeln!(out, "{}", receipt_json(&receipt))?;
                } else if style.verbose {
                    note(&render_receipt(&receipt, true), true);
                } else {
                    note(
                        &format!(
                            "[verified: executor {}, {} + {} tokens, {} wei, first token after {} ms]",
                            receipt.executor,
                            receipt.input_tokens,
                            receipt.output_tokens,
                            receipt.cost,
                            receipt.ttft.as_millis()
                        ),
                        true,
                    );
                }
            }
            Err(error) => {
                // The turn is left out, so the next one reads as if it had not been asked.
                history.pop();
                totals.failures += 1;
                note(&format!("[no answer: {error}]"), true);
            }
        }
    }
    note(
        &format!(
            "[{} answers, {} failed; {} tokens, {} wei for the answers]",
            totals.answers, totals.failures, totals.tokens, totals.cost
        ),
        true,
    );
    Ok(totals)
}

/// The next line of `input` without its line ending, or `None` at the end; a line longer than
/// [`MAX_LINE_BYTES`] or not UTF-8 is refused (it could not be sent whole).
fn read_turn(input: &mut (dyn BufRead + Send)) -> Result<Option<String>> {
    let mut bytes = Vec::new();
    let read = (&mut *input).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut bytes)?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.len() as u64 > MAX_LINE_BYTES {
        return Err(Error::InvalidRequest(format!(
            "a line of input is over {MAX_LINE_BYTES} bytes, the most one request carries"
        )));
    }
    let line = String::from_utf8(bytes)
        .map_err(|_| Error::InvalidRequest("a line of input is not UTF-8".into()))?;
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned()))
}

/// Drops the oldest turns until the request's messages (`fixed` of the template's, then
/// `history`) number at most `max`, so a long conversation stays sendable; what is kept
/// starts with a user turn, as chat templates expect.
fn keep_within(history: &mut Vec<ChatMessage>, max: usize, fixed: usize) {
    let room = max.saturating_sub(fixed).max(1);
    let mut drop = history.len().saturating_sub(room);
    while history.get(drop).is_some_and(|m| m.role != Role::User) {
        drop += 1;
    }
    history.drain(..drop.min(history.len()));
}

/// Leaves out the oldest exchange (the first user turn and the answers up to the next user
/// turn), never the last turn; returns how many messages went (0: only the last turn is left).
fn drop_oldest_exchange(history: &mut Vec<ChatMessage>) -> usize {
    let last = history.len().saturating_sub(1);
    let next_user = history
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, m)| m.role == Role::User)
        .map_or(last, |(i, _)| i)
        .min(last);
    history.drain(..next_user);
    next_user
}

/// Writes to stderr: what the user reads beside the answers on stdout.
fn note(text: &str, newline: bool) {
    let mut err = std::io::stderr().lock();
    let _ = if newline { writeln!(err, "{text}") } else { write!(err, "{text}") };
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn turns_are_lines_without_their_endings_and_too_long_ones_are_refused() {
        let mut input: &[u8] = b"first\r\nsecond\nlast";
        let mut turns = Vec::new();
        while let Some(turn) = read_turn(&mut input).unwrap() {
            turns.push(turn);
        }
        assert_eq!(turns, ["first", "second", "last"]);
        let long = vec![b'a'; WireLimits::DEFAULT_MAX_FRAME_BYTES as usize + 1];
        let err = read_turn(&mut &long[..]).unwrap_err().to_string();
        assert!(err.contains("the most one request carries"), "{err}");
        let err = read_turn(&mut &[0xffu8, b'\n'][..]).unwrap_err().to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn an_exchange_at_a_time_is_left_out_but_never_the_last_turn() {
        let message = |role, content: &str| ChatMessage { role, content: content.into() };
        let mut history = vec![
            message(Role::User, "a"),
            message(Role::Assistant, "b"),
            message(Role::User, "c"),
            message(Role::Assistant, "d"),
            message(Role::User, "e"),
        ];
        assert_eq!(drop_oldest_exchange(&mut history), 2);
        assert_eq!(history.first().map(|m| m.content.as_str()), Some("c"));
        assert_eq!(drop_oldest_exchange(&mut history), 2);
        assert_eq!(history, [message(Role::User, "e")]);
        assert_eq!(drop_oldest_exchange(&mut history), 0, "the turn being asked stays");
        assert_eq!(drop_oldest_exchange(&mut Vec::new()), 0);
    }

    #[test]
    fn the_oldest_turns_go_first_when_the_conversation_is_too_long() {
        // Turns alternate user (even) and assistant (odd), ending with a user turn.
        let turn = |n: usize| ChatMessage {
            role: if n.is_multiple_of(2) { Role::User } else { Role::Assistant },
            content: n.to_string(),
        };
        let mut history: Vec<ChatMessage> = (0..11).map(turn).collect();
        keep_within(&mut history, 6, 1);
        let kept: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(kept, ["6", "7", "8", "9", "10"], "a user turn first");
        keep_within(&mut history, 6, 1);
        assert_eq!(history.len(), 5, "within the bound: nothing dropped");
        let mut long: Vec<ChatMessage> = (0..11).map(turn).collect();
        keep_within(&mut long, 5, 1);
        let kept: Vec<&str> = long.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(kept, ["8", "9", "10"], "an assistant turn is not left first");
    }
}
