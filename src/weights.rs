//! Checkpoint weights under transformers' names, from `model.safetensors` or a sharded
//! `model.safetensors.index.json`.

use crate::error::{one_line, shape_text, Error, Result};
use crate::safetensors_file::{SafetensorsFile, TensorEntry};
use safetensors::tensor::Dtype;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use vitmsn_kernels::rng::Rng;

/// The tensors of a safetensors checkpoint (one file or a sharded set), read on demand.
pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// Tensor name → (index into `files`, entry).
    index: HashMap<String, (usize, TensorEntry)>,
    /// Set for generated weights (see `random`).
    random_seed: Option<u64>,
}

impl Weights {
    /// Opens the checkpoint in a model directory written by `save_pretrained`: its
    /// `model.safetensors`, else the shards its `model.safetensors.index.json` names.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let sharded = dir.join("model.safetensors.index.json");
        if single.exists() {
            let file = SafetensorsFile::open(&single)?;
            let index = file
                .tensors
                .iter()
                .map(|(name, entry)| (name.clone(), (0, entry.clone())))
                .collect();
            return Ok(Self {
                files: vec![file],
                index,
                random_seed: None,
            });
        }
        if !sharded.exists() {
            return Err(Error::Weights(format!(
                "{} has neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        }
        Self::from_index(dir, &sharded)
    }

    /// The shards of an index, each tensor taken from the shard the index names. A shard
    /// must be a file name in `dir` (a link there is followed, as the Hugging Face cache
    /// links its snapshots to blobs), and a tensor held by two shards is an error rather
    /// than a silent choice.
    fn from_index(dir: &Path, index_path: &Path) -> Result<Self> {
        let weight_map = read_weight_map(index_path)?;
        let shard_names: BTreeSet<&str> = weight_map.values().map(String::as_str).collect();
        let mut files = Vec::new();
        let mut holder: HashMap<&str, &str> = HashMap::new();
        for &shard in &shard_names {
            let file = SafetensorsFile::open(&dir.join(shard))?;
            files.push(file);
        }
        for (&shard, file) in shard_names.iter().zip(&files) {
            for name in file.tensors.keys() {
                if let Some(first) = holder.insert(name, shard) {
                    return Err(Error::Weights(format!(
                        "{name} is in two shards, {first} and {shard}"
                    )));
                }
            }
        }
        let mut index = HashMap::new();
        for (name, shard) in &weight_map {
            let position = shard_names
                .iter()
                .position(|s| s == shard)
                .expect("every shard of the map was opened");
            let entry = files[position].tensors.get(name).ok_or_else(|| {
                Error::Weights(format!(
                    "{} puts {name} in {shard}, which does not hold it",
                    index_path.display()
                ))
            })?;
            index.insert(name.clone(), (position, entry.clone()));
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

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        match self.random_seed {
            Some(_) => !name.starts_with("vit.") && !name.starts_with("classifier."),
            None => self.index.contains_key(name),
        }
    }

    /// The tensor `name` as f32, checked to have `shape`. An int8 tensor (as `vitmsn
    /// quantize` writes them) is dequantized with its scales.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(seed) = self.random_seed {
            return Ok(random_values(seed, name, shape.iter().product()));
        }
        let (file, entry) = self.entry(name, shape)?;
        if entry.dtype == Dtype::I8 {
            let (values, scales) = self.get_int8(name, shape)?;
            let row = values.len() / scales.len().max(1);
            return Ok(values
                .iter()
                .enumerate()
                .map(|(i, &q)| scales[i / row.max(1)] * f32::from(q))
                .collect());
        }
        file.f32_data(entry, name)
    }

    /// The tensor `name` as bf16 bits, checked to have `shape`: a BF16 tensor as stored,
    /// anything else rounded from f32 (an F32 tensor block by block, with no f32 copy of
    /// it: a bf16 model loads in half the memory).
    pub fn get_bf16(&self, name: &str, shape: &[usize]) -> Result<Vec<u16>> {
        if self.random_seed.is_some() {
            return Ok(vitmsn_kernels::bf16::from_f32_slice(
                &self.get(name, shape)?,
            ));
        }
        let (file, entry) = self.entry(name, shape)?;
        match entry.dtype {
            Dtype::BF16 => Ok(file
                .bytes(entry)?
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()),
            Dtype::I8 => Ok(vitmsn_kernels::bf16::from_f32_slice(
                &self.get(name, shape)?,
            )),
            _ => {
                let mut bf16 = Vec::with_capacity(shape.iter().product());
                file.for_each_f32_block(entry, name, &mut |block| {
                    bf16.extend(block.iter().map(|&x| vitmsn_kernels::bf16::from_f32(x)))
                })?;
                Ok(bf16)
            }
        }
    }

    /// The weight matrix `name` (`shape[0]` rows of the other dimensions' product) as int8
    /// values and one scale per row: an I8 tensor with its `{name}_scale` as stored (as
    /// `vitmsn quantize` writes them), anything else quantized from f32
    /// (`quant::quantize_weights`).
    pub fn get_int8(&self, name: &str, shape: &[usize]) -> Result<(Vec<i8>, Vec<f32>)> {
        let rows = shape.first().copied().unwrap_or(1);
        let row_len = shape.iter().skip(1).product::<usize>();
        if self.random_seed.is_none() {
            let (file, entry) = self.entry(name, shape)?;
            if entry.dtype == Dtype::I8 {
                let values = file.bytes(entry)?.into_iter().map(|b| b as i8).collect();
                let scale_name = scale_name(name);
                let scales = self
                    .get(&scale_name, &[rows])
                    .map_err(|e| Error::Weights(format!("int8 {name} without its scales: {e}")))?;
                return Ok((values, scales));
            }
        }
        let w = self.get(name, shape)?;
        Ok(vitmsn_kernels::quant::quantize_weights(rows, row_len, &w))
    }

    /// Whether the checkpoint holds int8 weights (one that `vitmsn quantize` wrote).
    pub fn is_quantized(&self) -> bool {
        self.index
            .values()
            .any(|(_, entry)| entry.dtype == Dtype::I8)
    }

    /// Every tensor's name and header, sorted by name.
    pub(crate) fn tensors(&self) -> Vec<(&str, &TensorEntry)> {
        let mut tensors: Vec<(&str, &TensorEntry)> = self
            .index
            .iter()
            .map(|(name, (_, entry))| (name.as_str(), entry))
            .collect();
        tensors.sort_by_key(|&(name, _)| name);
        tensors
    }

    /// The bytes of tensor `name` as stored, whatever its dtype, checked to have `shape`.
    pub(crate) fn stored_bytes(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let (file, entry) = self.entry(name, shape)?;
        file.bytes(entry)
    }

    /// The size of the checkpoint's safetensors files, in bytes.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.files.iter().map(|file| file.len).sum()
    }

    /// The file and header of tensor `name`, checked to have `shape`.
    fn entry(&self, name: &str, shape: &[usize]) -> Result<(&SafetensorsFile, &TensorEntry)> {
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
        Ok((&self.files[*file], entry))
    }
}

/// The name of the per-row scales of the int8 tensor `name`.
pub fn scale_name(name: &str) -> String {
    format!("{name}_scale")
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
    let shards: BTreeSet<String> = read_weight_map(&index)
        .map(|map| map.into_values().collect())
        .unwrap_or_default();
    files.extend(shards.iter().map(|shard| dir.join(shard)));
    files.push(index);
    files
}

/// An index's `weight_map`: tensor name → shard file name, every shard a plain file name
/// (no folder, no `..`), so an index cannot send the loader elsewhere on the disk, and
/// every tensor listed once.
fn read_weight_map(index_path: &Path) -> Result<BTreeMap<String, String>> {
    let text = crate::files::read_json_text(index_path)?;
    let invalid = |why: String| Error::Weights(format!("{}: {why}", index_path.display()));
    let index: IndexFile =
        serde_json::from_str(&text).map_err(|e| invalid(one_line(&e.to_string())))?;
    let mut map = BTreeMap::new();
    for (name, shard) in index.weight_map.0 {
        let mut components = Path::new(&shard).components();
        let plain = matches!(
            (components.next(), components.next()),
            (Some(std::path::Component::Normal(_)), None)
        );
        if !plain {
            return Err(invalid(format!(
                "shard \"{}\" is not a file name in the checkpoint folder",
                one_line(&shard)
            )));
        }
        if map.insert(name.clone(), shard).is_some() {
            return Err(invalid(format!("{} is listed twice", one_line(&name))));
        }
    }
    Ok(map)
}

/// What the loader reads of a `model.safetensors.index.json`.
#[derive(Deserialize)]
struct IndexFile {
    weight_map: ListedPairs,
}

/// A JSON object's entries in the order written, duplicates kept: a map would keep only
/// the last of a tensor listed twice.
struct ListedPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for ListedPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = ListedPairs;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of tensor names to shard file names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ListedPairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(ListedPairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

/// Values spread evenly in ±0.05 (a plausible weight scale), from a generator seeded by
/// the seed and the tensor's name, so each tensor is the same in every run.
fn random_values(seed: u64, name: &str, len: usize) -> Vec<f32> {
    let name_hash = name.bytes().fold(seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    Rng::values(name_hash, len, 0.05)
}
