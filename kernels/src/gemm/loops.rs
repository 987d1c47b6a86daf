//! The loop nest and the packing, shared by every micro-kernel.
//!
//! Packed B (done once, in `pack_weights`): for each K block of depth `d` starting at `p0`,
//! `⌈n/NR⌉` panels, each `d / GROUP` steps of `NR` consecutive columns with `GROUP`
//! consecutive depths per column, zero past `n` and past `k`; the panel `jp` of that
//! block starts at `p0·n_padded + jp·d·NR`.
//!
//! A is read in place, `MR` rows at a time with its own row stride; copying it measured
//! no faster at batch 1 and cost 4% of a batch-8 forward in `memmove`. Only a row panel
//! that extends past C's last row is copied (`pack_edge_panel`) into a panel padded with
//! zero rows, so the micro-kernel always reads `MR` rows.
//!
//! One task owns a run of C's tiles (see `Grid`: about `MC` rows of a block of column
//! panels) and runs, for each K block,
//! for each B panel → for each of its A panels → micro-kernel, so a B panel stays in
//! cache (L1 for AVX2's 16 KiB panels, L2 for AVX-512's 192 KiB ones) while the task's
//! rows of A stream past it. Meanwhile the first calls on a panel each prefetch one slice of
//! the next B panel, which otherwise would come from memory at the L2 streamer's pace.

use std::ops::Range;

use super::{AValue, Dequant, GemmKernel, PackedValue, PackedWeights, Panels, TileEpilogue};
use crate::aligned::AlignedVec;
use crate::quant::RowQuant;
use crate::threads::ThreadPool;
use crate::Epilogue;

/// The largest `MR·NR` of any kernel: tiles past C's last column are staged in stack
/// buffers this big.
const MAX_TILE: usize = 512;

/// The depth of the K blocks of a packed depth `depth` (a multiple of `GROUP`): at most
/// `KC`, as even as possible, so the last block is not a sliver, and a multiple of `GROUP`.
fn block_depth<K: GemmKernel>(depth: usize) -> usize {
    depth
        .div_ceil(depth.div_ceil(K::KC).max(1))
        .next_multiple_of(K::GROUP)
}

/// The shape of packed weights.
pub(super) struct Layout {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to `GROUP`.
    pub depth: usize,
    pub block_depth: usize,
}

/// The K blocks as `(start, depth)`; a single empty one when `k` is 0, so that the
/// epilogue still runs.
fn k_blocks(k: usize, depth: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = if k == 0 { 1 } else { k.div_ceil(depth) };
    (0..count).map(move |b| (b * depth, depth.min(k - b * depth)))
}

/// Packs `w[n×k]` (row-major) as the module's header describes.
pub(super) fn pack_weights<K: GemmKernel>(
    n: usize,
    k: usize,
    w: &[K::B],
) -> (AlignedVec<K::B>, Layout) {
    let depth = k.next_multiple_of(K::GROUP);
    let block_depth = block_depth::<K>(depth);
    let n_padded = n.div_ceil(K::NR) * K::NR;
    let group = K::GROUP;
    let mut panels = AlignedVec::zeroed(n_padded * depth);
    let packed = &mut panels[..];
    // An empty K leaves nothing to pack.
    for (p0, d) in k_blocks(depth, block_depth).filter(|&(_, d)| d > 0) {
        let block = &mut packed[p0 * n_padded..][..d * n_padded];
        for (jp, panel) in block.chunks_exact_mut(d * K::NR).enumerate() {
            for j in 0..K::NR.min(n - jp * K::NR) {
                let column = &w[(jp * K::NR + j) * k..][..k];
                for p in 0..d.min(k.saturating_sub(p0)) {
                    panel[(p / group * K::NR + j) * group + p % group] = column[p0 + p];
                }
            }
        }
    }
    let layout = Layout {
        n,
        k,
        depth,
        block_depth,
    };
    (panels, layout)
}

/// Per K block of `layout`, the sum of each column's quantized weights over the block,
/// `n` padded to whole panels with zeros: what the int8 kernels subtract for A's zero
/// points.
pub(super) fn block_sums<K: GemmKernel>(
    n: usize,
    k: usize,
    values: &[i8],
    layout: &Layout,
) -> Vec<i32> {
    let n_padded = n.div_ceil(K::NR) * K::NR;
    let blocks: Vec<_> = k_blocks(layout.depth, layout.block_depth).collect();
    let mut sums = vec![0i32; blocks.len() * n_padded];
    for (block_sums, &(p0, d)) in sums.chunks_exact_mut(n_padded).zip(&blocks) {
        let range = p0.min(k)..(p0 + d).min(k);
        for (j, sum) in block_sums.iter_mut().enumerate().take(n) {
            *sum = values[j * k..][range.clone()]
                .iter()
                .map(|&v| i32::from(v))
                .sum();
        }
    }
    sums
}

/// Copies A's partial last row panel, rows `rows` (fewer than `MR`) of `a` (row stride
/// `stride`) at depths `p0..p0 + d`, into a full `MR`-row panel of row stride `d` with
/// zero rows below, so the micro-kernel can read `MR` rows there.
fn pack_edge_panel<K: GemmKernel>(
    a: &[K::A],
    stride: usize,
    rows: Range<usize>,
    p0: usize,
    d: usize,
    packed: &mut [K::A],
) {
    for (i, packed_row) in (rows.start..).zip(packed[..K::MR * d].chunks_exact_mut(d.max(1))) {
        if i < rows.end {
            packed_row.copy_from_slice(&a[i * stride + p0..][..d]);
        } else {
            packed_row.fill(K::A::default());
        }
    }
}

/// How C is cut into tasks. Columns are cut into blocks of at most `NC` (whole `NR`
/// panels). Within a column block, the `MR×NR` tiles, taken row panel after row panel,
/// are cut into `m_tasks` runs of equal length, so a task may start and end partway
/// along a row panel: 197 rows are 33 panels, and two threads each get 16½ of them
/// rather than 17 and 16. A row panel shared by two tasks is read by both.
struct Grid {
    m_panels: usize,
    n_panels: usize,
    m_tasks: usize,
    panels_per_block: usize,
    n_blocks: usize,
}

/// One task's tiles: the column panels `panels`, and of the tiles of that column block
/// (numbered row panel after row panel) those in `tiles`.
struct TaskTiles {
    panels: Range<usize>,
    tiles: Range<usize>,
}

impl TaskTiles {
    /// The row panels the task touches.
    fn row_panels(&self) -> Range<usize> {
        let width = self.panels.len();
        self.tiles.start / width..self.tiles.end.div_ceil(width)
    }

    fn has(&self, ip: usize, jp: usize) -> bool {
        self.tiles
            .contains(&(ip * self.panels.len() + jp - self.panels.start))
    }
}

impl Grid {
    fn new<K: GemmKernel>(m: usize, n: usize, threads: usize) -> Self {
        let m_panels = m.div_ceil(K::MR);
        let n_panels = n.div_ceil(K::NR);
        let panels_per_block = n_panels.div_ceil(n.div_ceil(K::NC));
        let n_blocks = n_panels.div_ceil(panels_per_block);
        // Runs of about MC rows and, so each thread multiplies an equal share, as many as a
        // multiple of the threads (but no more than a column block has tiles; a narrower
        // last block may leave a run empty, which does nothing).
        let m_tasks = m
            .div_ceil(K::MC)
            .next_multiple_of(threads)
            .min(m_panels * panels_per_block);
        Self {
            m_panels,
            n_panels,
            m_tasks,
            panels_per_block,
            n_blocks,
        }
    }

    fn tasks(&self) -> usize {
        self.m_tasks * self.n_blocks
    }

    fn task(&self, task: usize) -> TaskTiles {
        let (mb, nb) = (task / self.n_blocks, task % self.n_blocks);
        let panels =
            nb * self.panels_per_block..self.n_panels.min((nb + 1) * self.panels_per_block);
        let total = self.m_panels * panels.len();
        let tiles = mb * total / self.m_tasks..(mb + 1) * total / self.m_tasks;
        TaskTiles { panels, tiles }
    }
}

/// C, written by several tasks at once, each to its own tiles.
struct Output {
    ptr: *mut f32,
    /// Row stride: n.
    ldc: usize,
}

// SAFETY: tasks write disjoint tiles (the grid partitions C), and `gemm` holds the `&mut`
// C borrow until every task has finished.
unsafe impl Sync for Output {}

/// What every task reads.
struct Operands<'a, K: GemmKernel> {
    /// A's rows, `a_stride` apart, as the kernel reads them.
    a: &'a [K::A],
    a_stride: usize,
    /// Each row's quantization, for 8-bit A (`MR` rows past m, zero); else empty.
    rows: &'a [RowQuant],
    w: &'a PackedWeights,
    epilogue: &'a Epilogue<'a>,
    c: Output,
}

/// `c = epilogue(a · wᵀ)` for `a` converted for `K` (see `AValue`).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<K: GemmKernel>(
    m: usize,
    a: &[K::A],
    a_stride: usize,
    rows: &[RowQuant],
    w: &PackedWeights,
    c: &mut [f32],
    epilogue: &Epilogue,
    pool: &ThreadPool,
) {
    let n = w.n;
    assert!(
        m == 0 || a.len() >= (m - 1) * a_stride + w.depth,
        "a holds {} values, not {m} rows of {}",
        a.len(),
        w.depth
    );
    assert!(c.len() >= m * n, "c holds {} values, not {m}×{n}", c.len());
    assert!(
        epilogue.bias.is_none_or(|b| b.len() >= n),
        "bias shorter than {n}"
    );
    assert!(
        epilogue.residual.is_none_or(|r| r.len() >= m * n),
        "residual shorter than {m}×{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    let grid = Grid::new::<K>(m, n, pool.threads());
    let operands = Operands::<K> {
        a,
        a_stride,
        rows,
        w,
        epilogue,
        c: Output {
            ptr: c.as_mut_ptr(),
            ldc: n,
        },
    };
    pool.run(grid.tasks(), &|task| {
        let tiles = grid.task(task);
        K::A::with_edge_panel(K::MR * w.block_depth, |packed| {
            multiply_block::<K>(&operands, m, tiles, packed);
        });
    });
}

/// One task: its tiles of C, over all of K.
fn multiply_block<K: GemmKernel>(
    ops: &Operands<K>,
    m: usize,
    tiles: TaskTiles,
    packed_a: &mut [K::A],
) {
    let w = ops.w;
    let (n, depth, stride) = (w.n, w.depth, ops.a_stride);
    let n_padded = n.div_ceil(K::NR) * K::NR;
    let w_panels = K::B::panels(w);
    let row_panels = tiles.row_panels();
    // The row panel that extends past C's last row, if this task has it.
    let edge = Some(m / K::MR).filter(|ip| !m.is_multiple_of(K::MR) && row_panels.contains(ip));
    for (block, (p0, d)) in k_blocks(depth, w.block_depth).enumerate() {
        if let Some(ip) = edge {
            pack_edge_panel::<K>(ops.a, stride, ip * K::MR..m, p0, d, packed_a);
        }
        let last = p0 + d >= depth;
        for jp in tiles.panels.clone() {
            let b = &w_panels[p0 * n_padded + jp * d * K::NR..][..d * K::NR];
            let j = jp * K::NR;
            // The panel after this one in memory, which this task reads next (or, past its
            // last panel, soon after): the first calls on this panel prefetch one slice of
            // `d·16` bytes of it each, so it arrives from memory while this one is
            // multiplied.
            let next_panel = b.as_ptr_range().end.cast::<u8>();
            let slices = K::NR * std::mem::size_of::<K::B>() / 16;
            let own = row_panels.clone().filter(|&ip| tiles.has(ip, jp));
            for (call, ip) in own.enumerate() {
                let (a_panel, a_stride) = if edge == Some(ip) {
                    (&packed_a[..K::MR * d], d)
                } else {
                    (
                        &ops.a[ip * K::MR * stride + p0..][..(K::MR - 1) * stride + d],
                        stride,
                    )
                };
                let dequant = match ops.w.storage {
                    super::Storage::Int8 {
                        ref scales,
                        ref sums,
                        ..
                    } => Dequant {
                        a: ops.rows[ip * K::MR..][..K::MR].as_ptr(),
                        b_scale: scales[j..][..K::NR].as_ptr(),
                        b_sum: sums[block * n_padded + j..][..K::NR].as_ptr(),
                    },
                    _ => Dequant::NONE,
                };
                let panels = Panels {
                    depth: d,
                    a: a_panel.as_ptr(),
                    a_stride,
                    b: b.as_ptr(),
                    prefetch: if call < slices {
                        next_panel.wrapping_add(call * d * 16)
                    } else {
                        std::ptr::null()
                    },
                    dequant,
                };
                let i = ip * K::MR;
                let corner = Corner {
                    i,
                    j,
                    rows: K::MR.min(m - i),
                    cols: K::NR.min(n - j),
                };
                // SAFETY: `panels` points into the slices `a_panel`, which holds MR rows
                // of d values a_stride apart, and `b`, which holds NR·d values.
                unsafe { multiply_tile::<K>(ops, panels, corner, p0 > 0, last) };
            }
        }
    }
}

/// Where a tile sits in C and how much of it is inside C.
struct Corner {
    i: usize,
    j: usize,
    rows: usize,
    cols: usize,
}

/// Runs the micro-kernel on one tile of C. A tile that extends past C's last row is
/// stored row by row by the kernel itself; one that extends past its last column is
/// staged through a full-size buffer.
///
/// # Safety
/// `panels.a` and `panels.b` must be valid for the `MR·depth` and `NR·depth` reads
/// `GemmKernel::kernel` makes.
unsafe fn multiply_tile<K: GemmKernel>(
    ops: &Operands<K>,
    panels: Panels<K::A, K::B>,
    at: Corner,
    accumulate: bool,
    last: bool,
) {
    const { assert!(K::MR * K::NR <= MAX_TILE) };
    let Output { ptr: c, ldc } = ops.c;
    let corner = at.i * ldc + at.j;
    let epilogue = ops.epilogue;
    if at.cols == K::NR {
        let tile_epilogue = last.then(|| TileEpilogue {
            bias: epilogue.bias.map(|b| b[at.j..].as_ptr()),
            activation: epilogue.activation,
            residual: epilogue.residual.map(|r| r[corner..].as_ptr()),
        });
        // SAFETY: the caller vouches for the panels; the tile's `at.rows` rows lie inside
        // C (and the residual, which has C's shape, and the bias covers its columns), and
        // only this task touches them. The kernel's CPU features were checked when `w` was
        // packed.
        unsafe {
            K::kernel(
                panels,
                c.add(corner),
                ldc,
                at.rows,
                accumulate,
                tile_epilogue.as_ref(),
            )
        };
        return;
    }
    // A tile past C's last column: the kernel works on a full MR×NR copy (row stride NR)
    // whose extra rows and columns are padding, so edges are summed exactly as the rest
    // of C.
    let mut tile = [0.0f32; MAX_TILE];
    let mut residual = [0.0f32; MAX_TILE];
    let mut bias = [0.0f32; MAX_TILE];
    for r in 0..at.rows {
        let staged = r * K::NR..r * K::NR + at.cols;
        if accumulate {
            // SAFETY: the row segment lies inside C and only this task touches it.
            let c_row = unsafe { std::slice::from_raw_parts(c.add(corner + r * ldc), at.cols) };
            tile[staged.clone()].copy_from_slice(c_row);
        }
        if let (true, Some(res)) = (last, epilogue.residual) {
            residual[staged].copy_from_slice(&res[corner + r * ldc..][..at.cols]);
        }
    }
    if let (true, Some(b)) = (last, epilogue.bias) {
        bias[..at.cols].copy_from_slice(&b[at.j..][..at.cols]);
    }
    let tile_epilogue = last.then(|| TileEpilogue {
        bias: epilogue.bias.map(|_| bias.as_ptr()),
        activation: epilogue.activation,
        residual: epilogue.residual.map(|_| residual.as_ptr()),
    });
    // SAFETY: the caller vouches for the panels; `tile`, `residual` and `bias` hold
    // MR·NR values with row stride NR. The kernel's CPU features were checked when `w`
    // was packed.
    unsafe {
        K::kernel(
            panels,
            tile.as_mut_ptr(),
            K::NR,
            K::MR,
            accumulate,
            tile_epilogue.as_ref(),
        )
    };
    for r in 0..at.rows {
        // SAFETY: the row segment lies inside C and only this task touches it.
        let c_row = unsafe { std::slice::from_raw_parts_mut(c.add(corner + r * ldc), at.cols) };
        c_row.copy_from_slice(&tile[r * K::NR..][..at.cols]);
    }
}
