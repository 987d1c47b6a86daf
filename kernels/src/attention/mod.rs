//! Fused multi-head attention: scores, softmax and the weighted sum of values in one sweep
//! over blocks of keys (flash attention's online softmax), so the `tokens × tokens` score
//! matrix is only ever written when the caller asks for the probabilities.
//!
//! A task takes one head of one image (or, when heads are too few to keep the threads
//! evenly busy, a block of its query rows), packs that head's keys and values itself, and
//! works through its query rows one register tile at a time, so the packed head is read
//! from the cache of the core that wrote it. Every query row is computed the same way
//! whichever task or thread runs it, so results never depend on the thread count.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod tiles;

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use crate::aligned::AlignedVec;
#[cfg(target_arch = "aarch64")]
use crate::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::threads::{DisjointMut, ThreadPool};
use crate::{scalar, AttentionShape, Isa};
use tiles::tile_kernels;

// The register tiles of each instruction set.
// AVX-512: 12 query rows × 32 keys or value columns, two 16-lane vectors a row; 24 of the
// 32 registers hold accumulators.
#[cfg(target_arch = "x86_64")]
tile_kernels!(
    Avx512Tiles, Avx512, Isa::Avx512, "avx512f,avx2,fma", rows: 12, vectors: 2,
    transpose_keys: avx512::transpose_keys
);
// AVX2: 6 rows × 16, two 8-lane vectors a row; 12 of the 16 registers accumulate.
#[cfg(target_arch = "x86_64")]
tile_kernels!(Avx2Tiles, Avx2, Isa::Avx2Fma, "avx2,fma", rows: 6, vectors: 2);
// NEON: the AVX2 tile in 4-lane vectors; 24 of the 32 registers accumulate.
#[cfg(target_arch = "aarch64")]
tile_kernels!(NeonTiles, Neon, Isa::Neon, "neon", rows: 6, vectors: 4);

/// Upper bound on [`Kernels::TILE_ROWS`].
const MAX_TILE_ROWS: usize = 16;
/// Upper bounds on [`Kernels::PANEL_KEYS`] and [`Kernels::TILE_COLS`], for scratch sized
/// before the instruction set is known.
const MAX_PANEL_KEYS: usize = 32;
const MAX_TILE_COLS: usize = 32;
/// Keys per online-softmax step. One tile's scores for them (at most 16 KiB) stay in L1
/// while they become probabilities and meet the values, and sequences this short (ViT's
/// 197 tokens) take a single step, with nothing to rescale. A multiple of every
/// [`Kernels::PANEL_KEYS`].
const BLOCK_KEYS: usize = 256;
/// A split of heads into row blocks is kept once the busiest thread has at most this
/// much more than an even share (in eighths); each extra block repacks its head.
const MAX_IMBALANCE_EIGHTHS: usize = 9;

/// Reusable buffers of [`attention`], one set for each pool thread: a packed head and the
/// buffers of one register tile. It grows to the largest shape and thread count it has
/// seen, so after the first call nothing is allocated.
#[derive(Default)]
pub struct AttentionScratch {
    tasks: Vec<Mutex<TaskScratch>>,
}

impl AttentionScratch {
    /// Scratch large enough for `shape` on a pool of `threads` threads.
    pub fn new(shape: AttentionShape, threads: usize) -> Self {
        let mut scratch = Self::default();
        scratch.reserve(shape, threads);
        scratch
    }

    fn reserve(&mut self, shape: AttentionShape, threads: usize) {
        self.reserve_for(shape, threads, MAX_PANEL_KEYS, MAX_TILE_COLS);
    }

    /// Scratch for `shape` on `threads` threads, packed in panels of `panel_keys` keys and
    /// values padded to a multiple of `tile_cols`.
    fn reserve_for(
        &mut self,
        shape: AttentionShape,
        threads: usize,
        panel_keys: usize,
        tile_cols: usize,
    ) {
        if self.tasks.len() < threads {
            self.tasks.resize_with(threads, Default::default);
        }
        let layout = PackedHead::new(shape, panel_keys, tile_cols);
        for task in &mut self.tasks {
            task.get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(layout);
        }
    }

    /// A task scratch no other task holds; there is one per pool thread.
    fn free_task(&self) -> MutexGuard<'_, TaskScratch> {
        self.tasks
            .iter()
            .find_map(|t| t.try_lock().ok())
            .expect("a task scratch per pool thread")
    }
}

/// Buffers of one task.
#[derive(Default)]
struct TaskScratch {
    /// The task's head, packed as [`PackedHead`] describes.
    packed: AlignedVec,
    tile: TileScratch,
}

impl TaskScratch {
    fn reserve(&mut self, layout: PackedHead) {
        self.packed.reserve_len(layout.len());
        self.tile.reserve(layout.padded_dim);
    }
}

/// Buffers of one register tile of query rows.
#[derive(Default)]
struct TileScratch {
    /// Scores, then probabilities, of the current key block: `[rows][BLOCK_KEYS]`.
    scores: AlignedVec,
    /// Context rows, unnormalised: `[rows][padded_dim]`; each is scaled into the output
    /// after the last key block.
    context: AlignedVec,
    /// Running maximum score of each row.
    row_max: AlignedVec,
    /// Running sum of `exp(score − row_max)` of each row.
    row_sum: AlignedVec,
    /// What the current key block multiplies each context row by as its maximum rises.
    rescale: AlignedVec,
}

impl TileScratch {
    fn reserve(&mut self, padded_dim: usize) {
        self.scores.reserve_len(MAX_TILE_ROWS * BLOCK_KEYS);
        self.context.reserve_len(MAX_TILE_ROWS * padded_dim);
        self.row_max.reserve_len(MAX_TILE_ROWS);
        self.row_sum.reserve_len(MAX_TILE_ROWS);
        self.rescale.reserve_len(MAX_TILE_ROWS);
    }
}

/// How one head's keys and values are packed: keys in panels of `panel_keys` keys stored
/// `[head_dim][panel_keys]` (zero past the last key), then values in column tiles of
/// `tile_cols`, `[padded_dim / tile_cols][tokens][tile_cols]` (zero past `head_dim`), so
/// each context tile streams one contiguous run of memory rather than a slice of every
/// value row. The kernels set the panel width and the tile width
/// ([`Kernels::PANEL_KEYS`], [`Kernels::TILE_COLS`]).
#[derive(Clone, Copy)]
struct PackedHead {
    tokens: usize,
    head_dim: usize,
    panel_keys: usize,
    tile_cols: usize,
    padded_dim: usize,
}

impl PackedHead {
    fn new(shape: AttentionShape, panel_keys: usize, tile_cols: usize) -> Self {
        Self {
            tokens: shape.tokens,
            head_dim: shape.head_dim,
            panel_keys,
            tile_cols,
            padded_dim: shape.head_dim.next_multiple_of(tile_cols),
        }
    }

    fn keys_len(&self) -> usize {
        self.tokens.next_multiple_of(self.panel_keys) * self.head_dim
    }

    fn len(&self) -> usize {
        self.keys_len() + self.tokens * self.padded_dim
    }

    /// Packs head `head` of one image's `[tokens, 3·hidden]` qkv rows into `dst`.
    ///
    /// # Safety
    /// The CPU must support `K`'s instruction set.
    unsafe fn pack<K: Kernels>(&self, image: &[f32], head: usize, hidden: usize, dst: &mut [f32]) {
        let (d, pk) = (self.head_dim, self.panel_keys);
        let (keys, values) = dst[..self.len()].split_at_mut(self.keys_len());
        keys[(self.tokens / pk) * pk * d..].fill(0.0);
        let rows = &image[..self.tokens * 3 * hidden];
        for (panel, first) in keys
            .chunks_exact_mut(pk * d)
            .zip((0..self.tokens).step_by(pk))
        {
            let count = pk.min(self.tokens - first);
            let start = first * 3 * hidden + hidden + head * d;
            // SAFETY: the caller guarantees K's instruction set.
            unsafe { K::transpose_keys(&rows[start..], 3 * hidden, count, panel) };
        }
        let tc = self.tile_cols;
        for (slab, first_col) in values
            .chunks_exact_mut(self.tokens * tc)
            .zip((0..d).step_by(tc))
        {
            let cols = tc.min(d - first_col);
            for (value, row) in slab.chunks_exact_mut(tc).zip(rows.chunks_exact(3 * hidden)) {
                value[..cols].copy_from_slice(&row[2 * hidden + head * d + first_col..][..cols]);
                value[cols..].fill(0.0);
            }
        }
    }
}

/// What a task needs of one head.
struct HeadView<'a> {
    /// The image's rows of the fused qkv tensor.
    image: &'a [f32],
    row_stride: usize,
    /// First column of this head's queries in a row.
    query_col: usize,
    /// Packed as [`PackedHead`] describes.
    keys: &'a [f32],
    values: &'a [f32],
    tokens: usize,
    head_dim: usize,
    panel_keys: usize,
    tile_cols: usize,
    padded_dim: usize,
    /// `1/√head_dim`.
    score_scale: f32,
    /// The `head_scale` entry of this head.
    head_scale: f32,
}

impl HeadView<'_> {
    /// The query rows of the tile `rows` (take the first `TILE_ROWS`); rows at or past its
    /// end repeat its last row, so a tile always reads valid queries.
    fn tile_queries(&self, rows: &Range<usize>) -> [&[f32]; MAX_TILE_ROWS] {
        std::array::from_fn(|r| {
            let row = (rows.start + r).min(rows.end - 1);
            &self.image[row * self.row_stride + self.query_col..][..self.head_dim]
        })
    }

    /// Packed keys `panel·panel_keys..` as `[head_dim][panel_keys]`.
    fn key_panel(&self, panel: usize) -> &[f32] {
        let len = self.panel_keys * self.head_dim;
        &self.keys[panel * len..][..len]
    }

    /// Packed values of column tile `tile` from key `first_key` on, `tile_cols` a key.
    fn value_tile(&self, tile: usize, first_key: usize) -> &[f32] {
        &self.values[(tile * self.tokens + first_key) * self.tile_cols..]
    }
}

/// How the query rows are cut into tasks: each head of each image into `count` blocks of
/// `rows` rows, whole register tiles each. One block a head when there are heads enough
/// for the threads; more only as far as needed to spread the tasks evenly.
#[derive(Clone, Copy)]
struct TaskSplit {
    tokens: usize,
    rows: usize,
    count: usize,
}

impl TaskSplit {
    fn new(heads: usize, tokens: usize, tile_rows: usize, threads: usize) -> Self {
        let tiles = tokens.div_ceil(tile_rows);
        // Eighths of an even share that the busiest thread gets from `tasks` equal tasks.
        let load = |tasks: usize| tasks.div_ceil(threads) * threads * 8 / tasks;
        let mut blocks = 1;
        while blocks < tiles && load(heads * blocks) > MAX_IMBALANCE_EIGHTHS {
            blocks += 1;
        }
        let rows = tiles.div_ceil(blocks) * tile_rows;
        Self {
            tokens,
            rows,
            count: tokens.div_ceil(rows),
        }
    }

    fn range(&self, block: usize) -> Range<usize> {
        block * self.rows..((block + 1) * self.rows).min(self.tokens)
    }
}

/// The register-level kernels of one instruction set, under the blocked algorithm that
/// all share. The tile sizes are the implementation's, and with them the packed layout.
///
/// The methods are `unsafe` only because they use instructions the CPU may lack: callers
/// must have checked that it supports the implementing instruction set. Each checks the
/// bounds it relies on.
trait Kernels {
    /// Query rows of one register tile; at most `MAX_TILE_ROWS`.
    const TILE_ROWS: usize;
    /// Keys per packed key panel, the width of one score tile; at most `MAX_PANEL_KEYS`
    /// and a divisor of `BLOCK_KEYS`.
    const PANEL_KEYS: usize;
    /// Value columns per context tile; packed values are padded to a multiple of it. At
    /// most `MAX_TILE_COLS`.
    const TILE_COLS: usize;

    /// `out[r][j] = scale · (queries[r] · key j)` for the `PANEL_KEYS` keys of a packed
    /// `panel` (`[head_dim][PANEL_KEYS]`), stored for the first `rows` rows and `cols`
    /// keys, rows `stride` apart. `queries` holds `TILE_ROWS` rows.
    unsafe fn score_tile(
        queries: &[&[f32]],
        panel: &[f32],
        scale: f32,
        out: &mut [f32],
        stride: usize,
        rows: usize,
        cols: usize,
    );

    /// `acc[r][..n] = acc[r][..n] · rescale[r] + Σ_j weights[r][j] · values[j][..n]`
    /// (n = `TILE_COLS`) for the `TILE_ROWS` rows of `weights` and `rescale`, value rows
    /// `value_stride` apart, accumulator rows `acc_stride`. Without `rescale` the sums
    /// start from zero and `acc` is only written.
    unsafe fn context_tile(
        weights: &[&[f32]],
        values: &[f32],
        value_stride: usize,
        acc: &mut [f32],
        acc_stride: usize,
        rescale: Option<&[f32]>,
    );

    /// Writes `count` keys transposed into a key panel `[head_dim][PANEL_KEYS]`
    /// (`head_dim = panel.len() / PANEL_KEYS`): key `j` is `keys[j·stride..][..head_dim]`,
    /// and its value `c` goes to `panel[c·PANEL_KEYS + j]`. Columns past `count` are left
    /// as they are.
    unsafe fn transpose_keys(keys: &[f32], stride: usize, count: usize, panel: &mut [f32]) {
        let head_dim = panel.len() / Self::PANEL_KEYS;
        for j in 0..count {
            let key = &keys[j * stride..][..head_dim];
            for (c, &k) in key.iter().enumerate() {
                panel[c * Self::PANEL_KEYS + j] = k;
            }
        }
    }

    /// The largest element of `row` (−∞ when empty).
    unsafe fn max(row: &[f32]) -> f32;

    /// Replaces each `x` of `row` by `exp(x − shift)` and returns their sum; `shift` must
    /// be at least every `x` (the row maximum), as the softmax's cheaper exp assumes.
    unsafe fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32;

    /// Multiplies `row` by `factor`.
    unsafe fn scale(row: &mut [f32], factor: f32);

    /// `dst = src · factor`; both the same length.
    unsafe fn scale_into(src: &[f32], dst: &mut [f32], factor: f32);
}

/// Online-softmax attention of the query rows `rows` (one tile, at most `TILE_ROWS`) of
/// one head; writes each row `i`'s context to `out(i)`.
///
/// # Safety
/// The CPU must support `K`'s instruction set.
unsafe fn attend_online<'o, K: Kernels>(
    head: &HeadView,
    rows: Range<usize>,
    tile: &mut TileScratch,
    out: impl Fn(usize) -> &'o mut [f32],
) {
    let (tr, pk) = (K::TILE_ROWS, K::PANEL_KEYS);
    let dp = head.padded_dim;
    let TileScratch {
        scores,
        context,
        row_max,
        row_sum,
        rescale,
    } = tile;
    row_max[..tr].fill(f32::NEG_INFINITY);
    row_sum[..tr].fill(0.0);
    let queries = head.tile_queries(&rows);

    for first_key in (0..head.tokens).step_by(BLOCK_KEYS) {
        let keys = BLOCK_KEYS.min(head.tokens - first_key);
        for p in 0..keys.div_ceil(pk) {
            K::score_tile(
                &queries[..tr],
                head.key_panel(first_key / pk + p),
                head.score_scale,
                &mut scores[p * pk..],
                BLOCK_KEYS,
                tr,
                pk,
            );
        }
        // All the maxima first, then all the exps: no row's exp waits on its own maximum.
        for r in 0..tr {
            let new_max = row_max[r].max(K::max(&scores[r * BLOCK_KEYS..][..keys]));
            // Past the first blocks the maximum rarely rises: skip the exp then.
            rescale[r] = if new_max == row_max[r] {
                1.0
            } else {
                (row_max[r] - new_max).exp()
            };
            row_max[r] = new_max;
        }
        for r in 0..tr {
            let row = &mut scores[r * BLOCK_KEYS..][..keys];
            row_sum[r] = row_sum[r] * rescale[r] + K::exp_shifted_in_place(row, row_max[r]);
        }
        let weights: [&[f32]; MAX_TILE_ROWS] =
            std::array::from_fn(|r| &scores[r.min(tr - 1) * BLOCK_KEYS..][..keys]);
        for (tile, c) in (0..dp).step_by(K::TILE_COLS).enumerate() {
            K::context_tile(
                &weights[..tr],
                head.value_tile(tile, first_key),
                K::TILE_COLS,
                &mut context[c..],
                dp,
                (first_key > 0).then_some(&rescale[..tr]),
            );
        }
    }
    for (r, i) in rows.enumerate() {
        K::scale_into(
            &context[r * dp..][..head.head_dim],
            out(i),
            head.head_scale / row_sum[r],
        );
    }
}

/// Attention of the query rows `rows` (one tile, at most `TILE_ROWS`) of one head that
/// also writes their probabilities to `probs` (`[rows.len()][tokens]`), by an exact
/// two-pass softmax over whole rows; writes each row `i`'s context to `out(i)`.
///
/// # Safety
/// The CPU must support `K`'s instruction set.
unsafe fn attend_with_probs<'o, K: Kernels>(
    head: &HeadView,
    rows: Range<usize>,
    tile: &mut TileScratch,
    probs: &mut [f32],
    out: impl Fn(usize) -> &'o mut [f32],
) {
    let (tr, pk) = (K::TILE_ROWS, K::PANEL_KEYS);
    let tokens = head.tokens;
    let dp = head.padded_dim;
    let context = &mut tile.context[..tr * dp];
    let queries = head.tile_queries(&rows);

    for p in 0..tokens.div_ceil(pk) {
        K::score_tile(
            &queries[..tr],
            head.key_panel(p),
            head.score_scale,
            &mut probs[p * pk..],
            tokens,
            rows.len(),
            pk.min(tokens - p * pk),
        );
    }
    for row in probs.chunks_exact_mut(tokens) {
        let sum = K::exp_shifted_in_place(row, K::max(row));
        K::scale(row, head.head_scale / sum);
    }
    let probs = &*probs;
    let last = rows.len() - 1;
    let weights: [&[f32]; MAX_TILE_ROWS] =
        std::array::from_fn(|r| &probs[r.min(last) * tokens..][..tokens]);
    for (tile, c) in (0..dp).step_by(K::TILE_COLS).enumerate() {
        K::context_tile(
            &weights[..tr],
            head.value_tile(tile, 0),
            K::TILE_COLS,
            &mut context[c..],
            dp,
            None,
        );
    }
    for (r, i) in rows.enumerate() {
        out(i).copy_from_slice(&context[r * dp..][..head.head_dim]);
    }
}

/// Multi-head self-attention with the semantics of [`scalar::attention`]: fused `qkv` rows
/// `[q | k | v]`, `context` `[batch, tokens, hidden]`, optional `probs`
/// `[batch, heads, tokens, tokens]` after the head scale. Heads whose scale is 0 are skipped
/// and get zero context and probabilities.
///
/// Runs on `pool` with `isa`'s kernels; `Isa::Scalar` runs the reference on the calling
/// thread instead. Panics if the CPU lacks `isa`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: Isa,
    shape: AttentionShape,
    qkv: &[f32],
    head_scale: &[f32],
    context: &mut [f32],
    probs: Option<&mut [f32]>,
    pool: &ThreadPool,
    scratch: &mut AttentionScratch,
) {
    let AttentionShape {
        batch,
        tokens,
        heads,
        head_dim,
    } = shape;
    let hidden = heads * head_dim;
    assert!(qkv.len() >= batch * tokens * 3 * hidden, "qkv too short");
    assert!(
        context.len() >= batch * tokens * hidden,
        "context too short"
    );
    assert!(head_scale.len() >= heads, "head_scale too short");
    if let Some(probs) = &probs {
        assert!(
            probs.len() >= batch * heads * tokens * tokens,
            "probs too short"
        );
    }
    assert!(isa.is_supported(), "this CPU lacks {isa:?}");
    match isa {
        // SAFETY (all three): checked above that the CPU supports `isa`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            blocked_attention::<Avx512Tiles>(shape, qkv, head_scale, context, probs, pool, scratch)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe {
            blocked_attention::<Avx2Tiles>(shape, qkv, head_scale, context, probs, pool, scratch)
        },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe {
            blocked_attention::<NeonTiles>(shape, qkv, head_scale, context, probs, pool, scratch)
        },
        _ => {
            crate::dispatch::record(crate::dispatch::Kernel::Attention, Isa::Scalar);
            scalar::attention(shape, qkv, head_scale, context, probs)
        }
    }
}

/// [`attention`] on `K`'s kernels.
///
/// # Safety
/// The CPU must support `K`'s instruction set.
unsafe fn blocked_attention<K: Kernels>(
    shape: AttentionShape,
    qkv: &[f32],
    head_scale: &[f32],
    context: &mut [f32],
    probs: Option<&mut [f32]>,
    pool: &ThreadPool,
    scratch: &mut AttentionScratch,
) {
    let AttentionShape {
        batch,
        tokens,
        heads,
        head_dim,
    } = shape;
    if batch * tokens * heads * head_dim == 0 {
        return;
    }
    let hidden = heads * head_dim;
    let image_len = tokens * 3 * hidden;
    const {
        assert!(K::TILE_ROWS <= MAX_TILE_ROWS);
        assert!(K::PANEL_KEYS <= MAX_PANEL_KEYS && BLOCK_KEYS.is_multiple_of(K::PANEL_KEYS));
        assert!(K::TILE_COLS <= MAX_TILE_COLS);
    };
    let layout = PackedHead::new(shape, K::PANEL_KEYS, K::TILE_COLS);
    scratch.reserve_for(shape, pool.threads(), K::PANEL_KEYS, K::TILE_COLS);

    let scratch = &*scratch;
    let split = TaskSplit::new(batch * heads, tokens, K::TILE_ROWS, pool.threads());
    let context = DisjointMut::new(context);
    let probs = probs.map(DisjointMut::new);
    pool.run(batch * heads * split.count, &|task| {
        let (image_head, block) = (task / split.count, task % split.count);
        let (b, h) = (image_head / heads, image_head % heads);
        let rows = split.range(block);
        let context_row = |i: usize| {
            // SAFETY: a task alone owns its head's columns of its query rows, and holds one
            // row at a time.
            unsafe { context.piece((b * tokens + i) * hidden + h * head_dim, head_dim) }
        };
        let probs_rows = |rows: &Range<usize>| {
            // SAFETY: a task alone owns these rows of its head's probabilities, and holds
            // one tile of them at a time.
            probs.as_ref().map(|p| unsafe {
                p.piece(
                    (image_head * tokens + rows.start) * tokens,
                    rows.len() * tokens,
                )
            })
        };
        if head_scale[h] == 0.0 {
            rows.clone().for_each(|i| context_row(i).fill(0.0));
            if let Some(p) = probs_rows(&rows) {
                p.fill(0.0);
            }
            return;
        }
        let image = &qkv[b * image_len..][..image_len];
        let mut task_scratch = scratch.free_task();
        let TaskScratch { packed, tile } = &mut *task_scratch;
        // SAFETY: the caller guarantees that the CPU supports K's instruction set.
        unsafe { layout.pack::<K>(image, h, hidden, packed) };
        let (keys, values) = packed[..layout.len()].split_at(layout.keys_len());
        let head = HeadView {
            image,
            row_stride: 3 * hidden,
            query_col: h * head_dim,
            keys,
            values,
            tokens,
            head_dim,
            panel_keys: layout.panel_keys,
            tile_cols: layout.tile_cols,
            padded_dim: layout.padded_dim,
            score_scale: 1.0 / (head_dim as f32).sqrt(),
            head_scale: head_scale[h],
        };
        for first in rows.clone().step_by(K::TILE_ROWS) {
            let tile_rows = first..rows.end.min(first + K::TILE_ROWS);
            // SAFETY: the caller guarantees that the CPU supports K's instruction set.
            unsafe {
                match probs_rows(&tile_rows) {
                    Some(p) => attend_with_probs::<K>(&head, tile_rows, tile, p, context_row),
                    None => attend_online::<K>(&head, tile_rows, tile, context_row),
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inputs drawn uniformly from `[-spread, spread]` by a small deterministic generator.
    fn values(len: usize, seed: u64, spread: f32) -> Vec<f32> {
        crate::rng::Rng::values(seed, len, spread)
    }

    fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
        let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-5 * scale,
                "{what}[{i}]: {a} vs {e} (scale {scale})"
            );
        }
    }

    /// Runs both versions and compares context and, when `with_probs`, probabilities.
    fn check(
        shape: AttentionShape,
        head_scale: &[f32],
        spread: f32,
        seed: u64,
        with_probs: bool,
        threads: usize,
    ) {
        let AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
        } = shape;
        let qkv = values(batch * tokens * 3 * heads * head_dim, seed, spread);
        let context_len = batch * tokens * heads * head_dim;
        let probs_len = batch * heads * tokens * tokens;
        let (mut expected, mut expected_probs) = (vec![0.0; context_len], vec![0.0; probs_len]);
        scalar::attention(
            shape,
            &qkv,
            head_scale,
            &mut expected,
            Some(&mut expected_probs),
        );
        let pool = ThreadPool::new(threads);
        for isa in crate::tested_isas() {
            let (mut actual, mut actual_probs) =
                (vec![f32::NAN; context_len], vec![f32::NAN; probs_len]);
            let mut scratch = AttentionScratch::default();
            let probs = with_probs.then_some(&mut actual_probs[..]);
            attention(
                isa,
                shape,
                &qkv,
                head_scale,
                &mut actual,
                probs,
                &pool,
                &mut scratch,
            );
            assert_close(&actual, &expected, &format!("{isa:?} context"));
            if with_probs {
                assert_close(&actual_probs, &expected_probs, &format!("{isa:?} probs"));
            }
        }
    }

    /// `TILE_ROWS, PANEL_KEYS, TILE_COLS` of every tile set compiled here, whether or not
    /// this CPU runs it: each set's edges are tested on every set that runs.
    fn tile_sizes() -> Vec<[usize; 3]> {
        fn of<K: Kernels>() -> [usize; 3] {
            [K::TILE_ROWS, K::PANEL_KEYS, K::TILE_COLS]
        }
        vec![
            #[cfg(target_arch = "x86_64")]
            of::<Avx2Tiles>(),
            #[cfg(target_arch = "x86_64")]
            of::<Avx512Tiles>(),
            #[cfg(target_arch = "aarch64")]
            of::<NeonTiles>(),
        ]
    }

    /// One below, at and one above `block`, and two blocks and a tail.
    fn edges(block: usize) -> [usize; 4] {
        [block - 1, block, block + 1, 2 * block + 3]
    }

    /// Token counts at the edges of the query tiles, the key panels and the online
    /// softmax's key block.
    fn token_edges() -> Vec<usize> {
        let mut blocks: Vec<usize> = tile_sizes().iter().flat_map(|t| [t[0], t[1]]).collect();
        blocks.push(BLOCK_KEYS);
        blocks.sort_unstable();
        blocks.dedup();
        blocks.into_iter().flat_map(edges).collect()
    }

    /// Head sizes at the edges of the value tiles and of every vector width.
    fn head_dim_edges() -> Vec<usize> {
        let mut blocks: Vec<usize> = tile_sizes().iter().map(|t| t[2]).collect();
        blocks.extend([4, 8, 16]);
        blocks.sort_unstable();
        blocks.dedup();
        blocks.into_iter().flat_map(edges).collect()
    }

    /// Every blocking edge, with and without probabilities (which take the two-pass path
    /// over whole rows), the same cases every run: the online softmax's key block (255,
    /// 256, 257 and 515 keys, the last rescaling twice), the query tiles and key panels,
    /// and the value tiles and vector tails of the head size.
    #[test]
    fn every_block_edge_matches_scalar() {
        let mut seed = 100;
        for tokens in token_edges() {
            for with_probs in [false, true] {
                let shape = AttentionShape {
                    batch: 1,
                    tokens,
                    heads: 2,
                    head_dim: 20,
                };
                seed += 1;
                check(shape, &[1.0, 0.6], 3.0, seed, with_probs, 2);
            }
        }
        for head_dim in head_dim_edges() {
            let shape = AttentionShape {
                batch: 2,
                tokens: 37,
                heads: 2,
                head_dim,
            };
            seed += 1;
            check(
                shape,
                &[0.7, 1.0],
                2.0,
                seed,
                seed % 2 == 0,
                1 + seed as usize % 3,
            );
        }
    }

    fn shapes() -> impl Strategy<Value = AttentionShape> {
        (
            1..=2usize,
            prop_oneof![
                1..=20usize,
                60..=150usize,
                prop::sample::select(token_edges())
            ],
            1..=3usize,
            prop_oneof![
                Just(32usize),
                Just(64),
                1..=70usize,
                prop::sample::select(head_dim_edges())
            ],
        )
            .prop_map(|(batch, tokens, heads, head_dim)| AttentionShape {
                batch,
                tokens,
                heads,
                head_dim,
            })
    }

    proptest! {
        // A fixed seed: every run draws the same cases.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xa77e),
            ..ProptestConfig::with_cases(crate::proptest_cases(48))
        })]

        #[test]
        fn matches_scalar(
            shape in shapes(),
            scales in prop::collection::vec(prop_oneof![Just(1.0f32), Just(0.0), 0.1f32..2.0], 3),
            spread in prop_oneof![Just(1.0f32), 0.1f32..4.0],
            seed: u64,
            with_probs: bool,
            threads in 1..=3usize,
        ) {
            check(shape, &scales, spread, seed, with_probs, threads);
        }
    }

    #[test]
    fn model_shape_matches_scalar() {
        let shape = AttentionShape {
            batch: 1,
            tokens: 197,
            heads: 2,
            head_dim: 64,
        };
        check(shape, &[1.0, 0.5], 2.0, 7, false, 2);
        check(shape, &[0.0, 1.0], 2.0, 8, true, 2);
    }

    #[test]
    fn thread_count_does_not_change_results() {
        let shape = AttentionShape {
            batch: 2,
            tokens: 131,
            heads: 3,
            head_dim: 40,
        };
        let qkv = values(2 * 131 * 3 * 120, 3, 2.0);
        let run = |isa, threads| {
            let mut context = vec![0.0; 2 * 131 * 120];
            let pool = ThreadPool::new(threads);
            let mut scratch = AttentionScratch::new(shape, threads);
            attention(
                isa,
                shape,
                &qkv,
                &[1.0, 0.7, 1.3],
                &mut context,
                None,
                &pool,
                &mut scratch,
            );
            context
        };
        for isa in crate::tested_isas() {
            let one = run(isa, 1);
            for threads in [2, 3, 5] {
                assert!(
                    one.iter()
                        .zip(&run(isa, threads))
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{isa:?} on {threads} threads"
                );
            }
        }
    }
}
