// The small element-wise ops around the encoder, one thread per output element:
//   mask_blend    embeddings · (1 − mask) + mask_token · mask, per patch row;
//   cls_position  prepends the CLS token to each image's patches and adds positions;
//   select_cls    row 0 (the CLS token) of each image.
//
// The host prepends `alias elem` and the constant THREADS.

struct Params {
    // Output elements.
    total: u32,
    dim: u32,
    // Tokens per image of the output (cls_position) or of the input (select_cls).
    tokens: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read> mask: array<elem>;
@group(0) @binding(3) var<storage, read> mask_token: array<elem>;
@group(0) @binding(4) var<storage, read> cls: array<elem>;
@group(0) @binding(5) var<storage, read> position: array<elem>;
@group(0) @binding(6) var<storage, read_write> out: array<elem>;

// The element of a (possibly folded) grid of THREADS-wide workgroups.
fn element(group: vec3<u32>, groups: vec3<u32>, lid: u32) -> u32 {
    return (group.y * groups.x + group.x) * THREADS + lid;
}

@compute @workgroup_size(THREADS)
fn mask_blend(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(group, groups, lid);
    if (i >= p.total) {
        return;
    }
    let m = f32(mask[i / p.dim]);
    out[i] = elem(f32(x[i]) * (1.0 - m) + f32(mask_token[i % p.dim]) * m);
}

@compute @workgroup_size(THREADS)
fn cls_position(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(group, groups, lid);
    if (i >= p.total) {
        return;
    }
    let token = (i / p.dim) % p.tokens;
    let j = i % p.dim;
    var v: f32;
    if (token == 0u) {
        v = f32(cls[j]);
    } else {
        // Patch `token - 1` of this image: the input has one row fewer per image.
        let image = i / (p.dim * p.tokens);
        v = f32(x[(image * (p.tokens - 1u) + token - 1u) * p.dim + j]);
    }
    out[i] = elem(v + f32(position[token * p.dim + j]));
}

@compute @workgroup_size(THREADS)
fn select_cls(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = element(group, groups, lid);
    if (i >= p.total) {
        return;
    }
    out[i] = x[(i / p.dim) * p.tokens * p.dim + i % p.dim];
}
