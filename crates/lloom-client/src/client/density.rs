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
use std::io::Read;
use std::path::Path;

use super::room::PromptSize;

/// Largest file of learned densities read (64 models of 16 numbers need a few KiB).
const MAX_FILE_BYTES: u64 = 256 * 1024;

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

    /// What an earlier run kept in `path` ([`PromptDensity::save`]); empty when there is no
    /// such file, or, with a warning, when it does not read (it is a cache: learning starts
    /// over). What it holds is bounded as learning bounds it.
    pub(crate) fn load(path: &Path) -> Self {
        let read = || -> Result<Vec<(String, Vec<u64>)>, String> {
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let mut text = String::new();
            file.take(MAX_FILE_BYTES).read_to_string(&mut text).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        let saved = match read() {
            Ok(saved) => saved,
            Err(_) if !path.exists() => return Self::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), "the learned prompt densities do not read ({e}); learning starts over");
                return Self::default();
            }
        };
        let mut density = Self::default();
        for (model, seen) in saved.into_iter().rev().take(MODELS).rev() {
            for tenths in seen.into_iter().rev().take(KEPT).rev() {
                density.record(&model, tenths.clamp(10, 60));
            }
        }
        density
    }

    /// Keeps what was learned in `path` for the next run (written whole, then renamed over it).
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let saved: Vec<(&String, &VecDeque<u64>)> =
            self.models.iter().map(|(model, seen)| (model, seen)).collect();
        let text = serde_json::to_string(&saved).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, path)
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
    #![allow(clippy::unwrap_used)]

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
    fn what_was_learned_is_kept_between_runs_and_a_bad_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client").join("prompt-density.json");
        assert_eq!(PromptDensity::load(&path).tenths_per_token("m"), None, "no file yet");
        let mut density = PromptDensity::default();
        density.learn("m", size(900), 300);
        density.learn("n", size(600), 372);
        density.save(&path).unwrap();
        let loaded = PromptDensity::load(&path);
        assert_eq!(loaded.tenths_per_token("m"), Some(35));
        assert_eq!(loaded.tenths_per_token("n"), Some(18));
        // Out of bounds values are brought within them.
        std::fs::write(&path, r#"[["m", [0, 99999]]]"#).unwrap();
        assert_eq!(PromptDensity::load(&path).tenths_per_token("m"), Some(10));
        for bad in ["not json", r#"{"m": 3}"#, r#"[["m", [-1]]]"#] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(PromptDensity::load(&path).models.len(), 0, "{bad}");
        }
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
