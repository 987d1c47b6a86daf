//! Fused attention at ViTMSN's sequence lengths, and LayerNorm at its widths, on 1 and 2
//! threads. Attention throughput counts `4·T²·d·H` flops (its two matrix products), so
//! criterion's "elem/s" read as flop/s; LayerNorm's counts the bytes read and written.
//! Before each attention bench the FMA peak of its instruction set and thread count is
//! benched too, to read its fraction of peak against.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use vitmsn_kernels::attention::{attention, AttentionScratch};
use vitmsn_kernels::norm::layer_norm;
use vitmsn_kernels::threads::ThreadPool;
use vitmsn_kernels::{AttentionShape, Isa};

/// Deterministic inputs in `[-1, 1)`.
fn inputs(len: usize) -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Every SIMD instruction set this CPU runs (the reference is far too slow to bench here),
/// so that one run compares them on the same machine state.
fn simd_isas() -> Vec<Isa> {
    Isa::supported()
        .into_iter()
        .filter(|&isa| isa != Isa::Scalar)
        .collect()
}

fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_flops");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5));
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for (tokens, heads, head_dim) in [(197, 6, 64), (197, 12, 64), (1025, 16, 64), (3137, 12, 64)] {
        let shape = AttentionShape {
            batch: 1,
            tokens,
            heads,
            head_dim,
        };
        let hidden = heads * head_dim;
        let qkv = inputs(tokens * 3 * hidden);
        let head_scale = vec![1.0; heads];
        let mut context = vec![0.0; tokens * hidden];
        for (isa, pool) in simd_isas()
            .into_iter()
            .flat_map(|isa| pools.iter().map(move |p| (isa, p)))
        {
            let name = format!("T{tokens}_H{heads}_d{head_dim}");
            common::bench_fma_peak(&mut group, isa, pool, &name);
            group.throughput(Throughput::Elements(
                (4 * tokens * tokens * head_dim * heads) as u64,
            ));
            let threads = pool.threads();
            let mut scratch = AttentionScratch::new(shape, threads);
            let id = BenchmarkId::new(name, format!("{isa:?}/{threads}t"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    attention(
                        isa,
                        shape,
                        black_box(&qkv),
                        &head_scale,
                        &mut context,
                        None,
                        pool,
                        &mut scratch,
                    )
                })
            });
        }
    }
    group.finish();
}

fn bench_layer_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer_norm_bytes");
    for (rows, dim) in [(197, 768), (197 * 8, 768), (1025, 1024)] {
        let x = inputs(rows * dim);
        let (gamma, beta) = (inputs(dim), inputs(dim));
        let mut out = vec![0.0; rows * dim];
        group.throughput(Throughput::Bytes(
            (2 * rows * dim * size_of::<f32>()) as u64,
        ));
        for (isa, threads) in simd_isas().into_iter().flat_map(|i| [(i, 1), (i, 2)]) {
            let pool = ThreadPool::new(threads);
            group.bench_function(
                BenchmarkId::new(format!("{rows}x{dim}"), format!("{isa:?}/{threads}t")),
                |b| {
                    b.iter(|| {
                        layer_norm(
                            isa,
                            dim,
                            black_box(&x),
                            &gamma,
                            &beta,
                            1e-12,
                            &mut out,
                            &pool,
                        )
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_attention, bench_layer_norm);
criterion_main!(benches);
