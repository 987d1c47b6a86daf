//! Checkpoint weights under transformers' names, from `model.safetensors` or a sharded
//! `model.safetensors.index.json`, memory-mapped.

use crate::error::{Error, Result};
use crate::safetensors_file::{SafetensorsFile, TensorEntry};
use crate::tensor::F32Data;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// Tensor name → (index into `files`, entry).
    index: HashMap<String, (usize, TensorEntry)>,
}

impl Weights {
    /// Opens the checkpoint in a model directory written by `save_pretrained`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let sharded = dir.join("model.safetensors.index.json");
        let paths = if single.exists() {
            vec![single]
        } else if sharded.exists() {
            shard_paths(dir, &sharded)?
        } else {
            return Err(Error::Weights(format!(
                "{} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let files = paths.iter().map(|p| SafetensorsFile::open(p)).collect::<Result<Vec<_>>>()?;
        let mut index = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for (name, entry) in &file.tensors {
                index.insert(name.clone(), (i, entry.clone()));
            }
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The tensor `name` as f32, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<F32Data> {
        let (file, entry) =
            self.index.get(name).ok_or_else(|| Error::Weights(format!("missing tensor {name}")))?;
        if entry.shape != shape {
            return Err(Error::Weights(format!("{name} has shape {:?}, expected {shape:?}", entry.shape)));
        }
        self.files[*file].f32_data(entry, name)
    }

    /// Like `get`, for a tensor that may be absent.
    pub fn get_optional(&self, name: &str, shape: &[usize]) -> Result<Option<F32Data>> {
        if self.contains(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The distinct shard files named by an index's `weight_map`, in a stable order.
fn shard_paths(dir: &Path, index_path: &Path) -> Result<Vec<std::path::PathBuf>> {
    let text = std::fs::read_to_string(index_path).map_err(crate::error::io_error(index_path))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Weights(format!("{}: {e}", index_path.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Weights(format!("{} has no weight_map", index_path.display())))?;
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}
