//! The TOML configuration file shared by the node binaries.
//!
//! Precedence, highest first: command-line flags, environment variables, this file, built-in
//! defaults. Unknown keys are refused, so a typo is an error rather than a silently ignored
//! setting.
//!
//! ```toml
//! [network]
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! bootstrap = ["/ip4/192.0.2.10/tcp/4001/p2p/16Uiu2HAkwdQ9geiyZ6Mv6vfoZcWW6frHNDe2GajMmmFpc2dG7SwC"]
//! mdns = false
//!
//! [validator]
//! stale_after_secs = 30
//!
//! [client]
//! timeout_secs = 10
//! max_age_secs = 60
//! ```

use std::path::Path;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole file; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Network settings for every node.
    #[serde(default)]
    pub network: NetworkSection,
    /// Validator settings.
    #[serde(default)]
    pub validator: ValidatorSection,
    /// Client settings.
    #[serde(default)]
    pub client: ClientSection,
    /// Executor settings.
    #[serde(default)]
    pub executor: ExecutorSection,
}

/// `[network]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Listen addresses.
    pub listen: Option<Vec<Multiaddr>>,
    /// Bootstrap peers (with `/p2p/<id>`).
    pub bootstrap: Option<Vec<Multiaddr>>,
    /// mDNS discovery on the local network.
    pub mdns: Option<bool>,
    /// When to reserve a relayed address on a validator: `auto` (behind NAT, as AutoNAT
    /// finds), `always` or `never`. Executors and validators; clients never need one.
    pub relay: Option<crate::network::RelayMode>,
    /// Let AutoNAT probes use private addresses (labs and private networks).
    pub nat_probe_private_addrs: Option<bool>,
}

/// `[validator]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorSection {
    /// Seconds without a heartbeat after which an executor leaves the registry.
    pub stale_after_secs: Option<u64>,
    /// Most executors the registry holds (announcements of new ones beyond it are refused).
    pub max_executors: Option<u64>,
}

/// `[client]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Seconds to wait for validators.
    pub timeout_secs: Option<u64>,
    /// Oldest announcement accepted from a validator, in seconds.
    pub max_age_secs: Option<u64>,
    /// The model `chat` asks when `--model` is not given.
    pub model: Option<String>,
    /// Highest price per token (input and output, in wei) `chat` accepts when `--max-price`
    /// is not given.
    pub max_price: Option<u64>,
    /// How executors are chosen when `--strategy` is not given: `cheapest`, `fastest` or
    /// `balanced` (checked by the client, which defines them).
    pub strategy: Option<String>,
    /// Times `chat` asks again after a busy or restarting answer when `--retries` is not
    /// given (at most 100, checked by the client).
    pub retries: Option<u32>,
}

/// `[executor]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSection {
    /// A GGUF file to serve instead of the default model.
    pub model_path: Option<std::path::PathBuf>,
    /// The model name to announce.
    pub model_name: Option<String>,
    /// Wei per prompt token.
    pub price_per_input_token: Option<u64>,
    /// Wei per generated token.
    pub price_per_output_token: Option<u64>,
    /// Sequences decoded together.
    pub max_sequences: Option<u32>,
    /// Total context (KV cache) in tokens.
    pub n_ctx: Option<u32>,
    /// Element type of the KV cache: `f16`, `q8_0` or `q4_0`.
    pub kv_cache_type: Option<String>,
    /// Layers to offload to the GPU: `"auto"` (as many as fit), `"all"`, or a number.
    pub gpu_layers: Option<TextOrNumber>,
    /// A signed checkpoint every this many tokens (0: none).
    pub checkpoint_every: Option<u64>,
    /// Requests per minute per client.
    pub requests_per_minute: Option<u32>,
    /// Output tokens per minute per client.
    pub tokens_per_minute: Option<u32>,
    /// Most milliseconds between disk syncs of the nonce store (0: sync every request).
    pub nonce_sync_ms: Option<u64>,
    /// Microseconds a store's writer waits for more writes when others are already waiting.
    pub commit_delay_us: Option<u64>,
    /// Memory the models may use: a size (`20GiB`) or a share of the free memory (`0.8`).
    pub memory_budget: Option<String>,
    /// Requests one client may have waiting for the engine (the queue serves clients in turn).
    pub queue_per_client: Option<usize>,
    /// Seconds the requests in flight get to finish at shutdown (0: stop at once).
    pub drain_secs: Option<u64>,
    /// Several models served under the memory budget, instead of `model_path`: loaded on
    /// demand, the least recently used idle one unloaded when the budget is full.
    pub models: Option<Vec<ModelSection>>,
}

/// One `[[executor.models]]` entry; unset keys take the `[executor]` values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The GGUF file (absent: the default model).
    pub path: Option<std::path::PathBuf>,
    /// The name to announce (default: the file stem).
    pub name: Option<String>,
    /// Wei per prompt token.
    pub price_per_input_token: Option<u64>,
    /// Wei per generated token.
    pub price_per_output_token: Option<u64>,
    /// Sequences decoded together.
    pub max_sequences: Option<u32>,
    /// Total context (KV cache) in tokens.
    pub n_ctx: Option<u32>,
    /// Element type of the KV cache: `f16`, `q8_0` or `q4_0`.
    pub kv_cache_type: Option<String>,
    /// Layers to offload to the GPU: `"auto"` (as many as fit), `"all"`, or a number.
    pub gpu_layers: Option<TextOrNumber>,
}

/// A setting written either as a number or as a word (`gpu_layers = 20`, `gpu_layers = "all"`);
/// the node that reads it parses its text (as `Display` writes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextOrNumber {
    /// Written as a number.
    Number(u64),
    /// Written as a string.
    Text(String),
}

impl std::fmt::Display for TextOrNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(text) => f.write_str(text),
        }
    }
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let error = |message: String| Error::ConfigFile { path: path.to_owned(), message };
        let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(error(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| error(e.to_string()))
    }

    /// The file named by `path`, or an empty configuration when there is none.
    pub fn load_optional(path: Option<&Path>) -> Result<Self> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lloom.toml");
        std::fs::write(
            &path,
            "[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n[validator]\nstale_after_secs = 5\n",
        )
        .unwrap();
        let config = ConfigFile::load(&path).unwrap();
        assert_eq!(config.network.mdns, Some(false));
        assert_eq!(config.network.listen.unwrap().len(), 1);
        assert_eq!(config.validator.stale_after_secs, Some(5));
        assert_eq!(config.client, ClientSection::default());

        std::fs::write(&path, "[network]\nmdsn = false\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err();
        assert!(err.to_string().contains("mdsn"), "{err}");
        std::fs::write(&path, "[network]\nlisten = [\"not an address\"]\n").unwrap();
        assert!(matches!(ConfigFile::load(&path), Err(Error::ConfigFile { .. })));
        assert!(matches!(
            ConfigFile::load(&dir.path().join("missing.toml")),
            Err(Error::ConfigFile { .. })
        ));
        assert_eq!(ConfigFile::load_optional(None).unwrap(), ConfigFile::default());
    }

    /// Every key, set: the struct literal names every field, so a new key does not compile
    /// here until it is added, and then the test below demands it be documented.
    fn every_key() -> ConfigFile {
        let model = ModelSection {
            path: Some("m.gguf".into()),
            name: Some("m".into()),
            price_per_input_token: Some(1),
            price_per_output_token: Some(2),
            max_sequences: Some(4),
            n_ctx: Some(4096),
            kv_cache_type: Some("q8_0".into()),
            gpu_layers: Some(TextOrNumber::Number(20)),
        };
        ConfigFile {
            network: NetworkSection {
                listen: Some(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]),
                bootstrap: Some(vec![]),
                mdns: Some(false),
                relay: Some(crate::network::RelayMode::Auto),
                nat_probe_private_addrs: Some(false),
            },
            validator: ValidatorSection { stale_after_secs: Some(30), max_executors: Some(10_000) },
            client: ClientSection {
                timeout_secs: Some(10),
                max_age_secs: Some(60),
                model: Some("m".into()),
                max_price: Some(5000),
                strategy: Some("balanced".into()),
                retries: Some(2),
            },
            executor: ExecutorSection {
                model_path: Some("m.gguf".into()),
                model_name: Some("m".into()),
                price_per_input_token: Some(1),
                price_per_output_token: Some(2),
                max_sequences: Some(4),
                n_ctx: Some(8192),
                kv_cache_type: Some("f16".into()),
                gpu_layers: Some(TextOrNumber::Text("auto".into())),
                checkpoint_every: Some(32),
                requests_per_minute: Some(600),
                tokens_per_minute: Some(10_000),
                nonce_sync_ms: Some(1000),
                commit_delay_us: Some(1000),
                memory_budget: Some("0.9".into()),
                queue_per_client: Some(32),
                drain_secs: Some(30),
                models: Some(vec![model]),
            },
        }
    }

    #[test]
    fn gpu_layers_are_written_as_a_number_or_a_word() {
        let file: ConfigFile = toml::from_str(
            "[executor]\ngpu_layers = \"all\"\n[[executor.models]]\ngpu_layers = 12\n",
        )
        .unwrap();
        assert_eq!(file.executor.gpu_layers, Some(TextOrNumber::Text("all".into())));
        let entry = &file.executor.models.as_ref().unwrap()[0];
        assert_eq!(entry.gpu_layers.as_ref().map(ToString::to_string).as_deref(), Some("12"));
        assert!(toml::from_str::<ConfigFile>("[executor]\ngpu_layers = -1\n").is_err());
        assert!(toml::from_str::<ConfigFile>("[executor]\ngpu_layers = 1.5\n").is_err());
    }

    #[test]
    fn the_configuration_reference_documents_every_key_and_its_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/src/user-guide/configuration.md");
        let Ok(doc) = std::fs::read_to_string(&path) else {
            // Outside the repository (a packaged crate) there is no book to check.
            eprintln!("skipped: {} not found", path.display());
            return;
        };
        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the reference has a TOML example");
        toml::from_str::<ConfigFile>(example).expect("the documented example is a valid file");

        let value = toml::Value::try_from(every_key()).unwrap();
        let mut missing = Vec::new();
        for (section, table) in value.as_table().unwrap() {
            for (key, value) in table.as_table().unwrap() {
                if !doc.contains(&format!("`{section}.{key}`")) {
                    missing.push(format!("{section}.{key}"));
                }
                for entry in value.as_array().into_iter().flatten().filter_map(|v| v.as_table()) {
                    for sub in entry.keys() {
                        if !doc.contains(&format!("`{section}.{key}[].{sub}`")) {
                            missing.push(format!("{section}.{key}[].{sub}"));
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "undocumented configuration keys: {missing:?}");
    }
}
