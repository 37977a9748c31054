//! Which CPU a benchmark ran on. Engine speed depends on the vector instructions ggml can use
//! (AVX2 against AVX-512, VNNI), and a VM can move between hosts, so a report names them:
//! figures compare only between runs on the same kind of CPU.

use crate::cpuinfo;

/// Vector-instruction flags (as `/proc/cpuinfo` spells them) that change ggml's kernels.
const SIMD_FLAGS: [&str; 9] = [
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512vbmi",
    "amx_tile",
];

/// This machine's CPU model, core count and relevant vector instructions, in one line.
pub fn describe_host() -> String {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    describe(&cpuinfo::read(), cores)
}

/// [`describe_host`] from the text of `/proc/cpuinfo` (empty where there is none).
fn describe(cpuinfo: &str, cores: usize) -> String {
    let model = cpuinfo::field(cpuinfo, "model name").unwrap_or("unknown CPU");
    let flags = cpuinfo::field(cpuinfo, "flags").unwrap_or_default();
    let present: Vec<String> = SIMD_FLAGS
        .iter()
        .filter(|wanted| flags.split_whitespace().any(|flag| flag == **wanted))
        .map(|flag| flag.to_uppercase())
        .collect();
    let simd = if present.is_empty() { "none of AVX2/AVX-512".into() } else { present.join(" ") };
    let unit = if cores == 1 { "core" } else { "cores" };
    format!("{model}, {cores} {unit}, {simd}")
}

/// Which of llama.cpp's CPU kernels this build compiled (recorded by the build script).
pub const LLAMA_CPU_BUILD: &str = env!("LLOOM_LLAMA_CPU_BUILD");

/// A line for a portable build on a CPU with AVX-512 or AMX, which a tuned build runs much
/// faster (on an AMX host: about 1.8× one stream, 3× eight, 4× prompt processing).
pub fn tuned_build_hint() -> Option<String> {
    hint(&cpuinfo::read(), LLAMA_CPU_BUILD)
}

/// [`tuned_build_hint`] from the text of `/proc/cpuinfo` and the build's description.
fn hint(cpuinfo: &str, build: &str) -> Option<String> {
    if !build.contains("portable") {
        return None;
    }
    let flags = cpuinfo::field(cpuinfo, "flags")?;
    let has = |wanted: &str| flags.split_whitespace().any(|flag| flag == wanted);
    let extra = if has("amx_int8") {
        "AMX"
    } else if has("avx512f") {
        "AVX-512"
    } else {
        return None;
    };
    Some(format!(
        "this CPU has {extra}, which this build of llama.cpp leaves unused: \
         eval \"$(./scripts/cpu-tuned-env.sh)\" before building uses it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_model_and_the_vector_flags_that_matter() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n\
                       flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni ht\n\
                       processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n";
        assert_eq!(
            describe(cpuinfo, 2),
            "Intel(R) Xeon(R) Processor, 2 cores, AVX2 FMA AVX512F AVX512BW AVX512_VNNI"
        );
        // `avx512f` is not `avx512fp16`'s prefix match, nor the reverse.
        let only_fp16 = "model name: X\nflags: avx512fp16";
        assert_eq!(describe(only_fp16, 4), "X, 4 cores, none of AVX2/AVX-512");
    }

    #[test]
    fn a_missing_or_foreign_cpuinfo_still_describes_something() {
        assert_eq!(describe("", 1), "unknown CPU, 1 core, none of AVX2/AVX-512");
        assert_eq!(
            describe("garbage without fields", 8),
            "unknown CPU, 8 cores, none of AVX2/AVX-512"
        );
    }

    #[test]
    fn a_portable_build_on_a_cpu_with_more_says_how_to_use_it() {
        let amx = "flags\t: avx2 avx512f amx_tile amx_int8\n";
        let hint_amx = hint(amx, "AVX2 (portable)").unwrap();
        assert!(hint_amx.contains("AMX") && hint_amx.contains("cpu-tuned-env.sh"), "{hint_amx}");
        assert!(hint("flags: avx2 avx512f", "AVX2 (portable)").unwrap().contains("AVX-512"));
        assert_eq!(hint("flags: avx2 fma", "AVX2 (portable)"), None, "nothing more to use");
        assert_eq!(hint(amx, "AVX-512 VNNI AMX"), None, "already tuned");
        assert_eq!(hint("", "AVX2 (portable)"), None, "no cpuinfo");
    }
}
