// Multi-head self-attention over fused qkv rows [batch · tokens, 3 · hidden] (query, key
// and value side by side, head h at columns h · HEAD_DIM.. of each).
//
// `attention`: flash style. A workgroup takes QUERY_TILE queries of one (image, head),
// one query per thread, and streams the keys and values through workgroup memory
// KV_TILE tokens at a time, keeping a running max and sum (online softmax) so the
// [tokens, tokens] scores never exist in memory. The head mask scales each head's output.
//
// `attention_probs`: the probabilities [batch, heads, tokens, tokens] for
// output_attentions. With STATS the flash pass stores each query's final max and sum; this
// pass recomputes the scores and normalises them with those, so the probabilities are
// exactly those the context was made of.
//
// The host prepends `alias elem` and the constants HEAD_DIM, KV_TILE, QUERY_TILE and SCALE
// (1 / sqrt(HEAD_DIM)). Arithmetic is f32 whatever the storage type.

struct Params {
    batch: u32,
    tokens: u32,
    heads: u32,
    // Row of the head mask [layers, heads] this layer uses.
    layer: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<elem>;
@group(0) @binding(2) var<storage, read> head_mask: array<elem>;
@group(0) @binding(3) var<storage, read_write> context: array<elem>;
//#if STATS
// Per (image, head, query): the final max and sum of its softmax.
@group(0) @binding(4) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> probs: array<elem>;
//#endif

var<workgroup> k_tile: array<f32, KV_TILE * HEAD_DIM>;
var<workgroup> v_tile: array<f32, KV_TILE * HEAD_DIM>;

// Stands in for -inf: exp(NO_MAX - s) is 0 without ever computing inf - inf.
const NO_MAX: f32 = -3.0e38;

@compute @workgroup_size(QUERY_TILE)
fn attention(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let query_tiles = (p.tokens + QUERY_TILE - 1u) / QUERY_TILE;
    let block = group.y * groups.x + group.x;
    if (block >= p.batch * p.heads * query_tiles) {
        return;
    }
    let image_head = block / query_tiles;
    let image = image_head / p.heads;
    let head = image_head % p.heads;
    let query = (block % query_tiles) * QUERY_TILE + lid;
    let hidden = p.heads * HEAD_DIM;
    let stride = 3u * hidden;
    let base = image * p.tokens * stride + head * HEAD_DIM;

    // Threads past the last token compute on zeros and store nothing; they still help
    // load the tiles.
    var q: array<f32, HEAD_DIM>;
    if (query < p.tokens) {
        for (var d = 0u; d < HEAD_DIM; d++) {
            q[d] = f32(qkv[base + query * stride + d]);
        }
    }
    var acc: array<f32, HEAD_DIM>;
    var scores: array<f32, KV_TILE>;
    var running_max = NO_MAX;
    var running_sum = 0.0;
    for (var key0 = 0u; key0 < p.tokens; key0 += KV_TILE) {
        for (var e = lid; e < KV_TILE * HEAD_DIM; e += QUERY_TILE) {
            let key = key0 + e / HEAD_DIM;
            if (key < p.tokens) {
                let at = base + key * stride + e % HEAD_DIM;
                k_tile[e] = f32(qkv[at + hidden]);
                v_tile[e] = f32(qkv[at + 2u * hidden]);
            }
        }
        workgroupBarrier();
        let count = min(KV_TILE, p.tokens - key0);
        var tile_max = running_max;
        for (var j = 0u; j < count; j++) {
            var dot = 0.0;
            for (var d = 0u; d < HEAD_DIM; d++) {
                dot += q[d] * k_tile[j * HEAD_DIM + d];
            }
            scores[j] = dot * SCALE;
            tile_max = max(tile_max, scores[j]);
        }
        let correction = exp(running_max - tile_max);
        running_sum *= correction;
        for (var d = 0u; d < HEAD_DIM; d++) {
            acc[d] *= correction;
        }
        for (var j = 0u; j < count; j++) {
            let weight = exp(scores[j] - tile_max);
            running_sum += weight;
            for (var d = 0u; d < HEAD_DIM; d++) {
                acc[d] += weight * v_tile[j * HEAD_DIM + d];
            }
        }
        running_max = tile_max;
        workgroupBarrier();
    }
    if (query < p.tokens) {
        let out_scale = f32(head_mask[p.layer * p.heads + head]) / running_sum;
        let out = (image * p.tokens + query) * hidden + head * HEAD_DIM;
        for (var d = 0u; d < HEAD_DIM; d++) {
            context[out + d] = elem(acc[d] * out_scale);
        }
//#if STATS
        stats[image_head * p.tokens + query] = vec2(running_max, running_sum);
//#endif
    }
}

//#if STATS
var<workgroup> query_row: array<f32, HEAD_DIM>;

// One workgroup per (image, head, query) row; its threads stride over the keys.
@compute @workgroup_size(QUERY_TILE)
fn attention_probs(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = group.y * groups.x + group.x;
    if (row >= p.batch * p.heads * p.tokens) {
        return;
    }
    let image_head = row / p.tokens;
    let image = image_head / p.heads;
    let head = image_head % p.heads;
    let query = row % p.tokens;
    let hidden = p.heads * HEAD_DIM;
    let stride = 3u * hidden;
    let base = image * p.tokens * stride + head * HEAD_DIM;
    for (var d = lid; d < HEAD_DIM; d += QUERY_TILE) {
        query_row[d] = f32(qkv[base + query * stride + d]);
    }
    workgroupBarrier();
    let row_stats = stats[row];
    let out_scale = f32(head_mask[p.layer * p.heads + head]) / row_stats.y;
    for (var key = lid; key < p.tokens; key += QUERY_TILE) {
        var dot = 0.0;
        for (var d = 0u; d < HEAD_DIM; d++) {
            dot += query_row[d] * f32(qkv[base + key * stride + hidden + d]);
        }
        probs[row * p.tokens + key] = elem(exp(dot * SCALE - row_stats.x) * out_scale);
    }
}
//#endif
