//! What the benches share: this machine's FMA peak and its reduced-precision dot-product
//! peaks, benched beside the kernels.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use vitmsn_kernels::peak::{dot_chains, fma_chains, Dot};
use vitmsn_kernels::threads::ThreadPool;
use vitmsn_kernels::Isa;

/// Steps of each chain per iteration: a few milliseconds.
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
    let id = BenchmarkId::new(
        format!("fma_peak/{isa:?}/{before}"),
        format!("{}t", pool.threads()),
    );
    bench_peak(group, id, flops, || fma_chains(isa, pool, PEAK_STEPS));
}

/// Benches `dot`'s peak on `pool` as `dot_peak/{dot}/{before}/{threads}t`, as
/// [`bench_fma_peak`] does the FMA's, counting 2 operations per product; skips it (and
/// returns false) where the CPU lacks `dot`.
#[allow(
    dead_code,
    reason = "the peaks bench uses it; the f32 kernel benches include this module too"
)]
pub fn bench_dot_peak(
    group: &mut BenchmarkGroup<WallTime>,
    dot: Dot,
    pool: &ThreadPool,
    before: &str,
) -> bool {
    let Some(ops) = dot_chains(dot, pool, PEAK_STEPS) else {
        return false;
    };
    let id = BenchmarkId::new(
        format!("dot_peak/{}/{before}", dot.name()),
        format!("{}t", pool.threads()),
    );
    bench_peak(group, id, ops, || dot_chains(dot, pool, PEAK_STEPS));
    true
}

/// Benches `run`, which does `ops` operations, briefly, then puts the group back to
/// criterion's default timing.
fn bench_peak<R>(
    group: &mut BenchmarkGroup<WallTime>,
    id: BenchmarkId,
    ops: u64,
    run: impl Fn() -> R,
) {
    group
        .throughput(Throughput::Elements(ops))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    group.bench_function(id, |b| b.iter(&run));
    group
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(5));
}
