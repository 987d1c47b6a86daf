//! The GPU backend's GEMM (`Op::Linear`, with the layer's epilogue) on the model's shapes,
//! in TFLOP/s: one JSON object a line.
//!
//! For each architecture, batch and precision it times the four linear layers of an
//! encoder layer (qkv, attention output, MLP in, MLP out) at m = batch · tokens, each as
//! one graph of `repeat` copies of that Linear reading the same input (so one submission
//! holds enough work to hide its overhead), through the public `Backend` interface the
//! executor uses. The inputs are uploaded once; time is the wall clock from recording
//! the copies to reading one value back: median of `iters` after one warm-up.
//!
//! `cargo run --release --example gpu_gemm -- --arch vit-msn-base --batch 64`

use clap::Parser;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use vitmsn::internals::backend::Backend;
use vitmsn::internals::bench::arch_config;
use vitmsn::internals::graph::{ConstData, ConstRole, Constant, Graph, Op};
use vitmsn::internals::plan::Plan;
use vitmsn::Precision;
use vitmsn::{BackendKind, BackendOptions};
use vitmsn_kernels::Activation;

#[derive(Parser)]
struct Args {
    /// Architectures whose shapes to time (`vitmsn bench --arch` names).
    #[arg(long = "arch", default_values = ["vit-msn-small", "vit-msn-base"])]
    archs: Vec<String>,
    /// Images per forward (m = batch · tokens).
    #[arg(long = "batch", default_values_t = [1, 8, 64])]
    batches: Vec<usize>,
    /// f32 and/or f16 storage.
    #[arg(long = "precision", default_values = ["f32", "f16"])]
    precisions: Vec<String>,
    /// Timed submissions per shape, after one warm-up.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Work per submission, in GFLOP: the Linear is repeated to reach it (1 to 200 times).
    #[arg(long, default_value_t = 20.0)]
    gflop_per_submit: f64,
}

/// A linear layer of the encoder (all have a bias): name, n, k, activation, residual.
type Layer = (&'static str, usize, usize, Activation, bool);

fn main() {
    let args = Args::parse();
    for precision_name in &args.precisions {
        let precision: Precision = match precision_name.parse() {
            Ok(p) => p,
            Err(e) => return eprintln!("{e}"),
        };
        let options = BackendOptions {
            precision: Some(precision),
            ..Default::default()
        };
        let mut backend: Arc<dyn Backend> =
            match vitmsn::internals::backend::create(BackendKind::Gpu, &options) {
                Ok(b) => b.into(),
                Err(e) => {
                    println!(
                        "{}",
                        json!({ "precision": precision_name, "error": e.to_string() })
                    );
                    continue;
                }
            };
        for arch in &args.archs {
            let config = match arch_config(arch) {
                Ok(c) => c,
                Err(e) => return eprintln!("{e}"),
            };
            let (gh, gw) = config.grid();
            let tokens = gh * gw + 1;
            let (d, i) = (config.hidden_size, config.intermediate_size);
            let gelu = match config.activation() {
                Ok(a) => a,
                Err(e) => return eprintln!("{e}"),
            };
            let layers: [Layer; 4] = [
                ("qkv", 3 * d, d, Activation::Identity, false),
                ("attn_out", d, d, Activation::Identity, true),
                ("mlp_in", i, d, gelu, false),
                ("mlp_out", d, i, Activation::Identity, true),
            ];
            for &batch in &args.batches {
                for &(layer, n, k, activation, residual) in &layers {
                    let m = batch * tokens;
                    let line = match time_linear(
                        &mut backend,
                        (m, n, k, activation, residual),
                        args.iters,
                        args.gflop_per_submit,
                    ) {
                        Ok((repeat, median_s, min_s)) => {
                            let flop = 2.0 * (m * n * k) as f64 * repeat as f64;
                            json!({
                                "arch": arch, "batch": batch, "layer": layer,
                                "precision": precision_name, "m": m, "n": n, "k": k,
                                "repeat": repeat, "iters": args.iters,
                                "median_ms": median_s * 1e3, "min_ms": min_s * 1e3,
                                "tflop_per_s": flop / median_s / 1e12,
                                "tflop_per_s_best": flop / min_s / 1e12,
                            })
                        }
                        Err(e) => json!({
                            "arch": arch, "batch": batch, "layer": layer,
                            "precision": precision_name, "m": m, "n": n, "k": k,
                            "error": e.to_string(),
                        }),
                    };
                    println!("{line}");
                }
            }
        }
    }
}

/// Times one Linear shape; returns (repeats per submission, median s, min s).
fn time_linear(
    backend: &mut Arc<dyn Backend>,
    (m, n, k, activation, residual): (usize, usize, usize, Activation, bool),
    iters: usize,
    gflop_per_submit: f64,
) -> vitmsn::Result<(usize, f64, f64)> {
    let flop = 2.0 * (m * n * k) as f64;
    let repeat = ((gflop_per_submit * 1e9 / flop).round() as usize).clamp(1, 200);
    let values = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|j| ((j * 7919 + seed) % 255) as f32 / 255.0 - 0.5)
            .collect()
    };
    let loading = Arc::get_mut(backend).expect("no workspace outlives a shape");
    loading.load_constants(vec![
        Constant {
            name: "weight".into(),
            data: ConstData::F32(values(n * k, 1)),
            role: ConstRole::LinearWeight { n, k },
        },
        Constant {
            name: "bias".into(),
            data: ConstData::F32(values(n, 2)),
            role: ConstRole::Vector,
        },
    ])?;
    let op = Op::Linear {
        m,
        n,
        k,
        weight: 0,
        bias: Some(1),
        activation,
        residual,
    };
    let mut graph = Graph::default();
    let a = graph.input("a", m * k);
    let mut inputs = vec![a];
    if residual {
        inputs.push(graph.input("residual", m * n));
    }
    // Outputs nobody reads: the plan gives them one slot, so each copy waits for the last
    // as the layers of a forward do.
    let outputs: Vec<usize> = (0..repeat)
        .map(|_| graph.op(op.clone(), &inputs, m * n))
        .collect();
    let plan = Plan::new(&graph);
    let mut workspace = Arc::clone(backend).workspace();
    workspace.prepare(&graph, &plan)?;
    let input_data: Vec<Vec<f32>> = inputs
        .iter()
        .enumerate()
        .map(|(j, &v)| values(graph.value_sizes[v], 3 + j))
        .collect();
    let input_slots: Vec<usize> = inputs.iter().map(|&v| plan.slot_of[v]).collect();
    let last = plan.slot_of[*outputs.last().expect("repeat ≥ 1")];
    // Inputs are written once: their slots are pinned, and uploading up to 155 MB per
    // submission would time the bus, not the shader.
    for (&slot, data) in input_slots.iter().zip(&input_data) {
        workspace.write(slot, data)?;
    }
    let mut forward = || -> vitmsn::Result<f64> {
        let start = Instant::now();
        for &out in &outputs {
            workspace.run(&op, &input_slots, &[plan.slot_of[out]])?;
        }
        let result = workspace.read(&[(last, 1)])?;
        if !result[0][0].is_finite() {
            return Err(vitmsn::Error::Backend(format!(
                "non-finite output {}",
                result[0][0]
            )));
        }
        Ok(start.elapsed().as_secs_f64())
    };
    forward()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        times.push(forward()?);
    }
    times.sort_by(f64::total_cmp);
    Ok((repeat, times[times.len() / 2], times[0]))
}
