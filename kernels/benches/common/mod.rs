//! What the benches share: this machine's FMA peak, benched beside the kernels.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use vitmsn_kernels::peak::fma_chains;
use vitmsn_kernels::threads::ThreadPool;
use vitmsn_kernels::Isa;

/// Steps of each FMA chain per iteration: a few milliseconds.
const PEAK_STEPS: usize = 1 << 20;

/// Benches `isa`'s FMA peak on `pool` as `fma_peak/{isa}/{when}/{threads}t`. Benched
/// first and last in a group, it brackets the speed of a shared machine, which drifts,
/// over the kernels benched between: read their fraction of peak against it.
pub fn bench_fma_peak(
    group: &mut BenchmarkGroup<WallTime>,
    isa: Isa,
    pool: &ThreadPool,
    when: &str,
) {
    let flops = fma_chains(isa, pool, PEAK_STEPS);
    group.throughput(Throughput::Elements(flops));
    let id = BenchmarkId::new(
        format!("fma_peak/{isa:?}/{when}"),
        format!("{}t", pool.threads()),
    );
    group.bench_function(id, |b| b.iter(|| fma_chains(isa, pool, PEAK_STEPS)));
}
