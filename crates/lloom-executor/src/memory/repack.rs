//! Which weight types llama.cpp's CPU backend repacks into a layout of its own kernels (its
//! "extra buffer types": AMX tiles, and the interleaved rows of `ggml-cpu/repack.cpp`).
//!
//! A repacked weight lives in anonymous memory, and the pages of the mapped file it was read
//! from are left for the kernel to drop, so it costs its size once, like a mapped one. The
//! exception is a tied embedding: a model without an `output.weight` multiplies by
//! `token_embd.weight` for its logits, and llama.cpp repacks that use while the lookup of
//! token embeddings keeps reading the mapped file, so the tensor is held twice.

/// GGML type ids (`ggml.h`) of the types concerned.
mod ggml_type {
    pub(super) const Q4_0: u32 = 2;
    pub(super) const Q4_1: u32 = 3;
    pub(super) const Q8_0: u32 = 8;
    pub(super) const Q2_K: u32 = 10;
    pub(super) const Q4_K: u32 = 12;
    pub(super) const Q5_K: u32 = 13;
    pub(super) const Q6_K: u32 = 14;
    pub(super) const IQ4_NL: u32 = 20;
    pub(super) const IQ4_XS: u32 = 23;
    pub(super) const MXFP4: u32 = 39;
}
use ggml_type::*;

/// Repacked on x86 by `repack.cpp` in any build with AVX2 (ggml tests the build's flags).
const AVX2_REPACK: [u32; 4] = [Q4_0, Q4_K, IQ4_NL, MXFP4];
/// Also repacked there when the build has AVX-512.
const AVX512_REPACK: [u32; 1] = [Q2_K];
/// Repacked into AMX tiles (`ggml-cpu/amx`), in a build with AMX on a CPU that has it.
const AMX_REPACK: [u32; 7] = [Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS];

/// A set of GGML type ids (those below 64; no repacked type is above).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepackedTypes(u64);

impl RepackedTypes {
    /// None: a build without repacking, or a GPU.
    pub const NONE: Self = Self(0);

    fn with(mut self, types: &[u32]) -> Self {
        for &t in types {
            if t < 64 {
                self.0 |= 1 << t;
            }
        }
        self
    }

    /// Whether weights of `ggml_type` are repacked.
    pub fn contains(self, ggml_type: u32) -> bool {
        ggml_type < 64 && self.0 & (1 << ggml_type) != 0
    }

    /// What a build with `kernels` (the build script's list: `avx2`, `avx512`, `amx`,
    /// `native`) repacks on a CPU whose `/proc/cpuinfo` flags are `cpu_flags`.
    pub fn for_build(kernels: &str, cpu_flags: &str) -> Self {
        let cpu_has = |flag: &str| cpu_flags.split_whitespace().any(|f| f == flag);
        let built = |kernel: &str| kernels.split(',').any(|k| k == kernel);
        let native = built("native");
        let mut types = Self::NONE;
        if built("avx2") || (native && cpu_has("avx2")) {
            types = types.with(&AVX2_REPACK);
        }
        if built("avx512") || (native && cpu_has("avx512f")) {
            types = types.with(&AVX512_REPACK);
        }
        // ggml finds AMX at run time too: a build with it repacks nothing into tiles on a CPU
        // (or a kernel) without them.
        if (built("amx") || native) && cpu_has("amx_int8") && cpu_has("amx_tile") {
            types = types.with(&AMX_REPACK);
        }
        types
    }

    /// What this build repacks on this CPU.
    pub fn of_this_build() -> Self {
        let cpuinfo = crate::cpuinfo::read();
        let flags = crate::cpuinfo::field(&cpuinfo, "flags").unwrap_or_default();
        Self::for_build(env!("LLOOM_LLAMA_KERNELS"), flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portable_build_repacks_q4_0_but_not_the_default_models_types() {
        let portable = RepackedTypes::for_build("avx2", "fpu avx2 fma amx_tile amx_int8");
        assert!(portable.contains(Q4_0) && portable.contains(Q4_K));
        assert!(!portable.contains(Q4_1) && !portable.contains(Q8_0), "no AMX in this build");
        assert!(!portable.contains(Q2_K), "Q2_K needs an AVX-512 build");
    }

    #[test]
    fn an_amx_build_repacks_into_tiles_only_where_the_cpu_has_them() {
        let kernels = "avx2,avx512,amx";
        let amx = RepackedTypes::for_build(kernels, "avx2 avx512f amx_tile amx_int8 amx_bf16");
        assert!(amx.contains(Q4_1) && amx.contains(Q8_0) && amx.contains(Q2_K));
        let no_amx = RepackedTypes::for_build(kernels, "avx2 avx512f");
        assert!(!no_amx.contains(Q4_1) && no_amx.contains(Q4_0));
        let native = RepackedTypes::for_build("native", "avx2 amx_tile amx_int8");
        assert!(native.contains(Q8_0) && !native.contains(Q2_K));
        assert_eq!(RepackedTypes::for_build("", "avx2"), RepackedTypes::NONE);
        assert!(!RepackedTypes::NONE.contains(200), "types beyond the set are not in it");
    }
}
