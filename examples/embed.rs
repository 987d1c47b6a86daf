//! Image files to CLS embeddings, and how alike they are:
//! `cargo run --release --example embed -- path/to/checkpoint a.jpg b.jpg ...`.
//! Without arguments it embeds this repository's sample photos with a tiny test
//! checkpoint (random weights: the similarities mean nothing until it is a real one).

use vitmsn::pipeline::Pipeline;
use vitmsn::{BackendKind, BackendOptions, Feature};

fn main() -> vitmsn::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/base_all_outputs/model".into());
    let mut images: Vec<String> = args.collect();
    if images.is_empty() {
        images = ["cat/cat-1.jpg", "cat/cat-2.jpg", "rocket/rocket-1.jpg"]
            .map(|name| format!("samples/support/{name}"))
            .into();
    }

    let pipeline = Pipeline::from_dir(
        &dir,
        BackendKind::default_for_this_cpu(),
        &BackendOptions::default(),
    )?;
    let embeddings = pipeline.embed(&images, &[Feature::Cls])?;
    let cls = embeddings.get(Feature::Cls).expect("asked for");
    let hidden = cls.shape[1];
    println!("{} embeddings of {hidden} values", cls.shape[0]);

    let row = |i: usize| &cls.data[i * hidden..][..hidden];
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            println!(
                "cosine({}, {}) = {:.4}",
                images[i],
                images[j],
                cosine(row(i), row(j))
            );
        }
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}
