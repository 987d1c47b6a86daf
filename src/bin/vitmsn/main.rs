//! The `vitmsn` command line. Errors print as one line on stderr with exit code 1;
//! `--help` and `--version` print to stdout with exit code 0.

mod args;
mod demo;
mod failure;
mod images;
mod outputs;

use args::{BenchArgs, Cli, Command, ForwardArgs, QuantizeArgs};
use clap::Parser;
use failure::Result;
use std::process::ExitCode;
use vitmsn::internals::backend::memory::size_text;
use vitmsn::internals::quantize::quantize_checkpoint;
use vitmsn::internals::weights::checkpoint_files;
use vitmsn::internals::{bench, io};
use vitmsn::ViTMSN;
use vitmsn::Weights;

fn main() -> ExitCode {
    quiet_vulkan_loader();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("error: {}", args::one_line(&e));
            return ExitCode::FAILURE;
        }
        Err(help_or_version) => {
            // --help, --version, or no command at all: the help on stdout.
            let _ = help_or_version.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Forward(a) => forward(&a),
        Command::Bench(a) => bench(&a),
        Command::Preprocess(a) => images::preprocess(&a),
        Command::Embed(a) => images::embed(&a),
        Command::Classify(a) => images::classify(&a),
        Command::Fewshot(a) => images::fewshot(&a),
        Command::Quantize(a) => quantize(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A path may hold a line break; the contract is one line.
            eprintln!("error: {}", e.message().replace(char::is_control, " "));
            ExitCode::FAILURE
        }
    }
}

/// Mesa's Vulkan loader prints "error: XDG_RUNTIME_DIR is invalid" on every adapter probe
/// without a runtime directory, which reads like our own errors. Give it a private one;
/// this runs before any thread starts, so setting the variable is sound.
fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let user = std::env::var("USER").unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("vitmsn-xdg-runtime-{user}"));
    #[cfg(unix)]
    let made = {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
    };
    #[cfg(not(unix))]
    let made = std::fs::create_dir_all(&dir);
    if made.is_ok() {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

fn forward(a: &ForwardArgs) -> Result<()> {
    let (kind, options) = a.backend.resolve()?;
    let mut protected = checkpoint_files(&a.model);
    protected.push(a.input.clone());
    outputs::refuse_overwriting(&a.output, &protected)?;
    let model = ViTMSN::from_dir(&a.model, kind, &options)?;
    let spec = model.input_spec(a.interpolate_pos_encoding);
    let mut input = io::read_inputs(&a.input, &spec)?;
    input.output_hidden_states = a.output_hidden_states;
    input.output_attentions = a.output_attentions;
    input.interpolate_pos_encoding = a.interpolate_pos_encoding;
    let output = model.forward(&input)?;
    io::write_outputs(&a.output, &output)?;
    if a.quiet {
        return Ok(());
    }
    println!("wrote {}:", a.output.display());
    for (name, tensor) in io::named_outputs(&output) {
        println!("  {name} {:?}", tensor.shape);
    }
    if let Some(logits) = &output.logits {
        let labels = logits.shape[1];
        for (i, row) in logits.data.chunks_exact(labels).enumerate() {
            let best = (0..labels)
                .max_by(|&x, &y| row[x].total_cmp(&row[y]).then(y.cmp(&x)))
                .unwrap_or(0);
            println!(
                "image {i}: {} (logit {:.4})",
                model.config().label_name(best),
                row[best]
            );
        }
    }
    Ok(())
}

fn bench(a: &BenchArgs) -> Result<()> {
    let (kind, options) = a.backend.resolve()?;
    let (mut model, name) = match (&a.model, &a.arch) {
        (Some(dir), None) => (
            ViTMSN::from_dir(dir, kind, &options)?,
            dir.display().to_string(),
        ),
        (None, Some(arch)) => {
            let config = bench::arch_config(arch)?;
            let backend = vitmsn::internals::backend::create(kind, &options)?;
            (
                ViTMSN::new(config, &Weights::random(0), backend)?,
                arch.to_string(),
            )
        }
        _ => unreachable!("clap requires exactly one of --model and --arch"),
    };
    let report = bench::run(&mut model, &name, a.batch, a.iters, a.profile)?;
    if a.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    let isa = report.isa.map_or(String::new(), |isa| format!("{isa}, "));
    println!(
        "{} on {} ({isa}{}, {} threads), batch {}: median {:.2} ms, {:.1} images/s, {:.1} GFLOP/s over {} forwards",
        report.model, report.backend, report.precision, report.threads, report.batch, report.median_ms, report.images_per_s, report.gflop_per_s, report.iters
    );
    if !report.ops.is_empty() {
        println!(
            "{:<12} {:>5} {:>10} {:>7} {:>9}",
            "op", "count", "ms", "share", "GFLOP/s"
        );
    }
    for op in &report.ops {
        let rate = op.gflop_per_s.map_or(String::new(), |r| format!("{r:.1}"));
        let share = 100.0 * op.ms / report.median_ms;
        println!(
            "{:<12} {:>5} {:>10.3} {share:>6.1}% {rate:>9}",
            op.op, op.count, op.ms
        );
    }
    Ok(())
}

fn quantize(a: &QuantizeArgs) -> Result<()> {
    // The files of the checkpoint written may not be any that the command reads (through
    // a link as much as by name).
    let protected = checkpoint_files(&a.model);
    for written in checkpoint_files(&a.output) {
        outputs::refuse_overwriting(&written, &protected)?;
    }
    let summary = quantize_checkpoint(&a.model, &a.output)?;
    println!(
        "wrote {}: {} int8 weight matrices, {} → {}",
        summary.file.display(),
        summary.int8_matrices,
        size_text(summary.bytes_before),
        size_text(summary.bytes_after)
    );
    Ok(())
}
