//! `vitmsn demo`: the bundled sample photos embedded and few-shot classified on every
//! backend this machine has, each compared with the scalar reference. Runs on a fresh
//! clone: the photos are compiled in, and without `--model` the weights are random. A
//! software GPU adapter (lavapipe) runs only when asked for: it takes minutes here.

use crate::args::DemoArgs;
use crate::failure::Result;
use std::time::Instant;
use vitmsn::fewshot::{FewShot, Method};
use vitmsn::internals::{backend, bench};
use vitmsn::pipeline::stack;
use vitmsn::preprocess::{Preprocessor, PreprocessorConfig};
use vitmsn::{BackendKind, BackendOptions, Feature, Isa, Tensor, ViTMSN, ViTMSNConfig, Weights};

/// (split, class, file name, bytes) of each photo under `samples/`.
const SAMPLES: [(&str, &str, &str, &[u8]); 12] = {
    macro_rules! sample {
        ($split:literal, $class:literal, $file:literal) => {
            (
                $split,
                $class,
                $file,
                include_bytes!(concat!(
                    "../../../samples/",
                    $split,
                    "/",
                    $class,
                    "/",
                    $file
                )),
            )
        };
    }
    [
        sample!("support", "astronaut", "astronaut-1.jpg"),
        sample!("support", "astronaut", "astronaut-2.jpg"),
        sample!("support", "cat", "cat-1.jpg"),
        sample!("support", "cat", "cat-2.jpg"),
        sample!("support", "coffee", "coffee-1.jpg"),
        sample!("support", "coffee", "coffee-2.jpg"),
        sample!("support", "rocket", "rocket-1.jpg"),
        sample!("support", "rocket", "rocket-2.jpg"),
        sample!("query", "astronaut", "astronaut-1.jpg"),
        sample!("query", "cat", "cat-1.jpg"),
        sample!("query", "coffee", "coffee-1.jpg"),
        sample!("query", "rocket", "rocket-1.jpg"),
    ]
};

const CLASSES: [&str; 4] = ["astronaut", "cat", "coffee", "rocket"];

pub fn run(a: &DemoArgs) -> Result<()> {
    let (config, weights, preprocessing) = match &a.model {
        Some(dir) => {
            println!("model: {}", dir.display());
            let config = ViTMSNConfig::from_file(&dir.join("config.json"))?;
            let preprocessing = PreprocessorConfig::from_dir(dir, config.image_size.hw())?;
            (config, Weights::from_dir(dir)?, preprocessing)
        }
        None => {
            println!(
                "model: the vit-msn-small architecture with random weights (nothing to download).\n\
                 Random weights give meaningless labels: the point here is that every backend agrees.\n\
                 Pass --model DIR (a save_pretrained folder such as facebook/vit-msn-small) for real answers."
            );
            (
                bench::arch_config("vit-msn-small")?,
                Weights::random(0),
                PreprocessorConfig::default(),
            )
        }
    };
    let preprocessor = Preprocessor::new(preprocessing, config.num_channels)?;
    let pixels = SAMPLES
        .iter()
        .map(|(_, _, _, bytes)| preprocessor.from_bytes(bytes))
        .collect::<vitmsn::Result<Vec<_>>>()?;
    let pixels = stack(&pixels)?;
    let support = SAMPLES.iter().filter(|s| s.0 == "support").count();
    let labels: Vec<usize> = SAMPLES
        .iter()
        .map(|(_, class, _, _)| CLASSES.iter().position(|c| c == class).expect("a class"))
        .collect();
    println!(
        "images: {} support photos of {} classes ({}) and {} queries, preprocessed to {:?}\n",
        support,
        CLASSES.len(),
        CLASSES.join(", "),
        SAMPLES.len() - support,
        &pixels.shape[1..]
    );

    println!(
        "{:<14} {:>10} {:>22} {:>9}  query predictions",
        "backend", "ms/image", "max diff vs scalar", "accuracy"
    );
    let classes = CLASSES.map(String::from).to_vec();
    let queries = &labels[support..];
    // The scalar run, first whenever it runs, is what the others are compared with.
    let mut reference: Option<Tensor> = None;
    for (kind, isa) in backends(a)? {
        let options = BackendOptions {
            isa,
            ..Default::default()
        };
        let backend = match backend::create(kind, &options) {
            Ok(b) => b,
            Err(e) if a.backends.is_empty() => {
                println!("{:<14} skipped: {e}", kind.name());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let software = backend.device().filter(|d| d.software);
        if let (Some(device), true) = (&software, a.backends.is_empty()) {
            println!(
                "{:<14} skipped: {} is a software adapter on this CPU (slow, and not GPU speed); --backends gpu runs it",
                kind.name(),
                device.name
            );
            continue;
        }
        let model = ViTMSN::new(config.clone(), &weights, backend)?;
        let name = match (model.backend_isa(), software) {
            (Some(isa), _) => format!("{} ({})", kind.name(), isa.name()),
            (None, Some(_)) => format!("{} (software)", kind.name()),
            (None, None) => kind.name().to_string(),
        };
        // One warm-up image, so the timing leaves out one-time setup.
        let first = Tensor::new(
            [&[1][..], &pixels.shape[1..]].concat(),
            pixels.data[..pixels.data.len() / SAMPLES.len()].to_vec(),
        );
        model.embed(first, &[Feature::Cls])?;
        // The model takes its input by value; the copy is made before the clock starts.
        let batch = pixels.clone();
        let start = Instant::now();
        let embeddings = model.embed(batch, &[Feature::Cls])?;
        let ms_per_image = start.elapsed().as_secs_f64() * 1e3 / SAMPLES.len() as f64;
        let embeddings = embeddings.get(Feature::Cls).expect("asked for").clone();
        let dim = embeddings.shape[1];
        let rows = |range: std::ops::Range<usize>| {
            Tensor::new(
                vec![range.len(), dim],
                embeddings.data[range.start * dim..range.end * dim].to_vec(),
            )
        };
        let fewshot = FewShot::fit(
            Method::Prototype,
            classes.clone(),
            &rows(0..support),
            &labels[..support],
        )?;
        let predictions = fewshot.predict(&rows(support..SAMPLES.len()))?;
        let correct = predictions
            .iter()
            .zip(queries)
            .filter(|(p, &t)| p.class == t)
            .count();
        let predicted: Vec<&str> = predictions.iter().map(|p| CLASSES[p.class]).collect();
        if kind == BackendKind::Scalar && reference.is_none() {
            reference = Some(embeddings.clone());
        }
        let difference = reference
            .as_ref()
            .map_or("(no scalar run)".to_string(), |r| {
                format!("{:.2e}", relative_difference(&embeddings, r))
            });
        println!(
            "{name:<14} {ms_per_image:>10.1} {difference:>22} {:>9}  {}",
            format!("{correct}/{}", queries.len()),
            predicted.join(", ")
        );
    }
    println!(
        "\nmax diff: max |embedding - scalar embedding| / max(1, max |scalar embedding|), CLS features.\n\
         The photos are under samples/; try `vitmsn fewshot --model DIR --support samples/support --query samples/query`."
    );
    Ok(())
}

/// The backends to run: those asked for, else every one this build and machine may
/// have (each instruction set of the cpu backend this CPU runs), the scalar reference first.
fn backends(a: &DemoArgs) -> Result<Vec<(BackendKind, Option<Isa>)>> {
    let kinds = if a.backends.is_empty() {
        vec![BackendKind::Scalar, BackendKind::Cpu, BackendKind::Gpu]
    } else {
        a.backends.clone()
    };
    let mut all = Vec::new();
    for kind in kinds {
        match kind {
            BackendKind::Cpu => all.extend(
                Isa::supported()
                    .into_iter()
                    .filter(|&isa| isa != Isa::Scalar)
                    .map(|isa| (kind, Some(isa))),
            ),
            _ => all.push((kind, None)),
        }
    }
    Ok(all)
}

/// `max |a − b| / max(1, max |b|)`: the parity measure of the tests.
fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.data.iter().fold(1f32, |m, x| m.max(x.abs()));
    let diff = a
        .data
        .iter()
        .zip(&b.data)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}
