//! The engine's runs of one or several concurrent streams, and how their decode speed is
//! counted.
//!
//! Every stream is read at once, each of its text events stamped with the time it arrived and
//! the stream's token count. The decode speed is counted from the moment the last stream had
//! its first token (the prompts' steps are behind every stream then) to the end of the run:
//! the tokens sampled after that moment over that time. For one stream this is what the plain
//! loop counts: the tokens after the first over their steps' time.

use std::time::Instant;

use futures::future::try_join_all;

use lloom_core::OutputFormat;

use super::{StreamFigures, chat_request};
use crate::backend::llama::LlamaEngine;
use crate::backend::{Backend, GenerationEvent};
use crate::error::{Error, Result};

/// One stream's text events: when each arrived (seconds since the start) and the stream's
/// tokens so far.
type Timeline = Vec<(f64, u64)>;

/// The tokens sampled after every stream's first token, and the seconds from that moment to
/// `end`; `None` when a stream had no text.
pub(super) fn decode_window(timelines: &[Timeline], end: f64) -> Option<(u64, f64)> {
    let all_started =
        timelines.iter().map(|t| t.first().map(|(at, _)| *at)).collect::<Option<Vec<_>>>()?;
    let from = all_started.into_iter().fold(0.0_f64, f64::max);
    let decoded = timelines
        .iter()
        .map(|timeline| {
            let last = timeline.last().map_or(0, |(_, tokens)| *tokens);
            let at_start =
                timeline.iter().take_while(|(at, _)| *at <= from).last().map_or(0, |(_, n)| *n);
            last.saturating_sub(at_start)
        })
        .sum();
    Some((decoded, end - from))
}

/// Reads one stream to its end; returns its timeline (times since `start`) and its output
/// tokens.
pub(super) async fn read_to_end(
    mut generation: crate::backend::Generation,
    start: Instant,
) -> Result<(Timeline, u64)> {
    let mut timeline = Timeline::new();
    while let Some(event) = generation.events.recv().await {
        match event {
            GenerationEvent::Started { .. } => {}
            GenerationEvent::Text { tokens, .. } => {
                timeline.push((start.elapsed().as_secs_f64(), tokens));
            }
            GenerationEvent::Done(usage) => {
                if let Some(last) = timeline.last_mut() {
                    last.1 = last.1.max(usage.output_tokens);
                }
                return Ok((timeline, usage.output_tokens));
            }
            GenerationEvent::Failed(e)
            | GenerationEvent::Refused(e)
            | GenerationEvent::ContextExceeded(e) => {
                return Err(Error::EngineLoad(e));
            }
        }
    }
    Err(Error::EngineLoad("the engine dropped a stream".into()))
}

/// Runs `streams` concurrent streams of `max_tokens` each to their end.
pub(super) async fn engine_streams(
    engine: &LlamaEngine,
    streams: usize,
    max_tokens: u32,
    format: &OutputFormat,
) -> Result<StreamFigures> {
    let start = Instant::now();
    let mut generations = Vec::with_capacity(streams);
    for _ in 0..streams {
        generations.push(engine.generate(chat_request(max_tokens, format))?);
    }
    let runs = try_join_all(generations.into_iter().map(|g| read_to_end(g, start))).await?;
    let wall = start.elapsed().as_secs_f64();
    let first = runs
        .iter()
        .filter_map(|(timeline, _)| timeline.first().map(|(at, _)| *at))
        .fold(f64::INFINITY, f64::min);
    let total = runs.iter().map(|(_, tokens)| tokens).sum();
    let timelines: Vec<Timeline> = runs.into_iter().map(|(timeline, _)| timeline).collect();
    let (decoded, span) = decode_window(&timelines, wall).unwrap_or((0, wall));
    let per_sec = |tokens: u64, secs: f64| {
        #[allow(clippy::cast_precision_loss)]
        let tokens = tokens as f64;
        tokens / secs.max(f64::MIN_POSITIVE)
    };
    let decode_tokens_per_sec = per_sec(decoded, span);
    Ok(StreamFigures {
        streams,
        first_token_secs: if first.is_finite() { first } else { 0.0 },
        output_tokens: total,
        wall_secs: wall,
        // One stream: its decode speed, as the plain loop counts it; several: all tokens,
        // prompts' steps included, over the whole run.
        tokens_per_sec: match streams {
            1 => decode_tokens_per_sec,
            _ => per_sec(total, wall),
        },
        decode_tokens_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_opens_when_the_last_stream_has_its_first_token() {
        // Two streams: the first had 3 tokens when the second got its first at 0.5 s.
        let a = vec![(0.1, 1), (0.3, 2), (0.5, 3), (0.7, 4), (0.9, 5)];
        let b = vec![(0.5, 1), (0.7, 2), (0.9, 3)];
        let (decoded, secs) = decode_window(&[a, b], 1.0).unwrap();
        assert_eq!(decoded, (5 - 3) + (3 - 1));
        assert!((secs - 0.5).abs() < 1e-9, "{secs}");
        // One stream: the tokens after the first, over the time after it.
        let (decoded, secs) = decode_window(&[vec![(0.2, 1), (0.4, 2), (0.6, 3)]], 0.6).unwrap();
        assert_eq!(decoded, 2);
        assert!((secs - 0.4).abs() < 1e-9, "{secs}");
        // A stream that never had text: no window.
        assert_eq!(decode_window(&[vec![(0.1, 1)], vec![]], 1.0), None);
    }
}
