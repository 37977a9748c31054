//! How densely a model's prompts are counted, learned from verified answers, so that a chat
//! fitted to the context estimates its prompt closely from the start.
//!
//! Without it, a prompt is estimated at six bytes a token (`room.rs`), which prose often beats
//! (four to five bytes a token in English), and each long fitted prompt is refused once before
//! the exact ask; the refusal counts in the executor's metrics although nothing is wrong. Each
//! verified answer says how many tokens its prompt had: the bytes a token beyond the template's
//! assumed tokens are kept for the model's last [`KEPT`] answers, and the densest of them, less
//! a tenth, is the next first estimate. A prompt too short to tell (its tokens mostly the
//! template's) teaches nothing. What an executor claims can only make the client ask for less
//! room (at most one byte a token is assumed), or ask once too much and be refused with the
//! count, as before.

use std::collections::VecDeque;

use super::room::PromptSize;

/// Answers remembered per model.
const KEPT: usize = 16;

/// Models remembered; the one learned longest ago goes first.
const MODELS: usize = 64;

/// Fewest prompt tokens beyond the template's for an answer to teach anything.
const MIN_TOKENS: u64 = 16;

/// Tenths of a byte a token seen in each model's recent answers.
#[derive(Debug, Default)]
pub(crate) struct PromptDensity {
    models: VecDeque<(String, VecDeque<u64>)>,
}

impl PromptDensity {
    /// What a verified answer to a prompt of `size` that counted `input_tokens` shows: tenths
    /// of a byte a token, or `None` when the prompt was too short to tell.
    pub(crate) fn observed(size: PromptSize, input_tokens: u64) -> Option<u64> {
        let content_tokens = input_tokens.saturating_sub(size.template_tokens());
        (content_tokens >= MIN_TOKENS).then(|| (size.bytes * 10 / content_tokens).clamp(10, 60))
    }

    /// Learns from a verified answer for `model` to a prompt of `size` that counted
    /// `input_tokens`.
    #[cfg(test)]
    fn learn(&mut self, model: &str, size: PromptSize, input_tokens: u64) {
        if let Some(tenths) = Self::observed(size, input_tokens) {
            self.record(model, tenths);
        }
    }

    /// Keeps `tenths` ([`PromptDensity::observed`]) as `model`'s most recent observation.
    pub(crate) fn record(&mut self, model: &str, tenths: u64) {
        let at = match self.models.iter().position(|(name, _)| name == model) {
            Some(at) => at,
            None => {
                if self.models.len() >= MODELS {
                    self.models.pop_front();
                }
                self.models.push_back((model.to_owned(), VecDeque::with_capacity(KEPT)));
                self.models.len() - 1
            }
        };
        if let Some((_, seen)) = self.models.get_mut(at) {
            if seen.len() >= KEPT {
                seen.pop_front();
            }
            seen.push_back(tenths);
        }
    }

    /// The tenths of a byte a token to assume first for `model`'s prompts, if its answers have
    /// shown any: the densest recently seen, less a tenth for prompts unlike them.
    pub(crate) fn tenths_per_token(&self, model: &str) -> Option<u64> {
        let (_, seen) = self.models.iter().find(|(name, _)| name == model)?;
        let densest = seen.iter().min()?;
        Some((densest * 9 / 10).max(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(bytes: u64) -> PromptSize {
        PromptSize { bytes, messages: 1 }
    }

    #[test]
    fn the_densest_recent_answer_less_a_tenth_is_assumed() {
        let mut density = PromptDensity::default();
        assert_eq!(density.tenths_per_token("m"), None);
        // 900 bytes counted as 300 tokens, 72 of them the template's: 39 tenths a token.
        density.learn("m", size(900), 300);
        assert_eq!(density.tenths_per_token("m"), Some(35));
        // A sparser prompt does not loosen it; a denser one tightens it.
        density.learn("m", size(4000), 872);
        assert_eq!(density.tenths_per_token("m"), Some(35));
        density.learn("m", size(600), 372);
        assert_eq!(density.tenths_per_token("m"), Some(18));
        assert_eq!(density.tenths_per_token("other"), None, "per model");
    }

    #[test]
    fn short_prompts_teach_nothing_and_claims_are_bounded() {
        let mut density = PromptDensity::default();
        density.learn("m", size(40), 80);
        assert_eq!(density.tenths_per_token("m"), None, "mostly the template's tokens");
        // An executor claiming many tokens for few bytes: one byte a token at most.
        density.learn("m", size(100), 100_000);
        assert_eq!(density.tenths_per_token("m"), Some(10));
        // One claiming few for many: six bytes a token at least.
        let mut sparse = PromptDensity::default();
        sparse.learn("m", size(100_000), 1000);
        assert_eq!(sparse.tenths_per_token("m"), Some(54));
    }

    #[test]
    fn memory_is_bounded_in_answers_and_models() {
        let mut density = PromptDensity::default();
        density.learn("m", size(600), 372);
        for _ in 0..KEPT {
            density.learn("m", size(900), 300);
        }
        assert_eq!(density.tenths_per_token("m"), Some(35), "the dense answer aged out");
        for i in 0..MODELS {
            density.learn(&format!("model-{i}"), size(900), 300);
        }
        assert_eq!(density.models.len(), MODELS);
        assert_eq!(density.tenths_per_token("m"), None, "the first learned went first");
    }
}
