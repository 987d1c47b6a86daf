//! The activations over one MLP hidden tensor of ViT-S (197 tokens × 1536, plus a few so
//! that the masked tail runs), one thread, for each SIMD instruction set this CPU has: the
//! functions that the GEMM epilogue applies in registers, benched alone.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vitmsn_kernels::activation::activation_inplace;
use vitmsn_kernels::{Activation, Isa};

/// One of each family: erf, tanh (through expm1), sigmoid (exp), expm1 with a select,
/// exp with a select, and a plain max.
const ACTIVATIONS: [Activation; 6] = [
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Silu,
    Activation::Selu,
    Activation::Mish,
    Activation::Relu,
];

fn bench_activations(c: &mut Criterion) {
    let mut group = c.benchmark_group("activation");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let len = 197 * 1536 + 5;
    let x: Vec<f32> = (0..len)
        .map(|i| (i * 7919 % 2000) as f32 / 250.0 - 4.0)
        .collect();
    let mut work = x.clone();
    group.throughput(Throughput::Elements(len as u64));
    let isas = Isa::supported()
        .into_iter()
        .filter(|&isa| matches!(isa, Isa::Avx512 | Isa::Avx2Fma));
    for isa in isas {
        for act in ACTIVATIONS {
            let id = BenchmarkId::new(format!("{act:?}"), isa.name());
            group.bench_function(id, |b| {
                b.iter(|| {
                    work.copy_from_slice(&x);
                    activation_inplace(isa, act, black_box(&mut work));
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_activations);
criterion_main!(benches);
