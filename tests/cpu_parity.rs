//! The SIMD backend against transformers on every fixture, and against itself across
//! thread counts.

mod common;

use vitmsn::{BackendKind, BackendOptions};

fn threads(n: usize) -> BackendOptions {
    BackendOptions {
        threads: Some(n),
        ..Default::default()
    }
}

#[test]
fn every_fixture_matches_transformers_within_1e_4_on_one_and_two_threads() {
    for n in [1, 2] {
        common::check_all_cases(BackendKind::Cpu, &threads(n), 1e-4);
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for case in common::cases() {
        let one = common::named_outputs(&common::run_case(&case, BackendKind::Cpu, &threads(1)));
        for n in [2, 3] {
            let many =
                common::named_outputs(&common::run_case(&case, BackendKind::Cpu, &threads(n)));
            assert!(one == many, "{}: {n} threads differ from 1", case.display());
        }
    }
}

/// A generated model at real sequence length (197 tokens, 64-wide heads), with every
/// output option, against the scalar reference.
#[test]
fn matches_the_scalar_backend_on_a_full_size_sequence() {
    use vitmsn::weights::Weights;
    use vitmsn::{backend, ForwardInput, Tensor, ViTMSN, ViTMSNConfig};
    let config = ViTMSNConfig {
        hidden_size: 192,
        num_hidden_layers: 2,
        num_attention_heads: 3,
        intermediate_size: 500,
        ..Default::default()
    };
    let weights = Weights::random(7);
    let pixels: Vec<f32> = (0..2 * 3 * 224 * 224usize)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let input = ForwardInput {
        pixel_values: Tensor::new(vec![2, 3, 224, 224], pixels),
        bool_masked_pos: Some((0..2 * 196).map(|i| i % 5 == 0).collect()),
        head_mask: Some(Tensor::new(vec![3], vec![1.0, 0.0, 0.5])),
        output_attentions: true,
        output_hidden_states: true,
        ..Default::default()
    };
    let run = |kind, options: &BackendOptions| {
        let mut model = ViTMSN::new(
            config.clone(),
            &weights,
            backend::create(kind, options).unwrap(),
        )
        .unwrap();
        common::named_outputs(&model.forward(&input).unwrap())
    };
    let reference = run(BackendKind::Scalar, &BackendOptions::default());
    for n in [1, 2] {
        for ((name, ours), (_, expected)) in
            run(BackendKind::Cpu, &threads(n)).iter().zip(&reference)
        {
            let scale = expected.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = ours
                .data
                .iter()
                .zip(&expected.data)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                scale > 0.0 && diff <= 1e-4 * scale,
                "{name} on {n} threads: {diff:e} of {scale:e}"
            );
        }
    }
}
