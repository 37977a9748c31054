//! What memory the serving devices have: host RAM from `/proc/meminfo`, NVIDIA GPUs through
//! NVML (loaded at run time, so a machine without the driver simply reports none).

use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Memory of one device, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    /// `host` or the GPU's name.
    pub name: String,
    /// All of it.
    pub total: u64,
    /// Free now (for the host: `MemAvailable`, which counts reclaimable caches).
    pub free: u64,
}

impl DeviceMemory {
    /// In use now.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.free)
    }
}

/// Host memory, read from `/proc/meminfo`.
pub fn host_memory() -> Result<DeviceMemory> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| Error::EngineConfig(format!("cannot read /proc/meminfo: {e}")))?;
    parse_meminfo(&text)
}

/// Parses `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> Result<DeviceMemory> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb.saturating_mul(1024))
        })
    };
    let total = field("MemTotal")
        .ok_or_else(|| Error::EngineConfig("/proc/meminfo lacks MemTotal".into()))?;
    let free = field("MemAvailable").or_else(|| field("MemFree")).unwrap_or(0);
    Ok(DeviceMemory { name: "host".into(), total, free })
}

/// NVML, initialized once; `None` where the library or a GPU is missing.
fn nvml() -> Option<&'static nvml_wrapper::Nvml> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    NVML.get_or_init(|| match nvml_wrapper::Nvml::init() {
        Ok(nvml) => Some(nvml),
        Err(e) => {
            tracing::debug!(error = %e, "NVML unavailable: no GPU memory figures");
            None
        }
    })
    .as_ref()
}

/// Every NVIDIA GPU's memory, read through NVML now; empty where NVML is unavailable.
pub fn gpu_memory() -> Vec<DeviceMemory> {
    let Some(nvml) = nvml() else { return Vec::new() };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let device = nvml.device_by_index(i).ok()?;
            let memory = device.memory_info().ok()?;
            let name = device.name().unwrap_or_else(|_| format!("GPU {i}"));
            Some(DeviceMemory { name, total: memory.total, free: memory.free })
        })
        .collect()
}

/// Where model weights and KV cache live in this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingDevice {
    /// Host RAM (a build without the `cuda` feature).
    Host,
    /// NVIDIA GPUs (a `cuda` build).
    Gpu,
}

impl ServingDevice {
    /// The device this build serves from.
    pub fn of_this_build() -> Self {
        if cfg!(feature = "cuda") { Self::Gpu } else { Self::Host }
    }

    /// Free and total memory of the device now: for GPUs, summed over every GPU NVML sees
    /// (llama.cpp splits offloaded layers across them); `None` when it cannot be read.
    pub fn memory(self) -> Option<DeviceMemory> {
        match self {
            Self::Host => host_memory().ok(),
            Self::Gpu => {
                let gpus = gpu_memory();
                (!gpus.is_empty()).then(|| DeviceMemory {
                    name: gpus.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(" + "),
                    total: gpus.iter().map(|g| g.total).sum(),
                    free: gpus.iter().map(|g| g.free).sum(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n";
        let host = parse_meminfo(text).unwrap();
        assert_eq!((host.total, host.free), (24_576_000 * 1024, 20_000_000 * 1024));
        assert_eq!(host.used(), 4_576_000 * 1024);
        let old_kernel = parse_meminfo("MemTotal: 100 kB\nMemFree: 40 kB\n").unwrap();
        assert_eq!(old_kernel.free, 40 * 1024);
        assert!(parse_meminfo("nonsense").is_err());
    }

    #[test]
    fn this_machine_reports_its_memory() {
        let host = host_memory().unwrap();
        assert!(host.total > 0 && host.free <= host.total, "{host:?}");
        // Without a GPU (or its driver) NVML reports nothing rather than failing.
        for gpu in gpu_memory() {
            assert!(gpu.free <= gpu.total, "{gpu:?}");
        }
    }
}
