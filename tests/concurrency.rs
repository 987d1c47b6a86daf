//! Models in a threaded host: a loaded model is `Send + Sync`, forwards on one model
//! from many threads at once give the single-thread results bit for bit, and a failed forward
//! leaves the model usable.

mod common;

use std::sync::Arc;
use vitmsn::internals::io::read_inputs;
use vitmsn::pipeline::Pipeline;
use vitmsn::{BackendKind, BackendOptions, ForwardInput, ForwardOutput, Tensor, ViTMSN};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn models_and_pipelines_are_send_and_sync() {
    assert_send_sync::<ViTMSN>();
    assert_send_sync::<Pipeline>();
}

fn load(kind: BackendKind) -> (ViTMSN, ForwardInput) {
    let case = common::fixtures_dir().join("classifier_ce");
    let options = BackendOptions {
        threads: (kind == BackendKind::Cpu).then_some(2),
        ..Default::default()
    };
    let model = ViTMSN::from_dir(case.join("model"), kind, &options).unwrap();
    let mut input =
        read_inputs(&case.join("inputs.safetensors"), &model.input_spec(false)).unwrap();
    input.output_hidden_states = true;
    input.output_attentions = true;
    (model, input)
}

/// Every output value as bits, so equality is bit for bit.
fn bits(out: &ForwardOutput) -> Vec<u32> {
    common::named_outputs(out)
        .iter()
        .flat_map(|(_, t)| t.data.iter().map(|v| v.to_bits()))
        .collect()
}

#[test]
fn forwards_on_many_threads_match_the_single_thread_results_bit_for_bit() {
    for kind in [BackendKind::Scalar, BackendKind::Cpu] {
        let (model, input) = load(kind);
        let reference = bits(&model.forward(&input).unwrap());
        // A second shape, so that workspaces prepared for one graph also run the other.
        let plain = ForwardInput {
            output_hidden_states: false,
            output_attentions: false,
            ..input.clone()
        };
        let plain_reference = bits(&model.forward(&plain).unwrap());

        // One model shared by four threads, all running at once.
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (model, input, plain) = (&model, &input, &plain);
                let (reference, plain_reference) = (&reference, &plain_reference);
                scope.spawn(move || {
                    for i in 0..4 {
                        if (thread + i) % 2 == 0 {
                            assert_eq!(&bits(&model.forward(input).unwrap()), reference);
                        } else {
                            assert_eq!(&bits(&model.forward(plain).unwrap()), plain_reference);
                        }
                    }
                });
            }
        });

        // One model per thread, and one moved between threads.
        let shared = Arc::new(model);
        let moved = Arc::clone(&shared);
        let reference = &reference;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let (own, input) = load(kind);
                assert_eq!(&bits(&own.forward(&input).unwrap()), reference, "{kind:?}");
            });
            let input = &input;
            scope.spawn(move || {
                assert_eq!(&bits(&moved.forward(input).unwrap()), reference, "{kind:?}");
            });
        });
    }
}

#[test]
fn a_failed_forward_leaves_the_model_usable() {
    for kind in [BackendKind::Scalar, BackendKind::Cpu] {
        let (model, input) = load(kind);
        let reference = bits(&model.forward(&input).unwrap());
        let wrong_size = ForwardInput {
            pixel_values: Tensor::new(vec![1, 3, 8, 8], vec![0.0; 192]),
            ..Default::default()
        };
        let too_many_labels = ForwardInput {
            labels: Some(vitmsn::Labels::Classes(vec![0; 7])),
            ..input.clone()
        };
        for bad in [&wrong_size, &too_many_labels] {
            assert!(model.forward(bad).is_err(), "{kind:?}");
            assert_eq!(bits(&model.forward(&input).unwrap()), reference, "{kind:?}");
        }
    }
}
