//! The memory arithmetic: from a model's geometry to weights per layer, KV cache per token and
//! per sequence, and a compute buffer; then how many layers to offload to the GPU and how many
//! sequences fit in a memory budget.

use super::gguf::GgufMetadata;
use super::gpu_layers::GpuLayers;
use super::kv_type::KvType;
use super::repack::RepackedTypes;
use crate::error::{Error, Result};

/// The shape of a model, as the memory plan needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelGeometry {
    /// Transformer blocks.
    pub n_layers: u64,
    /// Hidden size.
    pub n_embd: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads (grouped-query attention).
    pub n_head_kv: u64,
    /// Size of one head.
    pub head_dim: u64,
    /// Vocabulary size.
    pub n_vocab: u64,
    /// Bytes of weights in one block.
    pub layer_bytes: u64,
    /// Bytes of weights outside the blocks (embeddings, output).
    pub other_bytes: u64,
    /// The token embedding, when it doubles as the output projection (no `output.weight`).
    pub tied_embedding: Option<TiedEmbedding>,
}

/// A token embedding that is also the output projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TiedEmbedding {
    /// Its GGML type id.
    pub ggml_type: u32,
    /// Its size, in bytes.
    pub bytes: u64,
}

/// Bytes per 32 elements of a GGML tensor type, for the types GGUF models use.
fn ggml_bytes_per_32(ggml_type: u32) -> Option<u64> {
    Some(match ggml_type {
        0 => 128,      // F32
        1 | 30 => 64,  // F16, BF16
        2 => 18,       // Q4_0
        3 => 20,       // Q4_1
        6 => 22,       // Q5_0
        7 => 24,       // Q5_1
        8 => 34,       // Q8_0
        10 => 84 / 8,  // Q2_K: 84 bytes per 256
        11 => 110 / 8, // Q3_K
        12 => 144 / 8, // Q4_K
        13 => 176 / 8, // Q5_K
        14 => 210 / 8, // Q6_K
        _ => return None,
    })
}

impl ModelGeometry {
    /// Reads the geometry from GGUF metadata; `file_size` apportions weights whose tensor
    /// types are unknown.
    pub fn from_gguf(meta: &GgufMetadata, file_size: u64) -> Result<Self> {
        let need = |key: &str| {
            meta.arch_u64(key).ok_or_else(|| {
                Error::EngineLoad(format!(
                    "GGUF metadata lacks {}.{key}",
                    meta.architecture().unwrap_or("?")
                ))
            })
        };
        let n_layers = need("block_count")?;
        let n_embd = need("embedding_length")?;
        let n_head = need("attention.head_count")?.max(1);
        let n_head_kv = meta.arch_u64("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = meta.arch_u64("attention.key_length").unwrap_or(n_embd / n_head);
        let n_vocab = meta
            .arch_u64("vocab_size")
            .or_else(|| match meta.values.get("tokenizer.ggml.tokens") {
                Some(super::gguf::MetaValue::Array(n)) => Some(*n),
                _ => None,
            })
            .unwrap_or(32_000);
        let (mut layers, mut other, mut unknown) = (0u64, 0u64, false);
        let mut embedding = None;
        let has_output = meta.tensors.iter().any(|t| t.name == "output.weight");
        for t in &meta.tensors {
            let elements = t.dims.iter().product::<u64>();
            let Some(per_32) = ggml_bytes_per_32(t.ggml_type) else {
                unknown = true;
                continue;
            };
            let bytes = elements.div_ceil(32) * per_32;
            if t.name == "token_embd.weight" && !has_output {
                embedding = Some(TiedEmbedding { ggml_type: t.ggml_type, bytes });
            }
            if t.name.starts_with("blk.") {
                layers += bytes;
            } else {
                other += bytes;
            }
        }
        if unknown || layers == 0 {
            // Apportion the file: nearly all of it is weights.
            let per_layer = file_size / (n_layers + 1).max(1);
            return Ok(Self {
                n_layers,
                n_embd,
                n_head,
                n_head_kv,
                head_dim,
                n_vocab,
                layer_bytes: per_layer,
                other_bytes: file_size.saturating_sub(per_layer * n_layers),
                tied_embedding: embedding,
            });
        }
        Ok(Self {
            n_layers,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_vocab,
            layer_bytes: layers / n_layers.max(1),
            other_bytes: other,
            tied_embedding: embedding,
        })
    }

    /// KV cache bytes per token for one layer (keys and values).
    pub fn kv_bytes_per_token_per_layer(&self, kv: KvType) -> u64 {
        (2 * self.n_head_kv * self.head_dim).div_ceil(32) * kv.bytes_per_32()
    }

    /// KV cache bytes per token for the whole model.
    pub fn kv_bytes_per_token(&self, kv: KvType) -> u64 {
        self.kv_bytes_per_token_per_layer(kv) * self.n_layers
    }

    /// Estimated compute buffer for a micro-batch of `n_ubatch` tokens: activations plus logits,
    /// in f32.
    pub fn compute_bytes(&self, n_ubatch: u64) -> u64 {
        n_ubatch * (4 * self.n_embd + self.n_vocab) * 4
    }

    /// All weights.
    pub fn weights_bytes(&self) -> u64 {
        self.layer_bytes * self.n_layers + self.other_bytes
    }

    /// Host memory beyond the weights when they stay on the CPU with `repacked` types: a tied
    /// embedding of a repacked type is held twice (see [`RepackedTypes`]).
    pub fn repack_extra_bytes(&self, repacked: RepackedTypes) -> u64 {
        self.tied_embedding.filter(|t| repacked.contains(t.ggml_type)).map_or(0, |t| t.bytes)
    }
}

/// What the operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRequest {
    /// Total context (KV cache) in tokens, shared by the sequences.
    pub n_ctx: u64,
    /// Sequences wanted at once.
    pub max_sequences: u64,
    /// KV cache element type.
    pub kv: KvType,
    /// Tokens per micro-batch.
    pub n_ubatch: u64,
    /// Accelerator memory available, in bytes (`None`: no accelerator).
    pub gpu_budget: Option<u64>,
    /// Layers to offload: as many as fit, all, or an exact number (refused when they do not
    /// fit).
    pub gpu_layers: GpuLayers,
    /// Weight types the CPU backend repacks ([`RepackedTypes::of_this_build`]).
    pub repacked: RepackedTypes,
}

/// llama.cpp gives each sequence its own KV cache of a multiple of this many cells (the
/// engine keeps one cache per sequence).
pub const KV_CELLS_PER_BLOCK: u64 = 256;

/// Host memory one sequence's grammar may hold (llama.cpp's grammar sampler: the parsed rules
/// and the stacks of an answer under way), for an answer held to a JSON schema. Measured with
/// `examples/grammar_memory.rs` over the default model's vocabulary: 23–61 KiB for the
/// gateway's tool-call schema, 240–297 KiB for a grammar of 135 KiB and 631 KiB for one of
/// 377 KiB, past the 256 KiB the engine loads. Grammars live on the host, whatever is offloaded.
pub const GRAMMAR_BYTES_PER_SEQUENCE: u64 = 512 << 10;

/// The chosen configuration and what it costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Layers offloaded to the accelerator.
    pub gpu_layers: u64,
    /// Sequences served at once (at most the request's).
    pub max_sequences: u64,
    /// Context per sequence, in tokens: the request's share, rounded up to a multiple of
    /// [`KV_CELLS_PER_BLOCK`] as llama.cpp allocates it.
    pub ctx_per_sequence: u64,
    /// Accelerator memory used: offloaded weights, their KV cache and the compute buffer.
    pub gpu_bytes: u64,
    /// Host memory used by the weights and KV cache kept on the CPU, and by the sequences'
    /// grammars ([`GRAMMAR_BYTES_PER_SEQUENCE`] each).
    pub host_bytes: u64,
    /// KV cache of one full sequence, in bytes.
    pub kv_bytes_per_sequence: u64,
    /// The KV cache's element type.
    pub kv: KvType,
}

/// Chooses how many layers to offload and how many sequences fit.
///
/// With [`GpuLayers::Auto`], full offload is preferred: when the weights and compute buffer
/// fit but the KV cache for every requested sequence does not, fewer sequences are served (at
/// least one). Otherwise the most layers that fit with their KV cache are offloaded.
/// [`GpuLayers::All`] takes only the first way, [`GpuLayers::Exactly`] offloads its number
/// of layers with the KV cache of every sequence. A configuration that cannot fit is refused
/// with the numbers.
pub fn plan(geometry: &ModelGeometry, request: &MemoryRequest) -> Result<MemoryPlan> {
    if request.max_sequences == 0 || request.n_ctx == 0 {
        return Err(Error::EngineConfig("n_ctx and max_sequences must be positive".into()));
    }
    let share = request.n_ctx / request.max_sequences;
    if share == 0 {
        return Err(Error::EngineConfig("fewer context tokens than sequences".into()));
    }
    if request.kv.is_quantized() && !geometry.head_dim.is_multiple_of(KvType::BLOCK) {
        return Err(Error::EngineConfig(format!(
            "a {} KV cache needs heads whose size is a multiple of {}; this model's are {} wide (use f16)",
            request.kv,
            KvType::BLOCK,
            geometry.head_dim
        )));
    }
    let ctx_per_sequence = share.next_multiple_of(KV_CELLS_PER_BLOCK);
    let kv_layer_token = geometry.kv_bytes_per_token_per_layer(request.kv);
    let kv_bytes_per_sequence = kv_layer_token * geometry.n_layers * ctx_per_sequence;
    let compute = geometry.compute_bytes(request.n_ubatch);
    let all_kv = kv_bytes_per_sequence * request.max_sequences;
    let offload = request.gpu_layers.for_layers(geometry.n_layers);
    let Some(budget) = request.gpu_budget else {
        match offload {
            GpuLayers::All => {
                return Err(Error::EngineConfig(
                    "full offload requested but no GPU is available".into(),
                ));
            }
            GpuLayers::Exactly(n) if n > 0 => {
                return Err(Error::EngineConfig(format!(
                    "{n} layers asked for the GPU, but no GPU is available (a build without the `cuda` feature, or no GPU found); use --gpu-layers 0 or auto"
                )));
            }
            GpuLayers::Auto | GpuLayers::Exactly(_) => {}
        }
        return Ok(MemoryPlan {
            gpu_layers: 0,
            max_sequences: request.max_sequences,
            ctx_per_sequence,
            gpu_bytes: 0,
            host_bytes: geometry.weights_bytes()
                + geometry.repack_extra_bytes(request.repacked)
                + all_kv
                + compute
                + GRAMMAR_BYTES_PER_SEQUENCE * request.max_sequences,
            kv_bytes_per_sequence,
            kv: request.kv,
        });
    };
    let full_weights = geometry.weights_bytes();
    // Full offload, as many sequences as fit.
    let partial = matches!(offload, GpuLayers::Exactly(_));
    if !partial && full_weights + compute + kv_bytes_per_sequence <= budget {
        let room = budget - full_weights - compute;
        let sequences = (room / kv_bytes_per_sequence.max(1)).min(request.max_sequences).max(1);
        return Ok(MemoryPlan {
            gpu_layers: geometry.n_layers,
            max_sequences: sequences,
            ctx_per_sequence,
            gpu_bytes: full_weights + compute + kv_bytes_per_sequence * sequences,
            host_bytes: GRAMMAR_BYTES_PER_SEQUENCE * sequences,
            kv_bytes_per_sequence,
            kv: request.kv,
        });
    }
    if offload == GpuLayers::All {
        return Err(Error::EngineConfig(format!(
            "the model needs {} MiB on the GPU for all {} layers, one sequence of {ctx_per_sequence} tokens and the compute buffer; {} MiB are available",
            (full_weights + compute + kv_bytes_per_sequence) >> 20,
            geometry.n_layers,
            budget >> 20
        )));
    }
    // Partial offload: each offloaded layer brings its weights and its share of the KV cache.
    let per_layer =
        geometry.layer_bytes + kv_layer_token * ctx_per_sequence * request.max_sequences;
    if compute > budget {
        return Err(Error::EngineConfig(format!(
            "the compute buffer alone needs {} MiB; {} MiB are available",
            compute >> 20,
            budget >> 20
        )));
    }
    let layers = match offload {
        GpuLayers::Exactly(n) if compute + n * per_layer > budget => {
            return Err(Error::EngineConfig(format!(
                "{n} of {} layers on the GPU need {} MiB with their KV cache for {} sequences of {ctx_per_sequence} tokens and the compute buffer; {} MiB are available (at most {} layers fit)",
                geometry.n_layers,
                (compute + n * per_layer) >> 20,
                request.max_sequences,
                budget >> 20,
                (budget - compute) / per_layer.max(1)
            )));
        }
        GpuLayers::Exactly(n) => n,
        GpuLayers::Auto | GpuLayers::All => {
            ((budget - compute) / per_layer.max(1)).min(geometry.n_layers)
        }
    };
    Ok(MemoryPlan {
        gpu_layers: layers,
        max_sequences: request.max_sequences,
        ctx_per_sequence,
        gpu_bytes: compute + layers * per_layer,
        // The output projection stays on the CPU with the layers not offloaded.
        host_bytes: (full_weights + all_kv).saturating_sub(layers * per_layer)
            + geometry.repack_extra_bytes(request.repacked)
            + GRAMMAR_BYTES_PER_SEQUENCE * request.max_sequences,
        kv_bytes_per_sequence,
        kv: request.kv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 7B-like model: 32 layers, 4096 wide, 32 heads, 8 KV heads of 128, Q4 weights.
    fn seven_b() -> ModelGeometry {
        ModelGeometry {
            n_layers: 32,
            n_embd: 4096,
            n_head: 32,
            n_head_kv: 8,
            head_dim: 128,
            n_vocab: 32_000,
            layer_bytes: 110 << 20,
            other_bytes: 250 << 20,
            tied_embedding: None,
        }
    }

    fn request(gpu_gib: Option<u64>) -> MemoryRequest {
        MemoryRequest {
            n_ctx: 32_768,
            max_sequences: 8,
            kv: KvType::F16,
            n_ubatch: 512,
            gpu_budget: gpu_gib.map(|g| g << 30),
            gpu_layers: GpuLayers::Auto,
            repacked: RepackedTypes::NONE,
        }
    }

    #[test]
    fn each_sequence_gets_whole_blocks_of_kv_cells_and_is_charged_for_them() {
        // 1,000 tokens over 8 sequences is 125 each; llama.cpp allocates 256 per sequence.
        let p = plan(&seven_b(), &MemoryRequest { n_ctx: 1000, ..request(None) }).unwrap();
        assert_eq!(p.ctx_per_sequence, KV_CELLS_PER_BLOCK);
        assert_eq!(p.kv_bytes_per_sequence, 128 * 1024 * 256);
        let grammars = 8 * GRAMMAR_BYTES_PER_SEQUENCE;
        let kv = p.host_bytes - seven_b().weights_bytes() - seven_b().compute_bytes(512) - grammars;
        assert_eq!(kv, 8 * 128 * 1024 * 256);
        // A share that is already whole blocks is kept as it is.
        let p = plan(&seven_b(), &request(None)).unwrap();
        assert_eq!(p.ctx_per_sequence, 4096);
    }

    #[test]
    fn kv_cache_arithmetic() {
        let g = seven_b();
        // 2 (K and V) × 8 heads × 128 × 2 bytes = 4 KiB per token per layer; 128 KiB per token.
        assert_eq!(g.kv_bytes_per_token_per_layer(KvType::F16), 4096);
        assert_eq!(g.kv_bytes_per_token(KvType::F16), 128 * 1024);
        assert_eq!(g.kv_bytes_per_token_per_layer(KvType::Q8_0), 2048 / 32 * 34);
        assert_eq!(g.weights_bytes(), (32 * 110 + 250) << 20);
    }

    #[test]
    fn a_quantized_kv_cache_fits_more_sequences_in_the_same_gpu() {
        // Each f16 sequence needs 0.5 GiB of KV; q8_0 about 0.27, q4_0 about 0.14.
        let on = |kv| plan(&seven_b(), &MemoryRequest { kv, ..request(Some(6)) }).unwrap();
        let (f16, q8, q4) = (on(KvType::F16), on(KvType::Q8_0), on(KvType::Q4_0));
        assert_eq!(q8.kv_bytes_per_sequence, 4096 * 32 * (2048 / 32 * 34));
        assert!(f16.max_sequences < q8.max_sequences, "{f16:?} {q8:?}");
        assert!(q8.max_sequences < q4.max_sequences || q4.max_sequences == 8, "{q8:?} {q4:?}");
        for p in [f16, q8, q4] {
            assert!(p.gpu_bytes <= 6 << 30, "{p:?}");
        }
        // On the host, the same sequences cost less.
        let host = |kv| plan(&seven_b(), &MemoryRequest { kv, ..request(None) }).unwrap();
        let saved = host(KvType::F16).host_bytes - host(KvType::Q8_0).host_bytes;
        assert_eq!(saved, 8 * 4096 * 32 * (4096 - 2048 / 32 * 34));
    }

    #[test]
    fn a_quantized_kv_cache_needs_whole_blocks_per_head() {
        let odd = ModelGeometry { head_dim: 80, n_embd: 2560, ..seven_b() };
        assert!(plan(&odd, &request(None)).is_ok());
        let err = plan(&odd, &MemoryRequest { kv: KvType::Q8_0, ..request(None) }).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("q8_0") && message.contains("80 wide"), "{message}");
    }

    #[test]
    fn a_big_gpu_takes_everything() {
        let p = plan(&seven_b(), &request(Some(80))).unwrap();
        // Only the grammars stay on the host.
        let grammars = 8 * GRAMMAR_BYTES_PER_SEQUENCE;
        assert_eq!((p.gpu_layers, p.max_sequences, p.host_bytes), (32, 8, grammars));
        assert_eq!(p.ctx_per_sequence, 4096);
        assert_eq!(p.kv_bytes_per_sequence, 128 * 1024 * 4096);
    }

    #[test]
    fn a_tight_gpu_serves_fewer_sequences_before_dropping_layers() {
        // Weights 3.7 GiB + compute ~0.3 GiB; each sequence needs 0.5 GiB of KV.
        let p = plan(&seven_b(), &request(Some(6))).unwrap();
        assert_eq!(p.gpu_layers, 32);
        assert!(p.max_sequences >= 1 && p.max_sequences < 8, "{p:?}");
        assert!(p.gpu_bytes <= 6 << 30);
    }

    #[test]
    fn a_small_gpu_offloads_some_layers() {
        let p = plan(&seven_b(), &request(Some(2))).unwrap();
        assert!(p.gpu_layers > 0 && p.gpu_layers < 32, "{p:?}");
        assert!(p.gpu_bytes <= 2 << 30);
        assert!(p.host_bytes > 0);
    }

    #[test]
    fn impossible_configurations_are_refused_with_numbers() {
        let full = MemoryRequest { gpu_layers: GpuLayers::All, ..request(Some(2)) };
        let err = plan(&seven_b(), &full).unwrap_err().to_string();
        assert!(err.contains("2048 MiB are available"), "{err}");
        let tiny = request(Some(0));
        assert!(plan(&seven_b(), &MemoryRequest { gpu_budget: Some(1 << 20), ..tiny }).is_err());
        let none = MemoryRequest { gpu_budget: None, gpu_layers: GpuLayers::All, ..request(None) };
        assert!(plan(&seven_b(), &none).is_err());
        assert!(plan(&seven_b(), &MemoryRequest { max_sequences: 0, ..request(None) }).is_err());
    }

    #[test]
    fn an_exact_layer_count_is_offloaded_or_refused_with_what_fits() {
        let exactly = |n, gib| MemoryRequest { gpu_layers: GpuLayers::Exactly(n), ..request(gib) };
        // A big GPU that would take everything takes only the layers asked for, with the KV
        // cache of every sequence for those layers; the rest stays on the host.
        let auto = plan(&seven_b(), &request(Some(80))).unwrap();
        let ten = plan(&seven_b(), &exactly(10, Some(80))).unwrap();
        assert_eq!((ten.gpu_layers, ten.max_sequences), (10, 8));
        let per_layer =
            (110 << 20) + seven_b().kv_bytes_per_token_per_layer(KvType::F16) * 4096 * 8;
        let compute = seven_b().compute_bytes(512);
        assert_eq!(ten.gpu_bytes, compute + 10 * per_layer);
        assert!(ten.gpu_bytes < auto.gpu_bytes && ten.host_bytes > auto.host_bytes, "{ten:?}");
        // 0 keeps the model off the GPU but for the compute buffer.
        let none = plan(&seven_b(), &exactly(0, Some(80))).unwrap();
        assert_eq!((none.gpu_layers, none.gpu_bytes), (0, compute));
        // More layers than the model has means all of them, as llama.cpp's -ngl 99.
        let all = plan(&seven_b(), &exactly(99, Some(80))).unwrap();
        assert_eq!(all, auto);
        // What does not fit is refused with the numbers, and how many layers would.
        let fits = plan(&seven_b(), &request(Some(2))).unwrap().gpu_layers;
        assert!(plan(&seven_b(), &exactly(fits, Some(2))).is_ok());
        let err = plan(&seven_b(), &exactly(fits + 1, Some(2))).unwrap_err().to_string();
        assert!(err.contains("2048 MiB are available"), "{err}");
        assert!(err.contains(&format!("at most {fits} layers fit")), "{err}");
        // Without a GPU, only 0 (or auto) can be served.
        assert_eq!(
            plan(&seven_b(), &exactly(0, None)).unwrap(),
            plan(&seven_b(), &request(None)).unwrap()
        );
        let err = plan(&seven_b(), &exactly(4, None)).unwrap_err().to_string();
        assert!(err.contains("no GPU is available"), "{err}");
    }

    #[test]
    fn a_tied_embedding_the_cpu_repacks_is_held_twice() {
        // Like SmolLM2: a Q8_0 token embedding (type 8) that is also the output projection.
        let tied = TiedEmbedding { ggml_type: 8, bytes: 30 << 20 };
        let g = ModelGeometry { tied_embedding: Some(tied), ..seven_b() };
        let amx = RepackedTypes::for_build("avx2,avx512,amx", "avx2 amx_tile amx_int8");
        let portable = RepackedTypes::for_build("avx2", "avx2 amx_tile amx_int8");
        let on = |repacked| plan(&g, &MemoryRequest { repacked, ..request(None) }).unwrap();
        assert_eq!(on(amx).host_bytes - on(portable).host_bytes, 30 << 20);
        assert_eq!(on(portable).host_bytes, plan(&seven_b(), &request(None)).unwrap().host_bytes);
        // Partly offloaded, the output stays on the CPU, and with it the second copy.
        let partial = |repacked| {
            plan(&g, &MemoryRequest { repacked, ..request(Some(2)) }).unwrap().host_bytes
        };
        assert_eq!(partial(amx) - partial(portable), 30 << 20);
        // Fully offloaded, nothing is repacked on the CPU.
        let full = |repacked| plan(&g, &MemoryRequest { repacked, ..request(Some(80)) }).unwrap();
        assert_eq!(full(amx), full(portable));
        // An untied model holds its embedding once.
        assert_eq!(seven_b().repack_extra_bytes(amx), 0);
    }

    #[test]
    fn cpu_only_keeps_everything_on_the_host() {
        let p = plan(&seven_b(), &request(None)).unwrap();
        assert_eq!((p.gpu_layers, p.gpu_bytes), (0, 0));
        assert!(p.host_bytes > seven_b().weights_bytes());
    }
}
