//! One sequence's samplers: the grammar of its answer's format, kept apart from the rest of
//! the chain (penalties, then greedy or temperature sampling).
//!
//! Masking the whole vocabulary with the grammar at every token costs about as much as the
//! decode step itself on a small model (49,152 tokens checked against the grammar's stacks).
//! Like llama.cpp's own `common_sampler`, a sequence first samples as if it were free and
//! checks only the chosen token against the grammar; only when the grammar rejects it are
//! the logits masked and the token sampled again. The result is the one masking first would
//! give: greedy picks the best token the grammar allows, and a draw that is rejected and made
//! again from the masked distribution selects each allowed token with its masked probability.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use lloom_core::SamplingParams;

use super::Job;

/// The samplers of one sequence.
pub(super) struct Samplers {
    /// Penalties (if any), then greedy or top-k, top-p, temperature and the seeded draw.
    chain: LlamaSampler,
    /// The grammar of the answer's format, if it has one.
    grammar: Option<LlamaSampler>,
    /// The model's end-of-sequence token.
    end: LlamaToken,
}

impl Samplers {
    /// The samplers `job` asks for; fails if its grammar does not load.
    pub(super) fn for_job(model: &LlamaModel, job: &Job) -> Result<Self, String> {
        let grammar = match &job.grammar {
            Some(grammar) => Some(
                LlamaSampler::grammar(model, grammar, "root")
                    .map_err(|e| format!("the answer's grammar does not load: {e}"))?,
            ),
            None => None,
        };
        let chain = chain_for(model, &job.request.sampling, job.request.max_tokens);
        Ok(Self { chain, grammar, end: model.vocab().eos() })
    }

    /// Samples the next token from the `idx`-th logits of the last decode, and accepts it.
    pub(super) fn sample(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            return self.chain.sample(ctx, idx);
        };
        let mut free = ctx.token_data_array_ith(idx);
        self.chain.apply(&mut free);
        let token = match free.selected_token() {
            Some(token) if allows(grammar, token) => token,
            _ => {
                let mut masked = ctx.token_data_array_ith(idx);
                grammar.apply(&mut masked);
                self.chain.apply(&mut masked);
                // The chain always selects; were it not to, the grammar's end is the safe pick.
                masked.selected_token().unwrap_or(self.end)
            }
        };
        grammar.accept(token);
        self.chain.accept(token);
        token
    }
}

/// Whether the grammar, in its current state, allows `token` next.
fn allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
    grammar.apply(&mut one);
    one.data.first().is_some_and(|t| t.logit().is_finite())
}

/// Penalties (if any), then greedy at temperature 0, otherwise top-k, top-p, temperature and
/// the seeded draw.
fn chain_for(model: &LlamaModel, params: &SamplingParams, max_tokens: u32) -> LlamaSampler {
    let mut chain = Vec::new();
    if params.frequency_penalty != 0.0 || params.presence_penalty != 0.0 {
        // Over every token generated so far, as OpenAI counts them.
        let window = i32::try_from(max_tokens).unwrap_or(i32::MAX);
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            window,
            1.0,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        if chain.is_empty() {
            return LlamaSampler::greedy();
        }
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(i32::try_from(params.top_k).unwrap_or(i32::MAX)));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    let seed = params.seed.map_or_else(rand_seed, |s| (s & 0xffff_ffff) as u32);
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

fn rand_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(42)
}
