// Tiled GEMM with a fused epilogue: c[m, n] = act(a[m, k] · w[n, k]ᵀ + bias) + residual.
//
// The host prepends `alias elem` (f32 or f16 storage) and the constants
//   BM, BN, BK   block of c computed by one workgroup, and the depth of one k step;
//   TM, TN       block of c computed by one thread (TN a multiple of 4);
//   ACTIVATION   one of the ACT_* names below;
// and keeps the `//#if` sections of the flags it sets:
//   VEC4_A, VEC4_W  the operand's rows are read as vec4 (every k step is 4-aligned);
//   IM2COL          `a` holds the pixels of a patch embedding, gathered as patches on load;
//   BIAS, RESIDUAL  the epilogue terms present.
// Arithmetic is f32 whatever the storage type.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Patch-embedding geometry (IM2COL only): pixels [batch, channels, height, width],
    // a grid_h × grid_w grid of patch × patch patches per image.
    channels: u32,
    height: u32,
    width: u32,
    patch_size: u32,
    grid_h: u32,
    grid_w: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
//#if VEC4_A
@group(0) @binding(1) var<storage, read> a: array<vec4<elem>>;
//#else
@group(0) @binding(1) var<storage, read> a: array<elem>;
//#endif
//#if VEC4_W
@group(0) @binding(2) var<storage, read> w: array<vec4<elem>>;
//#else
@group(0) @binding(2) var<storage, read> w: array<elem>;
//#endif
@group(0) @binding(3) var<storage, read_write> c: array<elem>;
//#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<elem>;
//#endif
//#if RESIDUAL
@group(0) @binding(5) var<storage, read> residual: array<elem>;
//#endif

const THREADS_X: u32 = BN / TN;
const THREADS_Y: u32 = BM / TM;
const THREADS: u32 = THREADS_X * THREADS_Y;

// One k step of each operand, transposed so that a thread reads its TM rows (TN columns)
// at depth kk as TM / 4 (TN / 4) consecutive vec4s: a_tile[kk * BM / 4 + row / 4][row % 4].
var<workgroup> a_tile: array<vec4<f32>, BK * BM / 4u>;
var<workgroup> w_tile: array<vec4<f32>, BK * BN / 4u>;

// Element index of a[row, col].
fn a_index(row: u32, col: u32) -> u32 {
//#if IM2COL
    // row is (image, patch y, patch x); col is (channel, y, x), the order of a Conv2d weight.
    let per_image = p.grid_h * p.grid_w;
    let image = row / per_image;
    let cell = row % per_image;
    let area = p.patch_size * p.patch_size;
    let channel = col / area;
    let y = (cell / p.grid_w) * p.patch_size + (col % area) / p.patch_size;
    let x = (cell % p.grid_w) * p.patch_size + col % p.patch_size;
    return ((image * p.channels + channel) * p.height + y) * p.width + x;
//#else
    return row * p.k + col;
//#endif
}

// a[row, col..col + 4], zero outside the matrix.
fn load_a4(row: u32, col: u32) -> vec4<f32> {
    if (row >= p.m) {
        return vec4(0.0);
    }
//#if VEC4_A
    if (col >= p.k) {
        return vec4(0.0);
    }
    return vec4<f32>(a[a_index(row, col) / 4u]);
//#else
    var v = vec4(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (col + i < p.k) {
            v[i] = f32(a[a_index(row, col + i)]);
        }
    }
    return v;
//#endif
}

// w[row, col..col + 4], zero outside the matrix.
fn load_w4(row: u32, col: u32) -> vec4<f32> {
    if (row >= p.n) {
        return vec4(0.0);
    }
//#if VEC4_W
    if (col >= p.k) {
        return vec4(0.0);
    }
    return vec4<f32>(w[(row * p.k + col) / 4u]);
//#else
    var v = vec4(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (col + i < p.k) {
            v[i] = f32(w[row * p.k + col + i]);
        }
    }
    return v;
//#endif
}

@compute @workgroup_size(THREADS)
fn gemm(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // The grid of blocks may be folded into two dimensions to respect the dispatch limit.
    let blocks_n = (p.n + BN - 1u) / BN;
    let block = group.y * groups.x + group.x;
    if (block >= blocks_n * ((p.m + BM - 1u) / BM)) {
        return;
    }
    let row0 = (block / blocks_n) * BM;
    let col0 = (block % blocks_n) * BN;
    let tx = lid % THREADS_X;
    let ty = lid / THREADS_X;

    var acc: array<array<vec4<f32>, TN / 4u>, TM>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = lid; i < BM * BK / 4u; i += THREADS) {
            let r = i / (BK / 4u);
            let kq = (i % (BK / 4u)) * 4u;
            let v = load_a4(row0 + r, k0 + kq);
            for (var e = 0u; e < 4u; e++) {
                a_tile[(kq + e) * (BM / 4u) + r / 4u][r % 4u] = v[e];
            }
        }
        for (var i = lid; i < BN * BK / 4u; i += THREADS) {
            let r = i / (BK / 4u);
            let kq = (i % (BK / 4u)) * 4u;
            let v = load_w4(col0 + r, k0 + kq);
            for (var e = 0u; e < 4u; e++) {
                w_tile[(kq + e) * (BN / 4u) + r / 4u][r % 4u] = v[e];
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a_regs: array<vec4<f32>, TM / 4u>;
            var w_regs: array<vec4<f32>, TN / 4u>;
            for (var q = 0u; q < TM / 4u; q++) {
                a_regs[q] = a_tile[kk * (BM / 4u) + ty * (TM / 4u) + q];
            }
            for (var q = 0u; q < TN / 4u; q++) {
                w_regs[q] = w_tile[kk * (BN / 4u) + tx * (TN / 4u) + q];
            }
            for (var i = 0u; i < TM; i++) {
                let ai = a_regs[i / 4u][i % 4u];
                for (var q = 0u; q < TN / 4u; q++) {
                    acc[i][q] += ai * w_regs[q];
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let row = row0 + ty * TM + i;
        if (row >= p.m) {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let col = col0 + tx * TN + j;
            if (col >= p.n) {
                break;
            }
            var v = acc[i][j / 4u][j % 4u];
//#if BIAS
            v += f32(bias[col]);
//#endif
            v = activate(v);
//#if RESIDUAL
            v += f32(residual[row * p.n + col]);
//#endif
            c[row * p.n + col] = elem(v);
        }
    }
}

// The activations of vitmsn_kernels::Activation, as transformers computes them.
const ACT_IDENTITY: u32 = 0u;
const ACT_GELU: u32 = 1u;
const ACT_GELU_TANH: u32 = 2u;
const ACT_GELU_FAST: u32 = 3u;
const ACT_QUICK_GELU: u32 = 4u;
const ACT_RELU: u32 = 5u;
const ACT_RELU6: u32 = 6u;
const ACT_RELU2: u32 = 7u;
const ACT_LEAKY_RELU: u32 = 8u;
const ACT_SELU: u32 = 9u;
const ACT_SILU: u32 = 10u;
const ACT_MISH: u32 = 11u;
const ACT_TANH: u32 = 12u;
const ACT_SIGMOID: u32 = 13u;

const SQRT_2_OVER_PI: f32 = 0.7978846;
const FRAC_1_SQRT_2: f32 = 0.70710677;
const SELU_ALPHA: f32 = 1.6732632;
const SELU_SCALE: f32 = 1.050701;

fn activate(x: f32) -> f32 {
    switch ACTIVATION {
        case ACT_GELU: { return 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2)); }
        case ACT_GELU_TANH: { return 0.5 * x * (1.0 + safe_tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))); }
        case ACT_GELU_FAST: { return 0.5 * x * (1.0 + safe_tanh(x * SQRT_2_OVER_PI * (1.0 + 0.044715 * x * x))); }
        case ACT_QUICK_GELU: { return x * sigmoid(1.702 * x); }
        case ACT_RELU: { return max(x, 0.0); }
        case ACT_RELU6: { return clamp(x, 0.0, 6.0); }
        case ACT_RELU2: { return max(x, 0.0) * max(x, 0.0); }
        case ACT_LEAKY_RELU: { return select(0.01 * x, x, x >= 0.0); }
        case ACT_SELU: { return select(SELU_SCALE * SELU_ALPHA * (exp(x) - 1.0), SELU_SCALE * x, x > 0.0); }
        case ACT_SILU: { return x * sigmoid(x); }
        case ACT_MISH: { return x * safe_tanh(select(log(1.0 + exp(x)), x, x > 20.0)); }
        case ACT_TANH: { return safe_tanh(x); }
        case ACT_SIGMOID: { return sigmoid(x); }
        default: { return x; }
    }
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Some drivers compute tanh through exp and return NaN once exp overflows; tanh is ±1 in
// f32 beyond |x| = 10 anyway.
fn safe_tanh(x: f32) -> f32 {
    return tanh(clamp(x, -10.0, 10.0));
}

// erf to about 1 ulp: FreeBSD's s_erff.c (the libm the reference uses), without its
// special cases for NaN, infinities and tiny x, which the general branches cover here.
fn erf(x: f32) -> f32 {
    let ax = abs(x);
    if (ax < 0.84375) {
        let z = x * x;
        let r = 1.2837916613e-01 + z * (-3.2504209876e-01 + z * (-2.8481749818e-02 + z * (-5.7702702470e-03 + z * -2.3763017452e-05)));
        let s = 1.0 + z * (3.9791721106e-01 + z * (6.5022252500e-02 + z * (5.0813062117e-03 + z * (1.3249473704e-04 + z * -3.9602282413e-06))));
        return x + x * (r / s);
    }
    var y: f32;
    if (ax < 1.25) {
        let s = ax - 1.0;
        let pa = -2.3621185683e-03 + s * (4.1485610604e-01 + s * (-3.7220788002e-01 + s * (3.1834661961e-01 + s * (-1.1089469492e-01 + s * (3.5478305072e-02 + s * -2.1663755178e-03)))));
        let qa = 1.0 + s * (1.0642088205e-01 + s * (5.4039794207e-01 + s * (7.1828655899e-02 + s * (1.2617121637e-01 + s * (1.3637083583e-02 + s * 1.1984500103e-02)))));
        y = 8.4506291151e-01 + pa / qa;
    } else if (ax < 6.0) {
        let s = 1.0 / (ax * ax);
        var r: f32;
        var q: f32;
        if (ax < 1.0 / 0.35) {
            r = -9.8649440333e-03 + s * (-6.9385856390e-01 + s * (-1.0558626175e+01 + s * (-6.2375331879e+01 + s * (-1.6239666748e+02 + s * (-1.8460508728e+02 + s * (-8.1287437439e+01 + s * -9.8143291473e+00))))));
            q = 1.0 + s * (1.9651271820e+01 + s * (1.3765776062e+02 + s * (4.3456588745e+02 + s * (6.4538726807e+02 + s * (4.2900814819e+02 + s * (1.0863500214e+02 + s * (6.5702495575e+00 + s * -6.0424413532e-02)))))));
        } else {
            r = -9.8649431020e-03 + s * (-7.9928326607e-01 + s * (-1.7757955551e+01 + s * (-1.6063638306e+02 + s * (-6.3756646729e+02 + s * (-1.0250950928e+03 + s * -4.8351919556e+02)))));
            q = 1.0 + s * (3.0338060379e+01 + s * (3.2579251099e+02 + s * (1.5367296143e+03 + s * (3.1998581543e+03 + s * (2.5530502930e+03 + s * (4.7452853394e+02 + s * -2.2440952301e+01))))));
        }
        // z is ax with its low mantissa bits cleared, so that -z² is exact and the rest
        // of -ax² goes into the second exponential.
        let z = bitcast<f32>(bitcast<u32>(ax) & 0xffffe000u);
        y = 1.0 - exp(-z * z - 0.5625) * exp((z - ax) * (z + ax) + r / q) / ax;
    } else {
        y = 1.0;
    }
    return select(y, -y, x < 0.0);
}
