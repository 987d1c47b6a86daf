// Row-wise LayerNorm: (x - mean) / sqrt(var + eps) · gamma + beta, one workgroup per row.
// Mean and variance are two passes over the row, as the reference computes them.
//
// The host prepends `alias elem` and the constant THREADS (a power of two).

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> gamma: array<elem>;
@group(0) @binding(3) var<storage, read> beta: array<elem>;
@group(0) @binding(4) var<storage, read_write> out: array<elem>;

var<workgroup> partial: array<f32, THREADS>;

// The sum of every thread's `v`, returned to all threads.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(THREADS)
fn layer_norm(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = group.y * groups.x + group.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    var sum = 0.0;
    for (var j = lid; j < p.dim; j += THREADS) {
        sum += f32(x[base + j]);
    }
    let mean = workgroup_sum(sum, lid) / f32(p.dim);
    var squares = 0.0;
    for (var j = lid; j < p.dim; j += THREADS) {
        let centred = f32(x[base + j]) - mean;
        squares += centred * centred;
    }
    let inv = 1.0 / sqrt(workgroup_sum(squares, lid) / f32(p.dim) + p.eps);
    for (var j = lid; j < p.dim; j += THREADS) {
        out[base + j] = elem((f32(x[base + j]) - mean) * inv * f32(gamma[j]) + f32(beta[j]));
    }
}
