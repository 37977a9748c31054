//! `lloom-client chat`: one verified answer streamed to the terminal, or a conversation.

use std::io::Write;
use std::time::{Duration, Instant};

use lloom_core::cli::NodeArgs;
use lloom_core::{ChatMessage, Role, U256};

use crate::cli::{ChatArgs, DEFAULT_MODEL, connect};
use crate::client::{ChatEvent, ChatRequest, Client, Receipt};
use crate::error::{Error, Result};
use crate::patience::{Patience, Wait};
use crate::report::{receipt_json, render_receipt};
use crate::routing::RouteFilter;
use crate::wait_text::wait_text;

pub(crate) async fn chat(
    args: &ChatArgs,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let sampling = args.sampling.params()?;
    let prompt = match (&args.prompt, args.interactive) {
        (Some(prompt), true) if prompt == lloom_core::cli::STDIN_PROMPT => {
            return Err(Error::InvalidRequest(
                "with --interactive, turns are read from standard input: give a first turn or \
                 none, not -"
                    .into(),
            ));
        }
        (prompt, true) => prompt.clone(),
        (Some(prompt), false) => {
            Some(lloom_core::cli::read_prompt(prompt, std::io::stdin().lock())?)
        }
        (None, false) => None,
    };
    let file = node.config_file()?;
    let retries = args.retries(&file)?;
    let model = (args.model.clone().or(file.client.model)).unwrap_or_else(|| DEFAULT_MODEL.into());
    let max_price = args.max_price.or(file.client.max_price.map(U256::from));
    let client = connect(&args.discovery, node, &args.routing, &args.escrow).await?;
    let mut request = ChatRequest::user(model, "");
    request.messages = (args.system.iter())
        .map(|system| ChatMessage { role: Role::System, content: system.clone() })
        .collect();
    // Without a limit, the answer may use what each executor's context leaves; a conversation
    // keeps room for an answer worth having by leaving out its oldest turns instead.
    request.fit_to_context = args.max_tokens.is_none();
    request.max_tokens = args.max_tokens.unwrap_or(u32::MAX);
    if args.interactive {
        request.min_tokens = crate::conversation::MIN_ANSWER_TOKENS;
    }
    request.sampling = sampling;
    request.timeout = Duration::from_secs(args.request_timeout_secs);
    request.filter = RouteFilter {
        max_price_per_input_token: max_price,
        max_price_per_output_token: max_price,
        min_context: args.min_context,
    };
    let json = node.json;
    if args.interactive {
        let style = crate::conversation::Style { verbose: args.verbose, json, retries };
        let mut input = std::io::BufReader::new(std::io::stdin());
        let ended =
            crate::conversation::converse(&client, &request, prompt, &mut input, style, out).await;
        client.shutdown();
        return ended.map(drop);
    }
    request.messages.push(ChatMessage { role: Role::User, content: prompt.unwrap_or_default() });
    let receipt = stream_answer(&client, request, retries, args.verbose, json, out).await;
    client.shutdown();
    let receipt = receipt?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&receipt_json(&receipt)).unwrap_or_default()
        )?;
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{}", render_receipt(&receipt, args.verbose));
        }
    }
    Ok(())
}

/// Streams an answer to `out` (unless `json`), reporting failovers on stderr. When every
/// executor is busy, or the model's executors are gone for now (restarting), it waits and asks
/// again, up to `retries` times within the request's timeout.
pub async fn stream_answer(
    client: &Client,
    request: ChatRequest,
    retries: u32,
    verbose: bool,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<Receipt> {
    let mut patience = Patience::new(retries, request.timeout, Instant::now());
    let mut waited_out_busy = false;
    loop {
        let mut attempt = request.clone();
        attempt.timeout = patience.left(Instant::now());
        attempt.waited_out_busy = waited_out_busy;
        let error = match stream_once(client, attempt, verbose, json, out).await {
            Err(error) => error,
            answered => return answered,
        };
        let Some(wait) = patience.after(&error, Instant::now()) else { return Err(error) };
        waited_out_busy = matches!(wait, Wait::Busy(_));
        let tries = match patience.retries_left() {
            0 => "last try".to_owned(),
            1 => "1 more try after it".to_owned(),
            n => format!("{n} more tries after it"),
        };
        let when = match wait {
            Wait::Busy(wait) => format!("asking again in {}", wait_text(wait)),
            Wait::Restarting(wait) => {
                format!("asking again once it is back, within {}", wait_text(wait))
            }
        };
        #[allow(clippy::print_stderr)]
        {
            eprintln!("[{error}; {when}, {tries}]");
        }
        wait.pass(client, &request.model).await;
    }
}

/// One try of [`stream_answer`]: its failovers, but no waiting.
async fn stream_once(
    client: &Client,
    request: ChatRequest,
    verbose: bool,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<Receipt> {
    let mut answer = client.chat(request).await?;
    while let Some(event) = answer.next().await {
        match event? {
            ChatEvent::Attempt { executor } if verbose => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("[asking executor {executor}]");
                }
            }
            ChatEvent::Attempt { .. } => {}
            ChatEvent::Text(text) if !json => {
                write!(out, "{text}")?;
                out.flush()?;
            }
            ChatEvent::Text(_) => {}
            ChatEvent::Restart { reason, cost } => {
                if !json {
                    writeln!(out)?;
                }
                let paid = match cost.is_zero() {
                    true => String::new(),
                    false => format!("; its checkpoint of what it streamed costs {cost} wei"),
                };
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "[executor failed mid-answer ({reason}){paid}; the answer restarts on another executor]"
                    );
                }
            }
            ChatEvent::Done(receipt) => {
                if !json {
                    writeln!(out)?;
                }
                return Ok(*receipt);
            }
        }
    }
    Err(Error::State("the answer ended without a receipt".into()))
}
