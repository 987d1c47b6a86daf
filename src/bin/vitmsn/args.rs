//! The commands and their flags: the CLI's stable contract.

use crate::failure::{Failure, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use vitmsn::fewshot::Method;
use vitmsn::internals::backend;
use vitmsn::{BackendKind, BackendOptions, Error, Feature, Isa, Precision};

#[derive(Parser)]
#[command(
    name = "vitmsn",
    version,
    about = "ViTMSN inference: embed, classify and few-shot classify images with transformers' exact semantics",
    long_about = "ViTMSN inference (Masked Siamese Networks): transformers' ViTMSNModel and \
ViTMSNForImageClassification computed exactly, on hand-written CPU kernels (scalar \
reference, AVX-512, AVX2/FMA, NEON) or WGSL shaders on a GPU.\n\n\
A model is a save_pretrained folder: config.json, model.safetensors (or a sharded index) \
and, optionally, preprocessor_config.json.",
    after_help = "Start with `vitmsn demo`: it needs no download.",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Embed and few-shot classify the bundled sample photos on every backend here
    #[command(after_help = "Example:\n  vitmsn demo\n  vitmsn demo --model path/to/vit-msn-small")]
    Demo(DemoArgs),
    /// Run one forward over a tensor file, as transformers' forward
    #[command(
        after_help = "Example:\n  vitmsn forward --model tests/fixtures/classifier_ce/model \\\n      --input tests/fixtures/classifier_ce/inputs.safetensors --output out.safetensors"
    )]
    Forward(ForwardArgs),
    /// Time whole forwards of one batch (a checkpoint, or a named architecture with random weights)
    #[command(after_help = "Example:\n  vitmsn bench --arch vit-msn-small --batch 8 --json")]
    Bench(BenchArgs),
    /// Write images as the pixel_values the model is fed
    #[command(
        after_help = "Example:\n  vitmsn preprocess photos/ --model path/to/vit-msn-small --output pixels.safetensors"
    )]
    Preprocess(PreprocessArgs),
    /// Write image embeddings (the backbone's CLS token, before or after its final LayerNorm, or the mean patch token)
    #[command(
        after_help = "Example:\n  vitmsn embed photos/ --model path/to/vit-msn-small --output emb.safetensors --features cls,mean"
    )]
    Embed(EmbedArgs),
    /// Print the top labels of each image from a classifier checkpoint
    #[command(
        after_help = "Example:\n  vitmsn classify cat.jpg dogs/ --model path/to/classifier --top-k 3"
    )]
    Classify(ClassifyArgs),
    /// Classify query images by a few labelled support images per class
    #[command(
        after_help = "The support folder holds one subfolder of images per class. When the query \
folders hold class subfolders too, the accuracy is reported.\n\nExample:\n  vitmsn fewshot --model path/to/vit-msn-small --support support/ --query query/"
    )]
    Fewshot(FewshotArgs),
    /// Write a checkpoint with int8 weight matrices: about a quarter of the size, run in int8 when loaded
    #[command(
        after_help = "Every Linear weight and the patch embedding's convolution are stored as int8 with one \
f32 scale per output row, quantized as --precision int8 quantizes at load, so the outputs are \
the same bit for bit; the other tensors are copied. config.json and preprocessor_config.json \
are copied beside it.\n\nExample:\n  vitmsn quantize --model path/to/vit-msn-small --output vit-msn-small-int8"
    )]
    Quantize(QuantizeArgs),
}

/// Where and how to compute.
#[derive(Args, Clone, Default)]
pub struct BackendArgs {
    /// scalar (f32 reference, one thread), cpu (SIMD kernels, threaded) or gpu (WGSL via wgpu) [default: cpu where the CPU has SIMD kernels, else scalar]
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<BackendKind>,
    /// Threads of the cpu backend, at most eight per core (and at least 64) [default: VITMSN_THREADS, else every core]
    #[arg(long, value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// The cpu backend's kernels: avx512, avx2, neon or scalar [default: VITMSN_ISA, else the best this CPU runs]
    #[arg(long, value_parser = parse_isa)]
    pub isa: Option<Isa>,
    /// Precision of the weights and of the products that use them: f32; f16 on the gpu
    /// backend (needs SHADER_F16); bf16 or int8 on the cpu backend. Default f32, or int8
    /// for a checkpoint written by `vitmsn quantize`
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Most memory a forward's activations may take on the scalar and cpu backends, in bytes or with K, M, G, T (powers of 1024) [default: three quarters of the memory available]
    #[arg(long, value_parser = parse_memory_size)]
    pub max_memory: Option<u64>,
}

impl BackendArgs {
    /// The backend and its options, refusing options that the chosen backend would ignore.
    pub fn resolve(&self) -> Result<(BackendKind, BackendOptions)> {
        let kind = self
            .backend
            .unwrap_or_else(BackendKind::default_for_this_cpu);
        let only_for = |flag: &str, backend: BackendKind| {
            Failure::Usage(format!(
                "{flag} applies to the {} backend, not the {} backend",
                backend.name(),
                kind.name()
            ))
        };
        if self.isa.is_some() && kind != BackendKind::Cpu {
            return Err(only_for("--isa", BackendKind::Cpu));
        }
        if self.threads.is_some() && kind != BackendKind::Cpu {
            return Err(only_for("--threads", BackendKind::Cpu));
        }
        if self.max_memory.is_some() && kind == BackendKind::Gpu {
            return Err(Failure::Usage(
                "--max-memory applies to the scalar and cpu backends, not the gpu backend".into(),
            ));
        }
        if let Some(precision) = self.precision {
            if let Some(only) = precision.only_backend().filter(|&only| only != kind) {
                return Err(only_for(&format!("--precision {}", precision.name()), only));
            }
        }
        Ok((
            kind,
            BackendOptions {
                threads: self.threads,
                isa: self.isa,
                precision: self.precision,
                max_memory: self.max_memory,
            },
        ))
    }
}

#[derive(Args)]
pub struct DemoArgs {
    /// A checkpoint folder; without it, the vit-msn-small architecture with random weights
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Only these backends (comma-separated: scalar, cpu, gpu) [default: every one this machine has, but a software GPU adapter]
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    pub backends: Vec<BackendKind>,
}

#[derive(Args)]
pub struct ForwardArgs {
    /// The model folder
    #[arg(long)]
    pub model: PathBuf,
    /// pixel_values [B,C,H,W] and optional bool_masked_pos, head_mask, labels
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs (f32 safetensors)
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Also write hidden_states.{i}: the embedding output, then each layer's
    #[arg(long)]
    pub output_hidden_states: bool,
    /// Also write attentions.{i}: each layer's attention probabilities
    #[arg(long)]
    pub output_attentions: bool,
    /// Accept images of another size, resampling the position embeddings (bicubic)
    #[arg(long)]
    pub interpolate_pos_encoding: bool,
    /// Print nothing on success
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["model", "arch"]))]
pub struct BenchArgs {
    /// A model folder
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A published architecture, with deterministic random weights
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(vitmsn::internals::bench::ARCHITECTURES))]
    pub arch: Option<String>,
    /// Images per forward
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub batch: usize,
    /// Timed forwards, after one warm-up (at most 1000000)
    #[arg(long, default_value_t = 10, value_parser = parse_iterations)]
    pub iters: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    /// Also time each op and report them by kind (not on the gpu backend)
    #[arg(long)]
    pub profile: bool,
}

/// Images and how they are read, shared by the image commands.
#[derive(Args)]
pub struct ImageArgs {
    /// Image files or folders (walked recursively, sorted; only image extensions)
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub reading: ReadingArgs,
}

#[derive(Args)]
pub struct ReadingArgs {
    /// MSN's evaluation transform instead of the checkpoint's resize: short side to 256, center crop 224
    #[arg(long)]
    pub crop: bool,
    /// Fail (writing nothing) when an image cannot be read, instead of skipping it
    #[arg(long)]
    pub strict: bool,
    /// Refuse images larger than this many pixels, before decoding them
    #[arg(long, default_value_t = vitmsn::preprocess::DEFAULT_MAX_PIXELS, value_parser = parse_positive_u64)]
    pub max_pixels: u64,
}

#[derive(Args)]
pub struct PreprocessArgs {
    #[command(flatten)]
    pub images: ImageArgs,
    /// The model folder (its preprocessor_config.json and config.json)
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write pixel_values [N,C,H,W] f32
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub images: ImageArgs,
    /// The model folder (a classifier's backbone is used as is)
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the embeddings, f32 [N, hidden] each
    #[arg(long)]
    pub output: PathBuf,
    /// Which embeddings (comma-separated): cls, cls_prenorm, mean
    #[arg(long, value_delimiter = ',', default_value = "cls", value_parser = parse_feature)]
    pub features: Vec<Feature>,
    /// Images per forward
    #[arg(long, default_value_t = 8, value_parser = parse_positive)]
    pub batch: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    pub images: ImageArgs,
    /// A classifier model folder (labels from its config's id2label)
    #[arg(long)]
    pub model: PathBuf,
    /// Labels printed per image
    #[arg(long, default_value_t = 5, value_parser = parse_positive)]
    pub top_k: usize,
    /// Images per forward
    #[arg(long, default_value_t = 8, value_parser = parse_positive)]
    pub batch: usize,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Args)]
pub struct FewshotArgs {
    /// The model folder
    #[arg(long)]
    pub model: PathBuf,
    /// A folder with one subfolder of labelled images per class
    #[arg(long)]
    pub support: PathBuf,
    /// Images or folders to classify
    #[arg(long, required = true, num_args = 1.., value_name = "IMAGE|DIR")]
    pub query: Vec<PathBuf>,
    /// prototype (nearest class mean by cosine) or logistic (MSN's protocol)
    #[arg(long, default_value = "prototype", value_parser = parse_method)]
    pub method: Method,
    /// The embedding compared: cls or cls_prenorm
    #[arg(long, default_value = "cls", value_parser = parse_fewshot_feature)]
    pub features: Feature,
    /// Images per forward
    #[arg(long, default_value_t = 8, value_parser = parse_positive)]
    pub batch: usize,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub reading: ReadingArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model folder (one model.safetensors or a sharded index; f32, f16 or bf16)
    #[arg(long)]
    pub model: PathBuf,
    /// The folder to write the quantized checkpoint to (created if needed; not the model folder)
    #[arg(long)]
    pub output: PathBuf,
}

fn parse_backend(name: &str) -> Result<BackendKind, String> {
    name.parse().map_err(|e: Error| message(e))
}

fn parse_isa(name: &str) -> Result<Isa, String> {
    backend::parse_isa(name).map_err(message)
}

fn parse_precision(name: &str) -> Result<Precision, String> {
    name.parse().map_err(|e: Error| message(e))
}

fn parse_feature(name: &str) -> Result<Feature, String> {
    name.parse().map_err(|e: Error| message(e))
}

fn parse_fewshot_feature(name: &str) -> Result<Feature, String> {
    match parse_feature(name)? {
        Feature::Mean => Err("few-shot compares cls or cls_prenorm embeddings".into()),
        f => Ok(f),
    }
}

fn parse_method(name: &str) -> Result<Method, String> {
    name.parse().map_err(|e: Error| message(e))
}

fn parse_positive(text: &str) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "expected a positive integer".to_string())
}

/// The most timed forwards `bench --iters` takes: days of the smallest model.
const MAX_ITERATIONS: usize = 1_000_000;

fn parse_iterations(text: &str) -> Result<usize, String> {
    let iterations = parse_positive(text)?;
    if iterations > MAX_ITERATIONS {
        return Err(format!("at most {MAX_ITERATIONS} timed forwards"));
    }
    Ok(iterations)
}

fn parse_threads(text: &str) -> Result<usize, String> {
    let threads = parse_positive(text)?;
    backend::check_threads(threads).map_err(message)?;
    Ok(threads)
}

fn parse_memory_size(text: &str) -> Result<u64, String> {
    backend::memory::parse_size(text)
        .ok_or_else(|| "expected a size in bytes, or with K, M, G or T (as 512M, 8G)".into())
}

fn parse_positive_u64(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "expected a positive integer".to_string())
}

/// A library error's text without its kind prefix, for clap to quote.
fn message(e: Error) -> String {
    match e {
        Error::InvalidOption(msg) | Error::Input(msg) => msg,
        other => other.to_string(),
    }
}

/// clap's error as one line: its message, then any tip, then where help is.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // Indented lines right after the first list what it names (missing arguments).
    let listed: Vec<&str> = lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    if !listed.is_empty() {
        line.push(' ');
        line.push_str(&listed.join(", "));
    }
    for tip in lines.map(str::trim).filter(|l| l.starts_with("tip:")) {
        line.push_str("; ");
        line.push_str(tip);
    }
    line.push_str(" (see vitmsn --help)");
    line
}
