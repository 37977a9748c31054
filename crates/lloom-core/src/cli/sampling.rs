//! `--temperature`, `--top-p`, `--top-k`, `--seed`, `--stop`, the penalties and the answer's
//! format: how an answer is sampled, as the protocol's [`SamplingParams`] carry it.

use crate::cli::OutputFormatArgs;
use crate::error::Result;
use crate::{SamplingParams, WireLimits};

/// Sampling options (flattened into `lloom-client chat` and `lloom-executor generate`). The
/// defaults are [`SamplingParams::default`]: greedy decoding, no cut-offs, free text.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature in [0, 2]; 0 is greedy (the same answer every time).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: draw only from the most likely tokens whose probabilities add up to
    /// this, in (0, 1] (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Draw only from the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: u32,
    /// Seed for sampled decoding: the same seed, executor and request give the same answer.
    #[arg(long)]
    pub seed: Option<u64>,
    /// End the answer where it would produce TEXT, which is left out (repeatable: at most 8,
    /// each at most 64 bytes).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// In [-2, 2]: lowers a token's chance by this much for each time it was already
    /// generated (OpenAI's `frequency_penalty`; 0: off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// In [-2, 2]: lowers a token's chance by this much once it was generated at all
    /// (OpenAI's `presence_penalty`; 0: off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// The shape of the answer.
    #[command(flatten)]
    pub format: OutputFormatArgs,
}

impl SamplingArgs {
    /// The sampling parameters, checked by the rules every executor applies
    /// ([`SamplingParams::validate`]), so a bad value is refused here with the same message
    /// instead of after a round trip.
    pub fn params(&self) -> Result<SamplingParams> {
        let params = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            stop: self.stop.clone(),
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            format: self.format.format()?,
        };
        params.validate(&WireLimits::default())?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        sampling: SamplingArgs,
    }

    fn parse(args: &[&str]) -> SamplingArgs {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied())).unwrap().sampling
    }

    #[test]
    fn no_flags_give_the_protocol_defaults() {
        assert_eq!(parse(&[]).params().unwrap(), SamplingParams::default());
    }

    #[test]
    fn every_flag_reaches_the_parameters() {
        let params = parse(&[
            "--temperature",
            "0.7",
            "--top-p",
            "0.9",
            "--top-k",
            "40",
            "--seed",
            "7",
            "--stop",
            "\n\n",
            "--stop",
            "END",
            "--frequency-penalty",
            "-0.5",
            "--presence-penalty",
            "1.5",
            "--json-object",
        ])
        .params()
        .unwrap();
        assert_eq!(
            params,
            SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                top_k: 40,
                seed: Some(7),
                stop: vec!["\n\n".into(), "END".into()],
                frequency_penalty: -0.5,
                presence_penalty: 1.5,
                format: crate::OutputFormat::JsonObject,
            }
        );
    }

    #[test]
    fn values_an_executor_would_refuse_are_refused_with_the_rule() {
        for (args, message) in [
            (&["--temperature", "2.5"][..], "temperature 2.5 not in [0, 2]"),
            (&["--top-p", "0"][..], "top_p 0 not in (0, 1]"),
            (&["--top-p", "1.5"][..], "top_p 1.5 not in (0, 1]"),
            (&["--stop", ""][..], "empty stop sequence"),
            (&["--frequency-penalty", "-3"][..], "frequency_penalty -3 not in [-2, 2]"),
            (&["--presence-penalty", "NaN"][..], "presence_penalty NaN not in [-2, 2]"),
        ] {
            let err = parse(args).params().unwrap_err().to_string();
            assert!(err.contains(message), "{args:?}: {err}");
        }
        let long_stop = "x".repeat(65);
        let err = parse(&["--stop", &long_stop]).params().unwrap_err().to_string();
        assert!(err.contains("stop sequence"), "{err}");
        let nine: Vec<&str> = ["--stop", "a"].repeat(9);
        let err = parse(&nine).params().unwrap_err().to_string();
        assert!(err.contains("stop sequences"), "{err}");
        assert!(Cli::try_parse_from(["test", "--top-k", "-1"]).is_err());
    }
}
