//! GEMM on ViT-MSN's shapes, one and two threads, with each layer's own epilogue, for
//! each SIMD instruction set this CPU has (AVX-512 and AVX2 rows on an AVX-512 CPU).
//! `gemm` reuses one weight matrix, warm in the caches; `gemm_cold_weights` cycles through
//! copies of it from memory, as a forward meets each layer's weights, on the best set.
//! `gemm_bf16` and `gemm_int8` are `gemm` with the weights in bf16 and int8, on each
//! set's best kernel for them (`vdpbf16ps`, `vpdpbusd` where the CPU has them).
//!
//! Throughput is counted as 2·m·n·k elements, so criterion's "elem/s" reads as FLOP/s.
//! Before each shape the FMA peak of its instruction set and thread count is benched too,
//! to read the kernel's fraction of peak against.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vitmsn_kernels::gemm::{gemm_packed, PackedWeights, WeightFormat};
use vitmsn_kernels::threads::ThreadPool;
use vitmsn_kernels::{Activation, Epilogue, Isa};

/// What follows the GEMM in the model.
#[derive(Clone, Copy)]
enum Layer {
    /// QKV projection, classifier: `+ bias`.
    Bias,
    /// Attention output and MLP down projections: `+ bias + residual`.
    BiasResidual,
    /// MLP up projection: `gelu(· + bias)`.
    BiasGelu,
}

/// (m, k, n, layer): ViT-S and ViT-B layers for one 224² image (197 tokens), ViT-B for a
/// batch of 8, ViT-B at 448² (3137 tokens) and the classifier on one CLS token.
const SHAPES: [(usize, usize, usize, Layer); 11] = [
    (197, 384, 1152, Layer::Bias),
    (197, 384, 384, Layer::BiasResidual),
    (197, 384, 1536, Layer::BiasGelu),
    (197, 1536, 384, Layer::BiasResidual),
    (197, 768, 2304, Layer::Bias),
    (197, 768, 768, Layer::BiasResidual),
    (197, 768, 3072, Layer::BiasGelu),
    (197, 3072, 768, Layer::BiasResidual),
    (1576, 768, 3072, Layer::BiasGelu),
    (3137, 768, 2304, Layer::Bias),
    (1, 384, 1000, Layer::Bias),
];

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
        .collect()
}

/// Every SIMD instruction set this CPU has, best first (or the scalar fallback).
fn isas() -> Vec<Isa> {
    let mut isas: Vec<Isa> = Isa::supported()
        .into_iter()
        .filter(|&isa| isa != Isa::Scalar)
        .collect();
    if isas.is_empty() {
        isas.push(Isa::Scalar);
    }
    isas
}

/// Weights for one shape: one packed copy, or with `cold`, enough copies (at least
/// `COLD_BYTES` in all) that each call finds its copy evicted from the caches, as every
/// layer of a forward does.
fn weight_copies(
    format: WeightFormat,
    isa: Isa,
    n: usize,
    k: usize,
    cold: bool,
) -> Vec<PackedWeights> {
    /// Three times vit-msn-small's 87 MB of weights, which a forward sweeps once each.
    const COLD_BYTES: usize = 256 << 20;
    let copies = if cold {
        COLD_BYTES.div_ceil(n * k * 4).max(2)
    } else {
        1
    };
    let w = values(n * k);
    let bf16 = vitmsn_kernels::bf16::from_f32_slice(&w);
    let (int8, scales) = vitmsn_kernels::quant::quantize_weights(n, k, &w);
    (0..copies)
        .map(|_| match format {
            WeightFormat::F32 => PackedWeights::new(isa, n, k, &w),
            WeightFormat::Bf16 => PackedWeights::from_bf16(isa, n, k, &bf16),
            WeightFormat::Int8 => PackedWeights::from_int8(isa, n, k, &int8, &scales),
        })
        .collect()
}

fn bench_shapes(
    c: &mut Criterion,
    group_name: &str,
    format: WeightFormat,
    isas: &[Isa],
    cold: bool,
) {
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    let peaks = |group: &mut _, when| {
        for (&isa, pool) in isas
            .iter()
            .flat_map(|isa| pools.iter().map(move |p| (isa, p)))
        {
            common::bench_fma_peak(group, isa, pool, when);
        }
    };
    peaks(&mut group, "first");
    for (isa, (m, k, n, layer)) in isas
        .iter()
        .flat_map(|&isa| SHAPES.map(|shape| (isa, shape)))
    {
        let weights = weight_copies(format, isa, n, k, cold);
        let kernel = weights[0].kernel_name();
        let a = values(m * k);
        let bias = values(n);
        let residual = values(m * n);
        let mut out = vec![0.0; m * n];
        let epilogue = match layer {
            Layer::Bias => Epilogue {
                bias: Some(&bias),
                activation: Activation::Identity,
                residual: None,
            },
            Layer::BiasResidual => Epilogue {
                bias: Some(&bias),
                activation: Activation::Identity,
                residual: Some(&residual),
            },
            Layer::BiasGelu => Epilogue {
                bias: Some(&bias),
                activation: Activation::Gelu,
                residual: None,
            },
        };
        for pool in &pools {
            common::bench_fma_peak(&mut group, isa, pool, &format!("{m}x{k}x{n}"));
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            let id = BenchmarkId::new(
                format!("{kernel}/{m}x{k}x{n}"),
                format!("{}t", pool.threads()),
            );
            let mut next = weights.iter().cycle();
            group.bench_function(id, |bench| {
                bench.iter(|| {
                    gemm_packed(
                        m,
                        black_box(&a),
                        next.next().expect("a cycle never ends"),
                        black_box(&mut out),
                        &epilogue,
                        pool,
                    )
                })
            });
        }
    }
    group.finish();
}

/// One weight matrix, warm in the caches from the previous call: the kernel's own speed.
fn gemm(c: &mut Criterion) {
    bench_shapes(c, "gemm", WeightFormat::F32, &isas(), false);
}

/// The weights cycled through from memory as in a forward, on the best instruction set.
fn gemm_cold_weights(c: &mut Criterion) {
    bench_shapes(
        c,
        "gemm_cold_weights",
        WeightFormat::F32,
        &isas()[..1],
        true,
    );
}

/// `gemm` with bf16 weights.
fn gemm_bf16(c: &mut Criterion) {
    bench_shapes(c, "gemm_bf16", WeightFormat::Bf16, &isas(), false);
}

/// `gemm` with int8 weights.
fn gemm_int8(c: &mut Criterion) {
    bench_shapes(c, "gemm_int8", WeightFormat::Int8, &isas(), false);
}

criterion_group!(benches, gemm, gemm_cold_weights, gemm_bf16, gemm_int8);
criterion_main!(benches);
