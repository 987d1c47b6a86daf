//! Checkpoint weights under transformers' names, from `model.safetensors` or a sharded
//! `model.safetensors.index.json`.

use crate::error::{shape_text, Error, Result};
use crate::safetensors_file::{SafetensorsFile, TensorEntry};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// Tensor name → (index into `files`, entry).
    index: HashMap<String, (usize, TensorEntry)>,
    /// Set for generated weights (see `random`).
    random_seed: Option<u64>,
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
        let files = paths
            .iter()
            .map(|p| SafetensorsFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let mut index = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for (name, entry) in &file.tensors {
                index.insert(name.clone(), (i, entry.clone()));
            }
        }
        Ok(Self {
            files,
            index,
            random_seed: None,
        })
    }

    /// A bare-model checkpoint (no `vit.` prefix, no classifier) in which every tensor the
    /// model asks for exists, filled with deterministic pseudo-random values: the named
    /// architectures of `vitmsn bench`.
    pub fn random(seed: u64) -> Self {
        Self {
            files: Vec::new(),
            index: HashMap::new(),
            random_seed: Some(seed),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self.random_seed {
            Some(_) => !name.starts_with("vit.") && !name.starts_with("classifier."),
            None => self.index.contains_key(name),
        }
    }

    /// The tensor `name` as f32, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(seed) = self.random_seed {
            return Ok(random_values(seed, name, shape.iter().product()));
        }
        let (file, entry) = self
            .index
            .get(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor {name}")))?;
        if entry.shape != shape {
            return Err(Error::Weights(format!(
                "{name} has shape {}, expected {}",
                shape_text(&entry.shape),
                shape_text(shape)
            )));
        }
        self.files[*file].f32_data(entry, name)
    }
}

/// The files of the model folder `dir` that loading it may read, whether they exist or
/// not: `config.json`, `preprocessor_config.json`, `model.safetensors`, the shard index and
/// the shards it names (when it can be read).
pub fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    ]
    .iter()
    .map(|name| dir.join(name))
    .collect();
    files.extend(shard_paths(dir, &index).unwrap_or_default());
    files.push(index);
    files
}

/// The distinct shard files named by an index's `weight_map`, in a stable order.
fn shard_paths(dir: &Path, index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = crate::files::read_json_text(index_path)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Weights(format!("{}: {e}", index_path.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Weights(format!("{} has no weight_map", index_path.display())))?;
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// Values spread evenly in ±0.05 (a plausible weight scale), from a generator seeded by
/// the seed and the tensor's name, so each tensor is the same in every run.
fn random_values(seed: u64, name: &str, len: usize) -> Vec<f32> {
    let mut state = name.bytes().fold(seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    (0..len)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            (bits as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}
