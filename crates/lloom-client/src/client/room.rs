//! How many output tokens to sign for: exactly what the chat asks, or, for a chat that fits
//! its answer to the context ([`ChatRequest::fit_to_context`]), what the executor's context
//! leaves after the prompt.
//!
//! The client has no tokenizer, so the prompt's length is first estimated from its size, at
//! six bytes a token (more than byte-pair vocabularies average over prose, so a prompt that
//! fits is rarely judged too long), plus the tokens a chat template adds; once the model's
//! verified answers have shown how densely its prompts are counted, at that density
//! ([`PromptDensity`](super::density::PromptDensity)). When the estimate was
//! too low the executor refuses, signed, with `ContextExceeded` (no cooldown, no attempt used
//! up); the embedded engine's refusal says how many tokens the prompt has ("prompt has N
//! tokens"), and the next request uses that count. Where a refusal gives no count (a server
//! behind the HTTP backend), the estimate falls to three bytes a token, then one (an upper
//! bound: every vocabulary token covers at least a byte).

use lloom_core::ChatMessage;

use crate::chat::ChatRequest;

/// Template tokens assumed around each message (role markers and separators).
const TOKENS_PER_MESSAGE: u64 = 8;

/// Template tokens assumed once (a template's default system prompt, the generation prompt).
const TOKENS_PER_PROMPT: u64 = 64;

/// How many tenths of a byte of a prompt one token is assumed to cover, least cautious first
/// (the first is replaced by what the model's answers have shown, when they have).
const TENTHS_PER_TOKEN: [u64; 3] = [60, 30, 10];

/// Most times one chat asks again assuming a longer prompt.
const MAX_REESTIMATES: u8 = 3;

/// The output limit to sign for each executor tried for one chat.
#[derive(Clone, Debug)]
pub(crate) struct OutputPlan {
    /// The most output tokens the chat asks for.
    max_tokens: u32,
    /// For a chat fitted to the context: what its prompt is taken to be.
    fit: Option<Fit>,
    /// For a chat fitted to the context: the fewest output tokens worth asking for (at least
    /// one, at most `max_tokens`).
    min_tokens: u32,
}

/// What a fitted chat's prompt is taken to be.
#[derive(Clone, Copy, Debug)]
struct Fit {
    size: PromptSize,
    /// An index into [`TENTHS_PER_TOKEN`].
    estimate: usize,
    /// The first estimate's tenths of a byte a token.
    first_tenths: u64,
    /// The prompt's tokens as an executor counted them, once one has.
    counted: Option<u64>,
    reestimates_left: u8,
}

/// The size of a prompt, from which its tokens are estimated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PromptSize {
    /// UTF-8 bytes of the messages' contents.
    pub(crate) bytes: u64,
    /// Messages.
    pub(crate) messages: u64,
}

impl OutputPlan {
    /// The plan for `request`; `learned_tenths`: the tenths of a byte a token of this model's
    /// prompts cover, as its verified answers have shown, if they have.
    pub(crate) fn new(request: &ChatRequest, learned_tenths: Option<u64>) -> Self {
        let fit = request.fit_to_context.then(|| Fit {
            size: PromptSize::of(&request.messages),
            estimate: 0,
            first_tenths: learned_tenths.unwrap_or(TENTHS_PER_TOKEN[0]).clamp(10, 60),
            counted: None,
            reestimates_left: MAX_REESTIMATES,
        });
        let min_tokens = request.min_tokens.clamp(1, request.max_tokens.max(1));
        Self { max_tokens: request.max_tokens, fit, min_tokens }
    }

    /// The output tokens to ask an executor with `context` tokens for, or why it cannot be
    /// asked (it would refuse at once).
    pub(crate) fn output_tokens(&self, context: u32) -> Result<u32, String> {
        let Some(fit) = self.fit else {
            if self.max_tokens > context {
                return Err(format!(
                    "max_tokens {} is more than the context length {context}",
                    self.max_tokens
                ));
            }
            return Ok(self.max_tokens);
        };
        let prompt = fit.prompt_tokens();
        let room = u64::from(context).saturating_sub(prompt);
        let how = if fit.counted.is_some() { "as the executor counted it" } else { "by its size" };
        if room == 0 {
            return Err(format!(
                "the prompt, about {prompt} tokens {how}, leaves no room in the context length {context}"
            ));
        }
        if room < u64::from(self.min_tokens) {
            return Err(format!(
                "the prompt, about {prompt} tokens {how}, leaves {room} of the context length \
                 {context}, fewer than the {} asked for at least",
                self.min_tokens
            ));
        }
        Ok(self.max_tokens.min(u32::try_from(room).unwrap_or(u32::MAX)))
    }

    /// After a `ContextExceeded` refusal whose signed reason is `reason`: takes the prompt to
    /// be longer (as long as the reason counts it, or by a more cautious estimate) and returns
    /// `true` (ask again), or `false` when it cannot be taken to be longer.
    pub(crate) fn assume_longer_prompt(&mut self, reason: &str) -> bool {
        let Some(fit) = &mut self.fit else { return false };
        if fit.reestimates_left == 0 {
            return false;
        }
        let before = fit.prompt_tokens();
        match counted_prompt_tokens(reason) {
            Some(counted) if counted > before => fit.counted = Some(counted),
            _ => {
                let Some(next) = (fit.estimate + 1..TENTHS_PER_TOKEN.len())
                    .find(|&e| fit.size.tokens(fit.tenths(e)) > before)
                else {
                    return false;
                };
                (fit.estimate, fit.counted) = (next, None);
            }
        }
        fit.reestimates_left -= 1;
        true
    }
}

impl Fit {
    fn prompt_tokens(&self) -> u64 {
        self.counted.unwrap_or_else(|| self.size.tokens(self.tenths(self.estimate)))
    }

    /// The tenths of a byte a token under estimate `estimate`.
    fn tenths(&self, estimate: usize) -> u64 {
        match estimate {
            0 => self.first_tenths,
            e => TENTHS_PER_TOKEN.get(e).copied().unwrap_or(10),
        }
    }
}

impl PromptSize {
    /// The size of `messages`.
    pub(crate) fn of(messages: &[ChatMessage]) -> Self {
        Self {
            bytes: messages.iter().map(|m| m.content.len() as u64).sum(),
            messages: messages.len() as u64,
        }
    }

    /// The tokens assumed at `tenths` tenths of a byte a token.
    fn tokens(self, tenths: u64) -> u64 {
        (self.bytes * 10).div_ceil(tenths.max(1)) + self.template_tokens()
    }

    /// The tokens a chat template is assumed to add.
    pub(crate) fn template_tokens(self) -> u64 {
        self.messages * TOKENS_PER_MESSAGE + TOKENS_PER_PROMPT
    }
}

/// The prompt's token count a refusal states ("prompt has N tokens" or "prompt of N tokens",
/// as the embedded engine words it), if it states one.
fn counted_prompt_tokens(reason: &str) -> Option<u64> {
    ["prompt has ", "prompt of "].iter().find_map(|lead| {
        let (_, rest) = reason.split_once(lead)?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at_checked(digits)?;
        if after.starts_with(" tokens") { number.parse().ok() } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted(prompt: &str, max_tokens: u32) -> OutputPlan {
        let request =
            ChatRequest { max_tokens, fit_to_context: true, ..ChatRequest::user("m", prompt) };
        OutputPlan::new(&request, None)
    }

    #[test]
    fn a_fixed_limit_is_asked_as_is_or_not_at_all() {
        let mut plan =
            OutputPlan::new(&ChatRequest { max_tokens: 100, ..ChatRequest::user("m", "hi") }, None);
        assert_eq!(plan.output_tokens(100), Ok(100));
        assert_eq!(plan.output_tokens(4096), Ok(100));
        let err = plan.output_tokens(99).unwrap_err();
        assert!(err.contains("max_tokens 100 is more than the context length 99"), "{err}");
        assert!(!plan.assume_longer_prompt("prompt has 5 tokens"), "nothing to re-estimate");
    }

    #[test]
    fn a_fitted_chat_asks_for_what_the_context_leaves_up_to_its_cap() {
        // 600 bytes, one message: 100 + 8 + 64 = 172 tokens assumed at first.
        let plan = fitted(&"a".repeat(600), u32::MAX);
        assert_eq!(plan.output_tokens(1000), Ok(1000 - 172));
        let capped = fitted(&"a".repeat(600), 50);
        assert_eq!(capped.output_tokens(1000), Ok(50));
    }

    #[test]
    fn a_fitted_chat_with_a_floor_is_not_asked_where_less_room_is_left() {
        // 172 tokens assumed, as above.
        let floor = |max_tokens, min_tokens| {
            let request = ChatRequest {
                max_tokens,
                min_tokens,
                fit_to_context: true,
                ..ChatRequest::user("m", "a".repeat(600))
            };
            OutputPlan::new(&request, None)
        };
        assert_eq!(floor(u32::MAX, 100).output_tokens(272), Ok(100), "exactly the floor");
        let err = floor(u32::MAX, 100).output_tokens(271).unwrap_err();
        assert!(
            err.contains("leaves 99 of the context length 271, fewer than the 100 asked for"),
            "{err}"
        );
        // A floor above the cap is the cap; a floor of 0 is one token.
        assert_eq!(floor(50, 100).output_tokens(222), Ok(50));
        assert!(floor(50, 100).output_tokens(221).is_err());
        assert_eq!(floor(u32::MAX, 0).output_tokens(173), Ok(1));
        // Without fitting, the floor means nothing.
        let fixed = ChatRequest { max_tokens: 10, min_tokens: 500, ..ChatRequest::user("m", "") };
        assert_eq!(OutputPlan::new(&fixed, None).output_tokens(10), Ok(10));
    }

    #[test]
    fn a_refusal_that_counts_the_prompt_gives_the_exact_room() {
        let mut plan = fitted(&"a".repeat(600), u32::MAX);
        assert!(plan.assume_longer_prompt("prompt has 431 tokens, more than the 172 allowed"));
        assert_eq!(plan.output_tokens(1000), Ok(1000 - 431));
        // A count no longer than what is assumed already is no news: a more cautious estimate.
        assert!(plan.assume_longer_prompt("prompt of 12 tokens plus max_tokens 9 exceeds"));
        assert_eq!(plan.output_tokens(1000), Ok(1000 - 672), "one byte a token");
        let err = plan.output_tokens(672).unwrap_err();
        assert!(err.contains("about 672 tokens by its size, leaves no room"), "{err}");
    }

    #[test]
    fn without_counts_refusals_assume_ever_longer_prompts_until_the_upper_bound() {
        let mut plan = fitted(&"a".repeat(600), u32::MAX);
        assert!(plan.assume_longer_prompt("This model's maximum context length is 1000 tokens"));
        assert_eq!(plan.output_tokens(1000), Ok(1000 - (200 + 72)));
        assert!(plan.assume_longer_prompt("too long"));
        assert_eq!(plan.output_tokens(1000), Ok(1000 - (600 + 72)));
        assert!(!plan.assume_longer_prompt("too long"), "one byte a token is the last estimate");
        assert_eq!(plan.output_tokens(1000), Ok(1000 - 672));
    }

    #[test]
    fn an_executor_counting_ever_more_tokens_is_believed_a_bounded_number_of_times() {
        let mut plan = fitted("hi", u32::MAX);
        for count in 100..103 {
            assert!(plan.assume_longer_prompt(&format!("prompt has {count} tokens")));
            assert_eq!(plan.output_tokens(1000), Ok(1000 - u32::try_from(count).unwrap()));
        }
        assert!(!plan.assume_longer_prompt("prompt has 500 tokens"));
        assert_eq!(plan.output_tokens(1000), Ok(1000 - 102), "the last count believed");
    }

    #[test]
    fn a_prompt_that_leaves_no_room_is_not_asked() {
        let plan = fitted(&"a".repeat(6000), u32::MAX);
        let err = plan.output_tokens(1072).unwrap_err();
        assert!(err.contains("about 1072 tokens by its size, leaves no room"), "{err}");
        assert_eq!(plan.output_tokens(1073), Ok(1));
    }

    #[test]
    fn multibyte_text_counts_its_bytes() {
        // "é" is two bytes: 300 characters are 600 bytes.
        let plan = fitted(&"é".repeat(300), u32::MAX);
        assert_eq!(plan.output_tokens(1000), Ok(1000 - 172));
    }

    #[test]
    fn counts_are_read_only_where_the_engine_states_them() {
        assert_eq!(
            counted_prompt_tokens("prompt has 2100 tokens, more than the 900 allowed"),
            Some(2100)
        );
        assert_eq!(
            counted_prompt_tokens("prompt of 17 tokens plus max_tokens 4 exceeds the 16 tokens"),
            Some(17)
        );
        assert_eq!(counted_prompt_tokens("prompt has 12 words"), None);
        assert_eq!(counted_prompt_tokens("prompt has  tokens"), None);
        assert_eq!(counted_prompt_tokens("prompt has 99999999999999999999999 tokens"), None);
        assert_eq!(counted_prompt_tokens("maximum context length is 4096 tokens"), None);
    }
}
