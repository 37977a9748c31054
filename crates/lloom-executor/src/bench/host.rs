//! Which CPU a benchmark ran on. Engine speed depends on the vector instructions ggml can use
//! (AVX2 against AVX-512, VNNI), and a VM can move between hosts, so a report names them:
//! figures compare only between runs on the same kind of CPU.

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
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    describe(&cpuinfo, cores)
}

/// [`describe_host`] from the text of `/proc/cpuinfo` (empty where there is none).
fn describe(cpuinfo: &str, cores: usize) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let present: Vec<String> = SIMD_FLAGS
        .iter()
        .filter(|wanted| flags.split_whitespace().any(|flag| flag == **wanted))
        .map(|flag| flag.to_uppercase())
        .collect();
    let simd = if present.is_empty() { "none of AVX2/AVX-512".into() } else { present.join(" ") };
    let unit = if cores == 1 { "core" } else { "cores" };
    format!("{model}, {cores} {unit}, {simd}")
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
}
