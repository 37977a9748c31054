//! Records which of llama.cpp's CPU kernels this build compiles, so `lloom-executor bench`
//! can say so: llama-cpp-sys builds for AVX2 unless `GGML_*` variables (see
//! `scripts/cpu-tuned-env.sh`) or `-C target-cpu=native` ask for more, and its build script
//! sees the same environment as this one.

/// `GGML_*` options that add kernels, and how a report names them.
const OPTIONS: [(&str, &str); 6] = [
    ("GGML_AVX512", "AVX-512"),
    ("GGML_AVX512_VNNI", "VNNI"),
    ("GGML_AVX512_VBMI", "VBMI"),
    ("GGML_AVX512_BF16", "BF16"),
    ("GGML_AVX_VNNI", "AVX-VNNI"),
    ("GGML_AMX_INT8", "AMX"),
];

fn main() {
    let on = |name: &str| {
        println!("cargo:rerun-if-env-changed={name}");
        std::env::var(name)
            .is_ok_and(|v| matches!(v.to_ascii_uppercase().as_str(), "ON" | "1" | "TRUE"))
    };
    let native = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .is_ok_and(|flags| flags.split('\x1f').any(|f| f.ends_with("target-cpu=native")));
    let kernels: Vec<&str> =
        OPTIONS.iter().filter(|(name, _)| on(name)).map(|(_, label)| *label).collect();
    let ggml_native = on("GGML_NATIVE");
    let build = if native || ggml_native {
        "this CPU (native)".to_owned()
    } else if kernels.is_empty() {
        "AVX2 (portable)".to_owned()
    } else {
        kernels.join(" ")
    };
    println!("cargo:rustc-env=LLOOM_LLAMA_CPU_BUILD={build}");
    // The kernel families that decide which weights ggml repacks (see memory/repack.rs).
    let families: Vec<&str> = if native || ggml_native {
        vec!["native"]
    } else {
        let mut families = vec!["avx2"];
        if on("GGML_AVX512") {
            families.push("avx512");
        }
        if on("GGML_AMX_INT8") {
            families.push("amx");
        }
        families
    };
    println!("cargo:rustc-env=LLOOM_LLAMA_KERNELS={}", families.join(","));
}
