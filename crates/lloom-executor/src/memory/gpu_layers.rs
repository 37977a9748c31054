//! How many of a model's layers go to the accelerator: as many as the memory plan finds room
//! for, all of them, or an exact number (llama.cpp's `--n-gpu-layers`), as the operator asks
//! (`lloom-executor start --gpu-layers`).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The operator's choice of layers to offload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuLayers {
    /// As many as fit the budget; all of them when they do (the memory plan decides).
    #[default]
    Auto,
    /// Every layer, or refuse to start.
    All,
    /// Exactly this many, or refuse to start; more than the model has means all of them (as
    /// llama.cpp's `-ngl 99`), and `0` keeps the model off the GPU in a `cuda` build.
    Exactly(u64),
}

impl GpuLayers {
    /// The choice for a model of `n_layers` layers: `Exactly(n)` with `n >= n_layers` is `All`.
    pub fn for_layers(self, n_layers: u64) -> Self {
        match self {
            Self::Exactly(n) if n >= n_layers => Self::All,
            other => other,
        }
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::All => f.write_str("all"),
            Self::Exactly(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for GpuLayers {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "all" => Ok(Self::All),
            number => number.parse().map(Self::Exactly).map_err(|_| {
                Error::EngineConfig(format!(
                    "unknown GPU layer count {text:?}; use auto, all or a number of layers"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip_and_anything_else_is_refused() {
        for layers in
            [GpuLayers::Auto, GpuLayers::All, GpuLayers::Exactly(0), GpuLayers::Exactly(33)]
        {
            assert_eq!(layers.to_string().parse::<GpuLayers>().unwrap(), layers);
        }
        assert_eq!(" ALL ".parse::<GpuLayers>().unwrap(), GpuLayers::All);
        for bad in ["", "-1", "half", "1.5", "99999999999999999999999"] {
            let message = bad.parse::<GpuLayers>().unwrap_err().to_string();
            assert!(message.contains("auto, all or a number"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn more_layers_than_the_model_has_means_all() {
        assert_eq!(GpuLayers::Exactly(99).for_layers(30), GpuLayers::All);
        assert_eq!(GpuLayers::Exactly(30).for_layers(30), GpuLayers::All);
        assert_eq!(GpuLayers::Exactly(29).for_layers(30), GpuLayers::Exactly(29));
        assert_eq!(GpuLayers::Auto.for_layers(30), GpuLayers::Auto);
    }
}
