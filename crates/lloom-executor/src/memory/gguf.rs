//! A bounded reader of the metadata at the start of a GGUF file (versions 2 and 3): the
//! key-value pairs (numbers and strings kept, arrays skipped) and the tensor table (names,
//! shapes, types), without reading the weights.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Most metadata entries and tensors read (a GGUF file has tens to a few thousand).
const MAX_ENTRIES: u64 = 100_000;
/// Longest string read, in bytes.
const MAX_STRING: u64 = 1 << 20;

/// A metadata value the planner can use.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Any integer type.
    Int(i128),
    /// `f32` or `f64`.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Text(String),
    /// An array (skipped; its length kept).
    Array(u64),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// One tensor of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name (e.g. `blk.3.attn_q.weight`).
    pub name: String,
    /// Its shape.
    pub dims: Vec<u64>,
    /// Its GGML type id.
    pub ggml_type: u32,
}

/// What the file header says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufMetadata {
    /// The format version.
    pub version: u32,
    /// Key-value metadata.
    pub values: BTreeMap<String, MetaValue>,
    /// The tensor table.
    pub tensors: Vec<TensorInfo>,
}

impl GgufMetadata {
    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        match self.values.get("general.architecture") {
            Some(MetaValue::Text(a)) => Some(a),
            _ => None,
        }
    }

    /// `<architecture>.<key>` as an integer.
    pub fn arch_u64(&self, key: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.values.get(&format!("{arch}.{key}"))?.as_u64()
    }
}

fn bad(what: impl Into<String>) -> Error {
    Error::EngineLoad(format!("not a readable GGUF file: {}", what.into()))
}

struct Reader<R> {
    inner: R,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| bad(e.to_string()))?;
        Ok(buf)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn skip(&mut self, n: u64) -> Result<()> {
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| bad(e.to_string()))?;
        if copied != n {
            return Err(bad("truncated"));
        }
        Ok(())
    }
    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(bad(format!("a string of {len} bytes")));
        }
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| bad("string length"))?];
        self.inner.read_exact(&mut buf).map_err(|e| bad(e.to_string()))?;
        String::from_utf8(buf).map_err(|_| bad("a string is not UTF-8"))
    }

    /// Reads a value of GGUF type `kind`.
    fn value(&mut self, kind: u32) -> Result<MetaValue> {
        Ok(match kind {
            0 => MetaValue::Int(i128::from(self.u8()?)),
            1 => MetaValue::Int(i128::from(i8::from_le_bytes(self.bytes()?))),
            2 => MetaValue::Int(i128::from(u16::from_le_bytes(self.bytes()?))),
            3 => MetaValue::Int(i128::from(i16::from_le_bytes(self.bytes()?))),
            4 => MetaValue::Int(i128::from(self.u32()?)),
            5 => MetaValue::Int(i128::from(i32::from_le_bytes(self.bytes()?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => MetaValue::Bool(self.u8()? != 0),
            8 => MetaValue::Text(self.string()?),
            9 => {
                let item = self.u32()?;
                let len = self.u64()?;
                if len > 100 * MAX_STRING {
                    return Err(bad(format!("an array of {len} items")));
                }
                match fixed_size(item) {
                    Some(size) => self.skip(len.saturating_mul(size))?,
                    None => {
                        for _ in 0..len {
                            self.value(item)?;
                        }
                    }
                }
                MetaValue::Array(len)
            }
            10 => MetaValue::Int(i128::from(self.u64()?)),
            11 => MetaValue::Int(i128::from(i64::from_le_bytes(self.bytes()?))),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(bad(format!("unknown value type {other}"))),
        })
    }
}

/// Byte size of a fixed-size GGUF value type.
fn fixed_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Reads the metadata and tensor table of the GGUF file at `path`.
pub fn read_metadata(path: &Path) -> Result<GgufMetadata> {
    let file = std::fs::File::open(path)?;
    let mut r = Reader { inner: BufReader::new(file) };
    if &r.bytes::<4>()? != b"GGUF" {
        return Err(bad("no GGUF magic"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(bad(format!("unsupported version {version}")));
    }
    let n_tensors = r.u64()?;
    let n_values = r.u64()?;
    if n_tensors > MAX_ENTRIES || n_values > MAX_ENTRIES {
        return Err(bad(format!("{n_tensors} tensors and {n_values} values")));
    }
    let mut meta = GgufMetadata { version, ..GgufMetadata::default() };
    for _ in 0..n_values {
        let key = r.string()?;
        let kind = r.u32()?;
        let value = r.value(kind)?;
        meta.values.insert(key, value);
    }
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 8 {
            return Err(bad(format!("tensor {name} has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let ggml_type = r.u32()?;
        let _offset = r.u64()?;
        meta.tensors.push(TensorInfo { name, dims, ggml_type });
    }
    Ok(meta)
}
