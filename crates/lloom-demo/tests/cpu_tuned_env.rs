//! `scripts/cpu-tuned-env.sh`: what it asks llama.cpp's build for, from the CPU flags of
//! several kinds of host (a fake `/proc/cpuinfo`), and that a tuned build never shares the
//! portable build's cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;

/// Runs the script on a host whose first `flags` line is `flags` (none when `None`).
fn run(flags: Option<&str>) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cpuinfo = dir.path().join("cpuinfo");
    if let Some(flags) = flags {
        let text = format!("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n");
        std::fs::write(&cpuinfo, text).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cpu-tuned-env.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("LLOOM_CPUINFO", &cpuinfo)
        .env("LLOOM_CACHE", "/cache")
        .env_remove("CXXFLAGS")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

const AVX512: &str = "fpu sse2 avx2 fma f16c avx512f avx512cd avx512vl avx512dq avx512bw";

#[test]
fn a_cpu_with_only_avx2_gets_nothing_beyond_the_portable_build() {
    for flags in [Some("fpu sse2 avx2 fma f16c"), None, Some("")] {
        let (ok, out, err) = run(flags);
        assert!(ok, "{err}");
        assert!(!out.contains("export"), "{flags:?}: {out}");
    }
}

#[test]
fn avx512_without_amx_gets_its_kernels_and_a_cache_of_its_own() {
    let (ok, out, err) = run(Some(&format!("{AVX512} avx512_vnni avx512vbmi")));
    assert!(ok, "{err}");
    for option in ["GGML_AVX512=ON", "GGML_AVX512_VNNI=ON", "GGML_AVX512_VBMI=ON"] {
        assert!(out.contains(&format!("export {option}\n")), "{option}: {out}");
    }
    assert!(!out.contains("AMX") && !out.contains("BF16") && !out.contains("CC="), "{out}");
    assert!(
        out.contains("export CARGO_TARGET_DIR=\"/cache/target-cpu-avx512-vnni-vbmi\""),
        "{out}"
    );
}

#[test]
fn an_amx_cpu_gets_the_amx_kernels_built_by_clang() {
    let all = format!("{AVX512} avx512_vnni avx512vbmi avx512_bf16 amx_tile amx_int8 amx_bf16");
    let (ok, out, err) = run(Some(&all));
    assert!(ok, "{err}");
    for option in
        ["GGML_AMX_TILE=ON", "GGML_AMX_INT8=ON", "GGML_AMX_BF16=ON", "GGML_AVX512_BF16=ON"]
    {
        assert!(out.contains(&format!("export {option}\n")), "{option}: {out}");
    }
    assert!(out.contains("export CC=clang CXX=clang++"), "{out}");
    assert!(out.contains("-D__AMX_INT8__"), "clang needs GCC's macro names: {out}");
    assert!(out.contains("/cache/target-cpu-avx512-vnni-vbmi-bf16-amx\""), "{out}");

    // AMX tiles without AVX-512 VNNI (which ggml's AMX kernels need) get no AMX.
    let (ok, out, _) = run(Some(&format!("{AVX512} amx_tile amx_int8 amx_bf16")));
    assert!(ok);
    assert!(!out.contains("AMX") && out.contains("target-cpu-avx512\""), "{out}");
}

#[test]
fn an_avx2_cpu_with_avx_vnni_gets_that() {
    let (ok, out, err) = run(Some("avx2 fma avx_vnni"));
    assert!(ok, "{err}");
    assert!(out.contains("export GGML_AVX_VNNI=ON\n") && !out.contains("AVX512"), "{out}");
}
