//! The loop nest and the packing, shared by every micro-kernel.
//!
//! Packed B (done once, in `pack_weights`): for each K block of depth `d` starting at `p0`,
//! `⌈n/NR⌉` panels, each `d` steps of `NR` consecutive columns, zero past `n`; the
//! panel `jp` of that block starts at `p0·n_padded + jp·d·NR`.
//!
//! Packed A (per call, in `pack_a`): for each K block, a dense copy of the block's rows,
//! `d` values each, with zero rows up to a whole number of `MR`-row panels. Rows stay rows
//! (the kernel reads `MR` streams), so packing is a plain copy; it keeps the block
//! contiguous, away from the cache-set conflicts of A's own row stride.
//!
//! One task owns a block of C's rows and of its column panels and runs, for each K block,
//! pack A → for each B panel → for each A panel → micro-kernel, so a B panel stays in
//! cache (L1 for AVX2's 16 KiB panels, L2 for AVX-512's 192 KiB ones) while the packed A
//! block streams past it. Meanwhile the first calls on a panel each prefetch one slice of
//! the next B panel, which otherwise would come from memory at the L2 streamer's pace.

use std::cell::RefCell;
use std::ops::Range;

use super::{GemmKernel, PackedWeights, Panels, TileEpilogue};
use crate::aligned::AlignedVec;
use crate::threads::ThreadPool;
use crate::{Epilogue, Isa};

/// The largest `MR·NR` of any kernel: edge tiles are staged in stack buffers this big.
const MAX_TILE: usize = 512;

thread_local! {
    /// This thread's packed A block: grows to the largest block it has packed, then is reused.
    static PACKED_A: RefCell<AlignedVec> = RefCell::new(AlignedVec::default());
}

/// The depth of `k`'s K blocks: at most `KC`, and as even as possible, so the last block
/// is not a sliver.
fn block_depth<K: GemmKernel>(k: usize) -> usize {
    k.div_ceil(k.div_ceil(K::KC).max(1))
}

/// The K blocks as `(start, depth)`; a single empty one when `k` is 0, so that the
/// epilogue still runs.
fn k_blocks(k: usize, depth: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = if k == 0 { 1 } else { k.div_ceil(depth) };
    (0..count).map(move |b| (b * depth, depth.min(k - b * depth)))
}

pub(super) fn pack_weights<K: GemmKernel>(
    isa: Isa,
    n: usize,
    k: usize,
    w: &[f32],
) -> PackedWeights {
    let depth = block_depth::<K>(k);
    let n_padded = n.div_ceil(K::NR) * K::NR;
    let mut panels = AlignedVec::zeroed(n_padded * k);
    let packed = &mut panels[..];
    // An empty K leaves nothing to pack.
    for (p0, d) in k_blocks(k, depth).filter(|&(_, d)| d > 0) {
        let block = &mut packed[p0 * n_padded..][..d * n_padded];
        for (jp, panel) in block.chunks_exact_mut(d * K::NR).enumerate() {
            for j in 0..K::NR.min(n - jp * K::NR) {
                let column = &w[(jp * K::NR + j) * k + p0..][..d];
                for (p, &v) in column.iter().enumerate() {
                    panel[p * K::NR + j] = v;
                }
            }
        }
    }
    PackedWeights {
        isa,
        n,
        k,
        block_depth: depth,
        panels,
    }
}

/// Copies rows `rows` of `a` (row stride `k`), depths `p0..p0 + d`, into a dense block of
/// row stride `d`, padded with zero rows to whole `MR`-row panels.
fn pack_a<K: GemmKernel>(
    a: &[f32],
    k: usize,
    rows: Range<usize>,
    p0: usize,
    d: usize,
    packed: &mut [f32],
) {
    if d == 0 {
        return;
    }
    let padded_rows = rows.len().div_ceil(K::MR) * K::MR;
    for (i, packed_row) in (rows.start..).zip(packed[..padded_rows * d].chunks_exact_mut(d)) {
        if i < rows.end {
            packed_row.copy_from_slice(&a[i * k + p0..][..d]);
        } else {
            packed_row.fill(0.0);
        }
    }
}

/// How C is cut into tasks: blocks of whole `MR` panels of rows × blocks of `NR` panels
/// of columns.
struct Grid {
    rows_per_block: usize,
    panels_per_block: usize,
    n_blocks: usize,
    tasks: usize,
}

impl Grid {
    fn new<K: GemmKernel>(m: usize, n: usize, threads: usize) -> Self {
        let m_panels = m.div_ceil(K::MR);
        let n_panels = n.div_ceil(K::NR);
        // Row blocks no taller than MC and, where there are panels enough, as many as a
        // multiple of the threads, so each thread packs and multiplies an equal share.
        let mut m_blocks = m.div_ceil(K::MC);
        if m_panels >= threads {
            m_blocks = m_blocks.next_multiple_of(threads);
        }
        let rows_per_block = m_panels.div_ceil(m_blocks.min(m_panels)) * K::MR;
        let m_blocks = m.div_ceil(rows_per_block);
        // Columns are split only past NC, or when there are too few rows for the threads:
        // each column block repacks its rows of A.
        let mut n_blocks = n.div_ceil(K::NC);
        if m_blocks < threads {
            n_blocks = n_blocks.max(threads.div_ceil(m_blocks));
        }
        let panels_per_block = n_panels.div_ceil(n_blocks.min(n_panels));
        let n_blocks = n_panels.div_ceil(panels_per_block);
        Self {
            rows_per_block,
            panels_per_block,
            n_blocks,
            tasks: m_blocks * n_blocks,
        }
    }

    /// The rows of C and the column panels of task `task`.
    fn task(&self, task: usize, m: usize, n_panels: usize) -> (Range<usize>, Range<usize>) {
        let (mb, nb) = (task / self.n_blocks, task % self.n_blocks);
        let rows = mb * self.rows_per_block..m.min((mb + 1) * self.rows_per_block);
        let panels = nb * self.panels_per_block..n_panels.min((nb + 1) * self.panels_per_block);
        (rows, panels)
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
struct Operands<'a> {
    a: &'a [f32],
    w: &'a PackedWeights,
    epilogue: &'a Epilogue<'a>,
    c: Output,
}

pub(super) fn gemm<K: GemmKernel>(
    m: usize,
    a: &[f32],
    w: &PackedWeights,
    c: &mut [f32],
    epilogue: &Epilogue,
    pool: &ThreadPool,
) {
    let (n, k) = (w.n, w.k);
    assert!(a.len() >= m * k, "a holds {} values, not {m}×{k}", a.len());
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
    let n_panels = n.div_ceil(K::NR);
    let operands = Operands {
        a,
        w,
        epilogue,
        c: Output {
            ptr: c.as_mut_ptr(),
            ldc: n,
        },
    };
    let packed_len = grid.rows_per_block * w.block_depth;
    pool.run(grid.tasks, &|task| {
        let (rows, panels) = grid.task(task, m, n_panels);
        PACKED_A.with_borrow_mut(|packed| {
            packed.reserve_len(packed_len);
            multiply_block::<K>(&operands, rows, panels, packed);
        });
    });
}

/// One task: rows `rows` of C times the column panels `panels`, over all of K.
fn multiply_block<K: GemmKernel>(
    ops: &Operands,
    rows: Range<usize>,
    panels: Range<usize>,
    packed_a: &mut [f32],
) {
    let w = ops.w;
    let (n, k) = (w.n, w.k);
    let n_padded = n.div_ceil(K::NR) * K::NR;
    let m_panels = rows.len().div_ceil(K::MR);
    for (p0, d) in k_blocks(k, w.block_depth) {
        pack_a::<K>(ops.a, k, rows.clone(), p0, d, packed_a);
        let last = p0 + d >= k;
        for jp in panels.clone() {
            let b = &w.panels[p0 * n_padded + jp * d * K::NR..][..d * K::NR];
            let j = jp * K::NR;
            // The panel after this one in memory, which this task reads next (or, past its
            // last panel, soon after): the first A panels' calls prefetch one slice of it
            // each, so it arrives from memory while this one is multiplied.
            let next_panel = b.as_ptr_range().end;
            let slices = K::NR / 4;
            for ip in 0..m_panels {
                let a_panel = &packed_a[ip * K::MR * d..][..K::MR * d];
                let panels = Panels {
                    depth: d,
                    a: a_panel.as_ptr(),
                    b: b.as_ptr(),
                    prefetch: if ip < slices {
                        next_panel.wrapping_add(ip * d * 4)
                    } else {
                        std::ptr::null()
                    },
                };
                let i = rows.start + ip * K::MR;
                let corner = Corner {
                    i,
                    j,
                    rows: K::MR.min(rows.end - i),
                    cols: K::NR.min(n - j),
                };
                // SAFETY: `panels` points into the slices `a_panel` and `b`, which hold
                // MR·d and NR·d values.
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

/// Runs the micro-kernel on one tile of C, staging edge tiles through a full-size buffer.
///
/// # Safety
/// `panels.a` and `panels.b` must be valid for the `MR·depth` and `NR·depth` reads
/// `GemmKernel::kernel` makes.
unsafe fn multiply_tile<K: GemmKernel>(
    ops: &Operands,
    panels: Panels,
    at: Corner,
    accumulate: bool,
    last: bool,
) {
    const { assert!(K::MR * K::NR <= MAX_TILE) };
    let Output { ptr: c, ldc } = ops.c;
    let corner = at.i * ldc + at.j;
    let epilogue = ops.epilogue;
    if at.rows == K::MR && at.cols == K::NR {
        let tile_epilogue = last.then(|| TileEpilogue {
            bias: epilogue.bias.map(|b| b[at.j..].as_ptr()),
            activation: epilogue.activation,
            residual: epilogue.residual.map(|r| r[corner..].as_ptr()),
        });
        // SAFETY: the caller vouches for the panels; the tile lies inside C (and the
        // residual, which has C's shape, and the bias covers its columns), and only this
        // task touches it. The kernel's CPU features were checked when `w` was packed.
        unsafe {
            K::kernel(
                panels,
                c.add(corner),
                ldc,
                accumulate,
                tile_epilogue.as_ref(),
            )
        };
        return;
    }
    // An edge tile: the kernel works on a full MR×NR copy (row stride NR) whose extra rows
    // and columns are padding, so edges are summed exactly as the rest of C.
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
