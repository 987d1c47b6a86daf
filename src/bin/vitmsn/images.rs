//! The image commands: preprocess, embed, classify and fewshot. Each walks its
//! arguments for images, skips (or, with --strict, fails on) files it cannot read, and
//! writes nothing unless the whole run succeeds.

use crate::args::{ClassifyArgs, EmbedArgs, FewshotArgs, PreprocessArgs, ReadingArgs};
use crate::failure::Result;
use crate::outputs;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vitmsn::fewshot::FewShot;
use vitmsn::internals::io;
use vitmsn::internals::weights::checkpoint_files;
use vitmsn::pipeline::stack;
use vitmsn::preprocess::{collect_images, Preprocessor, PreprocessorConfig};
use vitmsn::{
    BackendKind, BackendOptions, Embeddings, Error, Feature, Tensor, ViTMSN, ViTMSNConfig,
};

/// The preprocessing of the checkpoint in `dir`, as `reading` adjusts it.
fn preprocessor(dir: &Path, model: &ViTMSNConfig, reading: &ReadingArgs) -> Result<Preprocessor> {
    let config = PreprocessorConfig::from_dir(dir, model.image_size.hw())?;
    Ok(Preprocessor::new(config, model.num_channels)?
        .with_crop(reading.crop)
        .with_max_pixels(reading.max_pixels))
}

/// Image files under `paths`, at least one.
fn images_in(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let files = collect_images(paths)?;
    if files.is_empty() {
        return Err(Error::Input(format!(
            "no images (jpg, jpeg, png, webp, bmp, gif, tif, tiff) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    Ok(files)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Preprocesses `files` into batches of up to `batch` images of one size, skipping
/// unreadable files with a line on stderr (an error under `strict`), and hands each
/// batch with its files to `each`. Returns the files kept, in order.
fn for_each_batch(
    files: &[PathBuf],
    preprocessor: &Preprocessor,
    strict: bool,
    batch: usize,
    what: &str,
    mut each: impl FnMut(&[PathBuf], Tensor) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    let bar = progress(files.len(), what);
    let mut kept = Vec::with_capacity(files.len());
    let mut pending: (Vec<PathBuf>, Vec<Tensor>) = (Vec::new(), Vec::new());
    let mut flush = |pending: &mut (Vec<PathBuf>, Vec<Tensor>)| -> Result<()> {
        if pending.1.is_empty() {
            return Ok(());
        }
        each(&pending.0, stack(&pending.1)?)?;
        bar.inc(pending.1.len() as u64);
        pending.0.clear();
        pending.1.clear();
        Ok(())
    };
    for file in files {
        match preprocessor.load(file) {
            Ok(pixels) => {
                let size_changes = pending.1.last().is_some_and(|p| p.shape != pixels.shape);
                if size_changes || pending.1.len() == batch {
                    flush(&mut pending)?;
                }
                kept.push(file.clone());
                pending.0.push(file.clone());
                pending.1.push(pixels);
            }
            Err(e) if strict => return Err(e.into()),
            Err(e) => {
                bar.suspend(|| eprintln!("skipped: {e}"));
                bar.inc(1);
            }
        }
    }
    flush(&mut pending)?;
    bar.finish_and_clear();
    if kept.is_empty() {
        return Err(Error::Input("no image could be read".into()).into());
    }
    Ok(kept)
}

fn file_list_json(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    serde_json::to_string(&names).expect("strings serialise")
}

fn load_model(dir: &Path, backend: &crate::args::BackendArgs) -> Result<ViTMSN> {
    let (kind, options): (BackendKind, BackendOptions) = backend.resolve()?;
    Ok(ViTMSN::from_dir(dir, kind, &options)?)
}

/// Refuses an `output` that is one of the image `files` or a file of the model folder.
fn refuse_overwriting_inputs(output: &Path, model: &Path, files: &[PathBuf]) -> Result<()> {
    let mut protected = checkpoint_files(model);
    protected.extend_from_slice(files);
    outputs::refuse_overwriting(output, &protected)
}

pub fn preprocess(a: &PreprocessArgs) -> Result<()> {
    let files = images_in(&a.images.images)?;
    refuse_overwriting_inputs(&a.output, &a.model, &files)?;
    let config = ViTMSNConfig::from_file(&a.model.join("config.json"))?;
    let preprocessor = preprocessor(&a.model, &config, &a.images.reading)?;
    let mut batches = Vec::new();
    let kept = for_each_batch(
        &files,
        &preprocessor,
        a.images.reading.strict,
        usize::MAX,
        "preprocess",
        |_, pixels| {
            batches.push(pixels);
            Ok(())
        },
    )?;
    let [pixel_values] = <[Tensor; 1]>::try_from(batches).map_err(|_| {
        Error::Input(
            "the images keep their own sizes (do_resize is false) and differ: they cannot form one pixel_values tensor".into(),
        )
    })?;
    let metadata = HashMap::from([("files".to_string(), file_list_json(&kept))]);
    io::write_tensors(
        &a.output,
        &[("pixel_values", &pixel_values)],
        Some(metadata),
    )?;
    eprintln!(
        "wrote pixel_values {:?} for {} images to {}",
        pixel_values.shape,
        kept.len(),
        a.output.display()
    );
    Ok(())
}

/// Embeds `files` in batches: the files kept and their embeddings.
fn embed_files(
    model: &ViTMSN,
    preprocessor: &Preprocessor,
    files: &[PathBuf],
    features: &[Feature],
    strict: bool,
    batch: usize,
) -> Result<(Vec<PathBuf>, Embeddings)> {
    let mut all = Embeddings::default();
    let kept = for_each_batch(files, preprocessor, strict, batch, "embed", |_, pixels| {
        all.append(model.embed(pixels, features)?);
        Ok(())
    })?;
    Ok((kept, all))
}

pub fn embed(a: &EmbedArgs) -> Result<()> {
    let files = images_in(&a.images.images)?;
    refuse_overwriting_inputs(&a.output, &a.model, &files)?;
    let model = load_model(&a.model, &a.backend)?;
    let preprocessor = preprocessor(&a.model, model.config(), &a.images.reading)?;
    let mut features = a.features.clone();
    features.dedup();
    let (kept, embeddings) = embed_files(
        &model,
        &preprocessor,
        &files,
        &features,
        a.images.reading.strict,
        a.batch,
    )?;
    let tensors: Vec<(&str, &Tensor)> = embeddings
        .features
        .iter()
        .map(|(f, t)| (f.tensor_name(), t))
        .collect();
    let metadata = HashMap::from([("files".to_string(), file_list_json(&kept))]);
    io::write_tensors(&a.output, &tensors, Some(metadata))?;
    eprintln!(
        "wrote {} for {} images to {}",
        tensors
            .iter()
            .map(|(n, t)| format!("{n} {:?}", t.shape))
            .collect::<Vec<_>>()
            .join(", "),
        kept.len(),
        a.output.display()
    );
    Ok(())
}

pub fn classify(a: &ClassifyArgs) -> Result<()> {
    let model = load_model(&a.model, &a.backend)?;
    let preprocessor = preprocessor(&a.model, model.config(), &a.images.reading)?;
    let files = images_in(&a.images.images)?;
    let start = Instant::now();
    let mut answers = Vec::new();
    let kept = for_each_batch(
        &files,
        &preprocessor,
        a.images.reading.strict,
        a.batch,
        "classify",
        |_, pixels| {
            answers.extend(model.classify(pixels, a.top_k)?);
            Ok(())
        },
    )?;
    let images_per_s = kept.len() as f64 / start.elapsed().as_secs_f64();
    if a.json {
        let predictions: Vec<_> = kept
            .iter()
            .zip(&answers)
            .map(|(file, top)| {
                let labels: Vec<_> = top
                    .iter()
                    .map(|p| json!({"label": p.label, "class": p.class, "probability": p.probability}))
                    .collect();
                json!({"file": file.display().to_string(), "labels": labels})
            })
            .collect();
        println!(
            "{}",
            json!({"predictions": predictions, "images_per_s": images_per_s})
        );
        return Ok(());
    }
    for (file, top) in kept.iter().zip(&answers) {
        let labels: Vec<String> = top
            .iter()
            .map(|p| format!("{} {:.4}", p.label, p.probability))
            .collect();
        println!("{}: {}", file.display(), labels.join(", "));
    }
    println!(
        "{} images in {:.2} s: {images_per_s:.1} images/s",
        kept.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The support set: class names (the sorted subfolders of `dir`) and each image's class.
fn support_set(dir: &Path) -> Result<(Vec<String>, Vec<PathBuf>, Vec<usize>)> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut class_dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    if class_dirs.is_empty() {
        return Err(Error::Input(format!(
            "{} has no class subfolders: the support set is one folder of images per class",
            dir.display()
        ))
        .into());
    }
    let (mut classes, mut files, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (label, class_dir) in class_dirs.iter().enumerate() {
        let name = class_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let images = collect_images(std::slice::from_ref(class_dir))?;
        if images.is_empty() {
            return Err(Error::Input(format!(
                "support class \"{name}\" ({}) has no images",
                class_dir.display()
            ))
            .into());
        }
        labels.extend(std::iter::repeat_n(label, images.len()));
        files.extend(images);
        classes.push(name);
    }
    Ok((classes, files, labels))
}

/// The class a query file is labelled with: the first folder below the query folder it
/// was found in, when that names a class.
fn query_truth(file: &Path, query_args: &[PathBuf], classes: &[String]) -> Option<usize> {
    query_args
        .iter()
        .filter(|arg| arg.is_dir())
        .find_map(|dir| file.strip_prefix(dir).ok())
        .filter(|relative| relative.components().count() >= 2)
        .and_then(|relative| relative.components().next())
        .and_then(|class| {
            classes
                .iter()
                .position(|c| c.as_str() == class.as_os_str().to_string_lossy())
        })
}

pub fn fewshot(a: &FewshotArgs) -> Result<()> {
    let model = load_model(&a.model, &a.backend)?;
    let preprocessor = preprocessor(&a.model, model.config(), &a.reading)?;
    let (classes, support_files, support_labels) = support_set(&a.support)?;
    let features = [a.features];
    let (kept_support, support) = embed_files(
        &model,
        &preprocessor,
        &support_files,
        &features,
        a.reading.strict,
        a.batch,
    )?;
    let labels: Vec<usize> = kept_support
        .iter()
        .map(|f| {
            support_labels[support_files
                .iter()
                .position(|s| s == f)
                .expect("kept from these")]
        })
        .collect();
    let classifier = FewShot::fit(
        a.method,
        classes.clone(),
        support.get(a.features).expect("embedded"),
        &labels,
    )?;
    let query_files = images_in(&a.query)?;
    let (kept, query) = embed_files(
        &model,
        &preprocessor,
        &query_files,
        &features,
        a.reading.strict,
        a.batch,
    )?;
    let answers = classifier.predict(query.get(a.features).expect("embedded"))?;
    let truths: Option<Vec<usize>> = kept
        .iter()
        .map(|f| query_truth(f, &a.query, &classes))
        .collect();
    let accuracy = truths.map(|truths| {
        let correct = truths
            .iter()
            .zip(&answers)
            .filter(|(t, p)| **t == p.class)
            .count();
        (correct, truths.len())
    });
    if a.json {
        let predictions: Vec<_> = kept
            .iter()
            .zip(&answers)
            .map(|(file, p)| json!({"file": file.display().to_string(), "label": classes[p.class], "score": p.score}))
            .collect();
        let accuracy = accuracy.map(|(c, n)| c as f64 / n as f64);
        println!(
            "{}",
            json!({"classes": classes, "predictions": predictions, "accuracy": accuracy})
        );
        return Ok(());
    }
    let score = match a.method {
        vitmsn::fewshot::Method::Prototype => "cosine",
        vitmsn::fewshot::Method::Logistic => "probability",
    };
    for (file, p) in kept.iter().zip(&answers) {
        println!(
            "{}: {} ({score} {:.4})",
            file.display(),
            classes[p.class],
            p.score
        );
    }
    if let Some((correct, n)) = accuracy {
        println!("accuracy: {:.4} ({correct}/{n})", correct as f64 / n as f64);
    }
    Ok(())
}
