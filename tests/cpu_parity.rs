//! The SIMD backend, with the kernels of every instruction set this CPU runs (an AVX-512
//! machine also checks the AVX2 kernels a Zen 3 runs), against transformers on every
//! fixture, and against itself across thread counts.

mod common;

use vitmsn::{BackendKind, BackendOptions, Isa};

fn options(isa: Isa, threads: usize) -> BackendOptions {
    BackendOptions {
        threads: Some(threads),
        isa: Some(isa),
        ..Default::default()
    }
}

#[test]
fn every_fixture_matches_transformers_within_1e_4_on_one_and_two_threads() {
    for isa in Isa::supported() {
        for n in [1, 2] {
            common::check_all_cases(BackendKind::Cpu, &options(isa, n), 1e-4);
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let run = |case: &std::path::Path, isa, n| {
        common::named_outputs(&common::run_case(case, BackendKind::Cpu, &options(isa, n)))
    };
    for isa in Isa::supported() {
        for case in common::cases() {
            let one = run(&case, isa, 1);
            for n in [2, 3] {
                assert!(
                    one == run(&case, isa, n),
                    "{} with {}: {n} threads differ from 1",
                    case.display(),
                    isa.name()
                );
            }
        }
    }
}

/// A generated model at real sequence length (197 tokens, 64-wide heads), with every
/// output option, against the scalar reference.
#[test]
fn matches_the_scalar_backend_on_a_full_size_sequence() {
    use vitmsn::internals::backend;
    use vitmsn::internals::weights::Weights;
    use vitmsn::{ForwardInput, Tensor, ViTMSN, ViTMSNConfig};
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
        let model = ViTMSN::new(
            config.clone(),
            &weights,
            backend::create(kind, options).unwrap(),
        )
        .unwrap();
        common::named_outputs(&model.forward(&input).unwrap())
    };
    let reference = run(BackendKind::Scalar, &BackendOptions::default());
    let names = |outputs: &[(String, Tensor)]| -> Vec<String> {
        outputs.iter().map(|(name, _)| name.clone()).collect()
    };
    let mut one_thread = Vec::new();
    for (isa, n) in Isa::supported()
        .into_iter()
        .flat_map(|isa| [(isa, 1), (isa, 2)])
    {
        let ours = run(BackendKind::Cpu, &options(isa, n));
        assert_eq!(names(&ours), names(&reference), "{} outputs", isa.name());
        for ((name, ours), (_, expected)) in ours.iter().zip(&reference) {
            let scale = expected.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = ours
                .data
                .iter()
                .zip(&expected.data)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                scale > 0.0 && diff <= 1e-4 * scale,
                "{name} with {} on {n} threads: {diff:e} of {scale:e}",
                isa.name()
            );
        }
        if n == 1 {
            one_thread.push((isa, ours));
        }
    }
    // Each instruction set runs its own kernels: were two of them to give the same bits
    // everywhere, dispatch would have fallen back to one set's code.
    for (i, (isa, ours)) in one_thread.iter().enumerate() {
        for (other, theirs) in &one_thread[i + 1..] {
            assert!(
                ours != theirs,
                "{} and {} gave the same bits in every output",
                isa.name(),
                other.name()
            );
        }
    }
}
