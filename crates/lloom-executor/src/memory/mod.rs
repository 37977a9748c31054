//! Memory planning: the geometry of a GGUF model read from its header, and the arithmetic that
//! decides how many layers go to the accelerator and how many sequences fit.

pub mod budget;
pub mod device;
pub mod gguf;
pub mod gpu_layers;
pub mod kv_type;
pub mod plan;
pub mod repack;

pub use budget::{MemoryBudget, format_bytes};
pub use device::{DeviceMemory, ServingDevice, gpu_memory, host_memory};
pub use gguf::{GgufMetadata, MetaValue, TensorInfo, read_metadata};
pub use gpu_layers::GpuLayers;
pub use kv_type::KvType;
pub use plan::{
    GRAMMAR_BYTES_PER_SEQUENCE, MemoryPlan, MemoryRequest, ModelGeometry, TiedEmbedding, plan,
};
pub use repack::RepackedTypes;
