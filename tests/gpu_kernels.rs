//! Each GPU kernel against its `vitmsn_kernels::scalar` reference on random small shapes,
//! tails included (sizes that are not multiples of any tile or vector width), drawn from a
//! fixed seed so that every run checks the same cases, and on the shapes of a real model.
//! Few cases each: on a CPU adapter (lavapipe) every case is slow.

#![cfg(feature = "gpu")]

mod common;

use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseResult, TestRunner};
use std::cell::RefCell;
use std::sync::Arc;
use vitmsn::internals::backend::Backend;
use vitmsn::internals::graph::{ConstData, ConstRole, Constant, Graph, Op};
use vitmsn::internals::plan::{Plan, Slot};
use vitmsn::Precision;
use vitmsn::{BackendKind, BackendOptions, Tensor};
use vitmsn_kernels::{scalar, Activation, AttentionShape, Epilogue};

/// A GPU backend that runs one op at a time, shared by the cases of one test (created
/// and dropped on the test's thread: wgpu keeps thread-local state).
struct Gpu {
    backend: Arc<dyn Backend>,
    precision: Precision,
}

impl Gpu {
    /// `None` when the test is to be skipped (see `common::gpu_ready`).
    fn new(precision: Precision) -> Option<Self> {
        let options = BackendOptions {
            precision: Some(precision),
            ..Default::default()
        };
        common::gpu_ready(&options).then(|| Self {
            backend: vitmsn::internals::backend::create(BackendKind::Gpu, &options)
                .unwrap()
                .into(),
            precision,
        })
    }

    /// Runs `op` with `constants` as its weights (by `ConstId`) and `inputs` as its inputs
    /// (in order), as the executor would; returns its outputs.
    fn run(
        &mut self,
        op: Op,
        constants: &[&[f32]],
        inputs: &[&[f32]],
        output_sizes: &[usize],
    ) -> Vec<Vec<f32>> {
        let constants = constants
            .iter()
            .enumerate()
            .map(|(i, data)| Constant {
                name: format!("constant {i}"),
                data: ConstData::F32(data.to_vec()),
                role: ConstRole::Vector,
            })
            .collect();
        Arc::get_mut(&mut self.backend)
            .expect("no workspace outlives a case")
            .load_constants(constants)
            .unwrap();
        let mut graph = Graph::default();
        let values: Vec<usize> = inputs
            .iter()
            .enumerate()
            .map(|(i, data)| graph.input(&format!("input {i}"), data.len()))
            .collect();
        let outputs = graph.op_multi(op.clone(), &values, output_sizes);
        for (i, (&value, &size)) in outputs.iter().zip(output_sizes).enumerate() {
            graph.output(format!("output {i}"), value, vec![size]);
        }
        let plan = Plan::new(&graph);
        let slots =
            |values: &[usize]| -> Vec<Slot> { values.iter().map(|&v| plan.slot_of[v]).collect() };
        let mut workspace = Arc::clone(&self.backend).workspace();
        workspace.prepare(&graph, &plan).unwrap();
        for (slot, data) in slots(&values).into_iter().zip(inputs) {
            workspace.write(slot, data).unwrap();
        }
        workspace
            .run(&op, &slots(&values), &slots(&outputs))
            .unwrap();
        let requests: Vec<(Slot, usize)> = slots(&outputs)
            .into_iter()
            .zip(output_sizes.iter().copied())
            .collect();
        workspace.read(&requests).unwrap()
    }
}

/// Runs `check` on `cases` values of `strategy` with one GPU, unless there is none.
fn check_cases<S: Strategy>(
    precision: Precision,
    cases: u32,
    strategy: S,
    check: impl Fn(&mut Gpu, S::Value) -> TestCaseResult,
) {
    let Some(gpu) = Gpu::new(precision) else {
        return;
    };
    let gpu = RefCell::new(gpu);
    let config = ProptestConfig {
        rng_seed: RngSeed::Fixed(0x6770),
        ..ProptestConfig::with_cases(cases)
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, |value| check(&mut gpu.borrow_mut(), value)) {
        panic!("{e}");
    }
}

/// `len` values in [-scale, scale), reproducible from `seed` (xorshift).
fn random_values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    vitmsn_kernels::rng::Rng::values(seed, len, scale)
}

/// The f32 shaders' bound, relative to max(1, max|reference|): about 5× the worst error
/// measured on lavapipe over every case here, 5.7e-7 (attention at 197 tokens; linear
/// 1.6e-7, layer norm 3.8e-7, probabilities 1.2e-7).
const F32_TOLERANCE: f32 = 3e-6;
/// The f16 shaders' bound (f16 storage, f32 arithmetic): about 5× the worst measured on
/// lavapipe, 8.4e-4 (linear; attention at 197 tokens 5.4e-4).
const F16_TOLERANCE: f32 = 4e-3;

/// Fails the case when `ours` is further than `tolerance` from `reference`, relative to
/// max(1, max|reference|).
fn assert_close(what: &str, ours: &[f32], reference: &[f32], tolerance: f32) -> TestCaseResult {
    let err = common::relative_error(
        &Tensor::new(vec![ours.len()], ours.to_vec()),
        &Tensor::new(vec![reference.len()], reference.to_vec()),
    );
    prop_assert!(
        err <= tolerance,
        "{what}: relative error {err:e} over {tolerance:e}"
    );
    Ok(())
}

/// A `Linear` on the GPU against `scalar::gemm`.
fn check_linear(
    gpu: &mut Gpu,
    tolerance: f32,
    (m, n, k, activation, bias, residual, seed): LinearCase,
) -> TestCaseResult {
    let a = random_values(seed, m * k, 1.0);
    let w = random_values(seed + 1, n * k, 1.0);
    let b = random_values(seed + 2, n, 1.0);
    let r = random_values(seed + 3, m * n, 1.0);
    let op = Op::Linear {
        m,
        n,
        k,
        weight: 0,
        bias: bias.then_some(1),
        activation,
        residual,
    };
    let inputs: Vec<&[f32]> = if residual { vec![&a, &r] } else { vec![&a] };
    let ours = gpu.run(op, &[&w, &b], &inputs, &[m * n]);
    let mut reference = vec![0.0; m * n];
    let epilogue = Epilogue {
        bias: bias.then_some(b.as_slice()),
        activation,
        residual: residual.then_some(r.as_slice()),
    };
    scalar::gemm(m, n, k, &a, &w, &mut reference, &epilogue);
    assert_close(
        &format!("{:?} linear", gpu.precision),
        &ours[0],
        &reference,
        tolerance,
    )
}

/// m, n, k, activation, bias, residual, seed.
type LinearCase = (usize, usize, usize, Activation, bool, bool, u64);

fn linear_cases(max_size: usize) -> impl Strategy<Value = LinearCase> {
    let size = 1..=max_size;
    (
        size.clone(),
        size.clone(),
        size,
        prop::sample::select(Activation::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
}

#[test]
fn linear_matches_reference_with_every_epilogue() {
    check_cases(Precision::F32, 24, linear_cases(70), |gpu, case| {
        check_linear(gpu, F32_TOLERANCE, case)
    });
}

#[test]
fn linear_in_f16_stays_within_f16_rounding() {
    check_cases(Precision::F16, 8, linear_cases(40), |gpu, case| {
        check_linear(gpu, F16_TOLERANCE, case)
    });
}

/// Large enough for the 128×128 GEMM blocks (at least 128 of them), with tails in every
/// dimension: k = 13 is below one 16-deep step and read by scalars; k = 68 takes four
/// whole steps and a partial one, read as vec4s (k divisible by 4), the variant that a
/// batch of 8 vit-msn-small images runs in its MLP.
#[test]
fn linear_with_large_blocks_matches_reference() {
    let Some(mut gpu) = Gpu::new(Precision::F32) else {
        return;
    };
    for (k, seed) in [(13, 7), (68, 8)] {
        let case = (1540, 1290, k, Activation::Gelu, true, true, seed);
        check_linear(&mut gpu, F32_TOLERANCE, case).unwrap();
    }
}

#[test]
fn linear_with_large_blocks_in_f16_stays_within_f16_rounding() {
    let Some(mut gpu) = Gpu::new(Precision::F16) else {
        return;
    };
    let case = (1540, 1290, 68, Activation::GeluTanh, true, true, 9);
    check_linear(&mut gpu, F16_TOLERANCE, case).unwrap();
}

/// The 64×64 blocks at their edges: one below, at and one above the block in m and n, and
/// k around the 32-deep step, odd (scalar reads) and divisible by 4 (vec4 reads).
#[test]
fn linear_at_the_small_blocks_edges_matches_reference() {
    let Some(mut gpu) = Gpu::new(Precision::F32) else {
        return;
    };
    let cases = [
        (63, 65, 31),
        (64, 64, 32),
        (65, 63, 33),
        (129, 67, 36),
        (1, 1, 1),
        (67, 129, 68),
    ];
    for (i, (m, n, k)) in cases.into_iter().enumerate() {
        let activation = Activation::ALL[i * 5 % Activation::ALL.len()];
        let case = (m, n, k, activation, i % 2 == 0, i % 3 == 0, 20 + i as u64);
        check_linear(&mut gpu, F32_TOLERANCE, case).unwrap();
    }
}

#[test]
fn patch_embedding_matches_im2col_and_gemm() {
    let patches = prop::sample::select(vec![1usize, 2, 3, 4, 5, 8]);
    let strategy = (
        1usize..=2,
        1usize..=3,
        patches,
        1usize..=3,
        1usize..=3,
        0usize..3,
        0usize..3,
        1usize..=40,
        any::<u64>(),
    );
    check_cases(
        Precision::F32,
        8,
        strategy,
        |gpu, (batch, channels, patch, grid_h, grid_w, extra_h, extra_w, dim, seed)| {
            // Pixels past the last whole patch are dropped, as the convolution drops them.
            let (height, width) = (
                grid_h * patch + extra_h % patch,
                grid_w * patch + extra_w % patch,
            );
            let (rows, k) = (batch * grid_h * grid_w, channels * patch * patch);
            let pixels = random_values(seed, batch * channels * height * width, 1.0);
            let weight = random_values(seed + 1, dim * k, 1.0);
            let bias = random_values(seed + 2, dim, 1.0);
            let op = Op::PatchEmbed {
                batch,
                channels,
                height,
                width,
                patch,
                dim,
                weight: 0,
                bias: 1,
            };
            let ours = gpu.run(op, &[&weight, &bias], &[&pixels], &[rows * dim]);
            let mut patches = vec![0.0; rows * k];
            scalar::im2col(batch, channels, height, width, patch, &pixels, &mut patches);
            let mut reference = vec![0.0; rows * dim];
            scalar::gemm(
                rows,
                dim,
                k,
                &patches,
                &weight,
                &mut reference,
                &Epilogue {
                    bias: Some(&bias),
                    ..Epilogue::NONE
                },
            );
            assert_close("patch embedding", &ours[0], &reference, F32_TOLERANCE)
        },
    );
}

#[test]
fn attention_matches_reference_with_head_scales_and_probs() {
    let head_scales = prop::collection::vec(prop::sample::select(vec![0.0f32, 0.5, 1.0, 1.7]), 6);
    let strategy = (
        1usize..=2,
        1usize..=80,
        1usize..=3,
        1usize..=17,
        1usize..=2,
        any::<usize>(),
        any::<bool>(),
        head_scales,
        any::<u64>(),
    );
    check_cases(
        Precision::F32,
        16,
        strategy,
        |gpu, (batch, tokens, heads, head_dim, layers, layer_pick, probs, head_scales, seed)| {
            let layer = layer_pick % layers;
            let shape = AttentionShape {
                batch,
                tokens,
                heads,
                head_dim,
            };
            let hidden = heads * head_dim;
            let qkv = random_values(seed, batch * tokens * 3 * hidden, 2.0);
            let head_mask = &head_scales[..layers * heads];
            let mut sizes = vec![batch * tokens * hidden];
            if probs {
                sizes.push(batch * heads * tokens * tokens);
            }
            let ours = gpu.run(
                Op::Attention {
                    shape,
                    layer,
                    probs,
                },
                &[],
                &[&qkv, head_mask],
                &sizes,
            );
            let mut context = vec![0.0; sizes[0]];
            let mut reference_probs = vec![0.0; batch * heads * tokens * tokens];
            let layer_scales = &head_mask[layer * heads..(layer + 1) * heads];
            scalar::attention(
                shape,
                &qkv,
                layer_scales,
                &mut context,
                Some(&mut reference_probs),
            );
            assert_close("context", &ours[0], &context, F32_TOLERANCE)?;
            if probs {
                assert_close("probabilities", &ours[1], &reference_probs, F32_TOLERANCE)?;
            }
            Ok(())
        },
    );
}

/// One head of vit-msn-small and of -base: 197 tokens of 64, more queries than one
/// workgroup's tile, with and without probabilities, in f32 and f16.
#[test]
fn attention_at_the_models_shape_matches_reference() {
    let shape = AttentionShape {
        batch: 1,
        tokens: 197,
        heads: 2,
        head_dim: 64,
    };
    let head_scale = [1.0, 0.5];
    let qkv = random_values(31, 197 * 3 * 128, 2.0);
    let mut context = vec![0.0; 197 * 128];
    let mut probs = vec![0.0; 2 * 197 * 197];
    scalar::attention(shape, &qkv, &head_scale, &mut context, Some(&mut probs));
    for (precision, tolerance) in [
        (Precision::F32, F32_TOLERANCE),
        (Precision::F16, F16_TOLERANCE),
    ] {
        let Some(mut gpu) = Gpu::new(precision) else {
            continue;
        };
        for with_probs in [false, true] {
            let mut sizes = vec![context.len()];
            if with_probs {
                sizes.push(probs.len());
            }
            let op = Op::Attention {
                shape,
                layer: 0,
                probs: with_probs,
            };
            let ours = gpu.run(op, &[], &[&qkv, &head_scale], &sizes);
            let what = format!("{precision:?} attention");
            assert_close(&what, &ours[0], &context, tolerance).unwrap();
            if with_probs {
                assert_close(&what, &ours[1], &probs, tolerance).unwrap();
            }
        }
    }
}

#[test]
fn layer_norm_matches_reference() {
    let strategy = (
        1usize..=9,
        1usize..=600,
        prop::sample::select(vec![1e-12f32, 1e-5, 0.05]),
        any::<u64>(),
    );
    check_cases(
        Precision::F32,
        8,
        strategy,
        |gpu, (rows, dim, eps, seed)| {
            let x = random_values(seed, rows * dim, 3.0);
            let gamma = random_values(seed + 1, dim, 1.5);
            let beta = random_values(seed + 2, dim, 1.0);
            let ours = gpu.run(
                Op::LayerNorm {
                    rows,
                    dim,
                    gamma: 0,
                    beta: 1,
                    eps,
                },
                &[&gamma, &beta],
                &[&x],
                &[rows * dim],
            );
            let mut reference = vec![0.0; rows * dim];
            scalar::layer_norm(dim, &x, &gamma, &beta, eps, &mut reference);
            assert_close("layer norm", &ours[0], &reference, F32_TOLERANCE)
        },
    );
}

#[test]
fn embedding_ops_match_reference_exactly() {
    check_cases(
        Precision::F32,
        8,
        (1usize..=3, 1usize..=20, 1usize..=40, any::<u64>()),
        |gpu, (batch, patches, dim, seed)| {
            let rows = batch * patches;
            let embeddings = random_values(seed, rows * dim, 1.0);
            let mask: Vec<f32> = random_values(seed + 1, rows, 1.0)
                .iter()
                .map(|&v| if v > 0.0 { 1.0 } else { 0.0 })
                .collect();
            let token = random_values(seed + 2, dim, 1.0);
            let position = random_values(seed + 3, (patches + 1) * dim, 1.0);

            let ours = gpu.run(
                Op::MaskBlend {
                    rows,
                    dim,
                    mask_token: 0,
                },
                &[&token],
                &[&embeddings, &mask],
                &[rows * dim],
            );
            let mut reference = vec![0.0; rows * dim];
            scalar::mask_blend(dim, &embeddings, &mask, &token, &mut reference);
            assert_close("mask blend", &ours[0], &reference, 0.0)?;

            let tokens = patches + 1;
            let op = Op::ClsPosition {
                batch,
                patches,
                dim,
                cls: 0,
            };
            let ours = gpu.run(
                op,
                &[&token],
                &[&embeddings, &position],
                &[batch * tokens * dim],
            );
            let mut reference = vec![0.0; batch * tokens * dim];
            scalar::cls_and_position(
                batch,
                patches,
                dim,
                &embeddings,
                &token,
                &position,
                &mut reference,
            );
            assert_close("cls and position", &ours[0], &reference, 0.0)?;

            let ours = gpu.run(
                Op::SelectCls {
                    batch,
                    tokens: patches,
                    dim,
                },
                &[],
                &[&embeddings],
                &[batch * dim],
            );
            let mut reference = vec![0.0; batch * dim];
            scalar::select_cls(batch, patches, dim, &embeddings, &mut reference);
            assert_close("select cls", &ours[0], &reference, 0.0)
        },
    );
}

/// One workgroup per row: 70 000 rows exceed the 65 535 workgroups a grid dimension
/// usually allows, so the grid is folded into two dimensions.
#[test]
fn layer_norm_with_a_folded_grid_matches_reference() {
    let Some(mut gpu) = Gpu::new(Precision::F32) else {
        return;
    };
    let (rows, dim, eps) = (70_000, 3, 1e-5);
    let x = random_values(1, rows * dim, 3.0);
    let (gamma, beta) = (random_values(2, dim, 1.5), random_values(3, dim, 1.0));
    let op = Op::LayerNorm {
        rows,
        dim,
        gamma: 0,
        beta: 1,
        eps,
    };
    let ours = gpu.run(op, &[&gamma, &beta], &[&x], &[rows * dim]);
    let mut reference = vec![0.0; rows * dim];
    scalar::layer_norm(dim, &x, &gamma, &beta, eps, &mut reference);
    // Near-constant rows of three amplify the rounding of a differently ordered mean:
    // 7.1e-6 measured on lavapipe, bound about 5× that.
    assert_close("layer norm", &ours[0], &reference, 3.5e-5).unwrap();
}
