//! The `vitmsn` command line. Errors print as one line on stderr with exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;
use vitmsn::backend::{self, Precision};
use vitmsn::weights::Weights;
use vitmsn::{bench, io, BackendKind, BackendOptions, Error, Result, ViTMSN};

const USAGE: &str = "usage:
  vitmsn forward --model DIR --input IN.safetensors --output OUT.safetensors
                 [--backend scalar|cpu|gpu] [--threads T] [--isa avx512|avx2|neon|scalar]
                 [--precision f32|f16] [--output-hidden-states] [--output-attentions]
                 [--interpolate-pos-encoding]
  vitmsn bench (--model DIR | --arch vit-msn-small|vit-msn-base|vit-msn-large|vit-msn-base-4|vit-msn-large-7)
               [--batch N] [--threads T] [--isa I] [--backend B] [--precision P] [--iters N] [--json]
               [--profile]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("forward") => forward(&Flags::parse(&args[1..])?),
        Some("bench") => bench(&Flags::parse(&args[1..])?),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Error::Usage(format!(
            "unknown command \"{other}\" (see vitmsn --help)"
        ))),
    }
}

/// `--name value` options and bare `--switch`es, in any order.
struct Flags {
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

const SWITCHES: [&str; 5] = [
    "output-hidden-states",
    "output-attentions",
    "interpolate-pos-encoding",
    "json",
    "profile",
];

impl Flags {
    fn parse(args: &[String]) -> Result<Self> {
        let mut flags = Flags {
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| Error::Usage(format!("unexpected argument \"{arg}\"")))?;
            if SWITCHES.contains(&name) {
                flags.switches.push(name.to_string());
            } else {
                let value = rest
                    .next()
                    .ok_or_else(|| Error::Usage(format!("--{name} needs a value")))?;
                flags.values.push((name.to_string(), value.clone()));
            }
        }
        Ok(flags)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| Error::Usage(format!("--{name} is required (see vitmsn --help)")))
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// Fails on an option or switch that is not in `known`: the command does not take it.
    fn check_known(&self, known: &[&str]) -> Result<()> {
        let mut names = self.values.iter().map(|(n, _)| n).chain(&self.switches);
        match names.find(|n| !known.contains(&n.as_str())) {
            Some(n) => Err(Error::Usage(format!(
                "unknown option --{n} (see vitmsn --help)"
            ))),
            None => Ok(()),
        }
    }

    fn count(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::Usage(format!("--{name} {v}: expected a positive integer"))
                })
            }
        }
    }

    fn backend(&self) -> Result<(BackendKind, BackendOptions)> {
        let kind = match self.get("backend") {
            Some(name) => BackendKind::parse(name)?,
            None => BackendKind::default_for_this_cpu(),
        };
        let threads = self
            .get("threads")
            .map(|t| {
                t.parse::<usize>().ok().filter(|&t| t > 0).ok_or_else(|| {
                    Error::Usage(format!("--threads {t}: expected a positive integer"))
                })
            })
            .transpose()?;
        let isa = self.get("isa").map(backend::parse_isa).transpose()?;
        if isa.is_some() && kind != BackendKind::Cpu {
            return Err(Error::Usage(format!(
                "--isa chooses the cpu backend's kernels, not the {} backend's",
                kind.name()
            )));
        }
        let precision = Precision::parse(self.get("precision").unwrap_or("f32"))?;
        Ok((
            kind,
            BackendOptions {
                threads,
                isa,
                precision,
            },
        ))
    }
}

fn forward(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "model",
        "input",
        "output",
        "backend",
        "threads",
        "isa",
        "precision",
        "output-hidden-states",
        "output-attentions",
        "interpolate-pos-encoding",
    ])?;
    let model_dir = PathBuf::from(flags.required("model")?);
    let input_path = PathBuf::from(flags.required("input")?);
    let output_path = PathBuf::from(flags.required("output")?);
    let (kind, options) = flags.backend()?;
    let mut input = io::read_inputs(&input_path)?;
    input.output_hidden_states = flags.switch("output-hidden-states");
    input.output_attentions = flags.switch("output-attentions");
    input.interpolate_pos_encoding = flags.switch("interpolate-pos-encoding");
    let mut model = ViTMSN::from_dir(&model_dir, kind, &options)?;
    let output = model.forward(&input)?;
    io::write_outputs(&output_path, &output)
}

fn bench(flags: &Flags) -> Result<()> {
    flags.check_known(&[
        "model",
        "arch",
        "batch",
        "threads",
        "isa",
        "backend",
        "precision",
        "iters",
        "json",
        "profile",
    ])?;
    let (kind, options) = flags.backend()?;
    let (mut model, name) = match (flags.get("model"), flags.get("arch")) {
        (Some(dir), None) => (
            ViTMSN::from_dir(dir.as_ref(), kind, &options)?,
            dir.to_string(),
        ),
        (None, Some(arch)) => {
            let config = bench::arch_config(arch)?;
            let backend = vitmsn::backend::create(kind, &options)?;
            (
                ViTMSN::new(config, &Weights::random(0), backend)?,
                arch.to_string(),
            )
        }
        _ => {
            return Err(Error::Usage(
                "bench takes one of --model or --arch (see vitmsn --help)".into(),
            ))
        }
    };
    let report = bench::run(
        &mut model,
        &name,
        flags.count("batch", 1)?,
        flags.count("iters", 10)?,
        flags.switch("profile"),
    )?;
    if flags.switch("json") {
        println!("{}", report.to_json());
        return Ok(());
    }
    let isa = report.isa.map_or(String::new(), |isa| format!("{isa}, "));
    println!(
        "{} on {} ({isa}{} threads), batch {}: median {:.2} ms, {:.1} images/s, {:.1} GFLOP/s over {} forwards",
        report.model, report.backend, report.threads, report.batch, report.median_ms, report.images_per_s, report.gflop_per_s, report.iters
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
