//! What the benches share: this machine's FMA peak, benched beside the kernels.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use vitmsn_kernels::peak::fma_chains;
use vitmsn_kernels::threads::ThreadPool;
use vitmsn_kernels::Isa;

/// Steps of each FMA chain per iteration: a few milliseconds.
const PEAK_STEPS: usize = 1 << 20;

/// Benches `isa`'s FMA peak on `pool` as `fma_peak/{isa}/{before}/{threads}t`, briefly,
/// right before the kernel bench `before`: a shared machine's speed drifts by 10–20 %
/// within minutes, so each kernel's fraction of peak is read against the peak measured
/// beside it. Leaves the group at criterion's default timing (3 s warm-up, 5 s
/// measurement), which the kernel benches use.
pub fn bench_fma_peak(
    group: &mut BenchmarkGroup<WallTime>,
    isa: Isa,
    pool: &ThreadPool,
    before: &str,
) {
    let flops = fma_chains(isa, pool, PEAK_STEPS);
    group
        .throughput(Throughput::Elements(flops))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    let id = BenchmarkId::new(
        format!("fma_peak/{isa:?}/{before}"),
        format!("{}t", pool.threads()),
    );
    group.bench_function(id, |b| b.iter(|| fma_chains(isa, pool, PEAK_STEPS)));
    group
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(5));
}
