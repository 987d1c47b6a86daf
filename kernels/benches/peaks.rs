//! Every peak this machine has for the kernels, on one and two threads: the f32 FMA peak
//! of each SIMD instruction set, and the dot products the reduced-precision kernels run
//! (bf16 `vdpbf16ps`, int8 `vpdpbusd`, and the AVX2 int8 path's `vpmaddwd`+`vpaddd`).
//! Throughput is in operations, 2 per FMA lane or per product, so criterion's "elem/s"
//! reads as FLOP/s (or int8 OP/s). `cargo bench -p vitmsn-kernels --bench peaks`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use vitmsn_kernels::peak::Dot;
use vitmsn_kernels::threads::ThreadPool;
use vitmsn_kernels::Isa;

fn bench_peaks(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    group.sample_size(10);
    for pool in [ThreadPool::new(1), ThreadPool::new(2)] {
        for isa in Isa::supported() {
            if isa != Isa::Scalar {
                common::bench_fma_peak(&mut group, isa, &pool, "alone");
            }
        }
        for dot in Dot::ALL {
            if !common::bench_dot_peak(&mut group, dot, &pool, "alone") {
                eprintln!("{}: not on this CPU, skipped", dot.name());
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_peaks);
criterion_main!(benches);
