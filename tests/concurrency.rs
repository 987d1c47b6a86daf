//! Models in a threaded host (issue 18): a loaded model is `Send + Sync`, forwards on
//! many threads at once give the single-thread results bit for bit, and a failed forward
//! leaves the model usable.

mod common;

use std::sync::{Arc, Mutex};
use vitmsn::io::read_inputs;
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
    let model = ViTMSN::from_dir(&case.join("model"), kind, &options).unwrap();
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
        let (mut model, input) = load(kind);
        let reference = bits(&model.forward(&input).unwrap());

        // One model per thread, all running at once.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let (mut own, input) = load(kind);
                    for _ in 0..3 {
                        assert_eq!(bits(&own.forward(&input).unwrap()), reference, "{kind:?}");
                    }
                });
            }
        });

        // One model shared behind a lock, moved between threads.
        let shared = Arc::new(Mutex::new(model));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..3 {
                        let out = shared.lock().unwrap().forward(&input).unwrap();
                        assert_eq!(bits(&out), reference, "{kind:?}");
                    }
                });
            }
        });
    }
}

#[test]
fn a_failed_forward_leaves_the_model_usable() {
    for kind in [BackendKind::Scalar, BackendKind::Cpu] {
        let (mut model, input) = load(kind);
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
