//! The crate as a dependent links it: the builder, loading a classifier as its backbone,
//! error kinds a caller can match, and checked tensors.

mod common;

use vitmsn::internals::io::read_inputs;
use vitmsn::{BackendKind, ErrorKind, Feature, ForwardInput, Precision, Tensor, ViTMSN};

fn classifier_dir() -> std::path::PathBuf {
    common::fixtures_dir().join("classifier_ce/model")
}

#[test]
fn a_classifier_loaded_as_its_backbone_gives_the_backbones_hidden_states() {
    let full = ViTMSN::builder()
        .backend(BackendKind::Scalar)
        .load(classifier_dir())
        .unwrap();
    let backbone = ViTMSN::builder()
        .backend(BackendKind::Scalar)
        .backbone_only(true)
        .load(classifier_dir())
        .unwrap();
    assert!(full.is_classifier());
    assert!(!backbone.is_classifier());

    let case = common::fixtures_dir().join("classifier_ce");
    // The case's labels are the classifier's; the backbone takes pixels only.
    let input = read_inputs(&case.join("inputs.safetensors"), &full.input_spec(false)).unwrap();
    let input = ForwardInput {
        labels: None,
        ..input
    };
    let out = backbone.forward(&input).unwrap();
    assert!(out.logits.is_none());
    let last = out.last_hidden_state.expect("a backbone's output");
    let [batch, tokens, hidden] = last.shape[..] else {
        panic!("last_hidden_state has shape {:?}", last.shape)
    };

    // Its CLS rows are the classifier's CLS embeddings, bit for bit.
    let cls = full
        .embed(input.pixel_values.clone(), &[Feature::Cls])
        .unwrap();
    let cls = cls.get(Feature::Cls).unwrap();
    assert_eq!(cls.shape, [batch, hidden]);
    for b in 0..batch {
        assert_eq!(
            &last.data[b * tokens * hidden..][..hidden],
            &cls.data[b * hidden..][..hidden]
        );
    }
}

#[test]
fn errors_say_what_kind_of_problem_they_are() {
    let missing = ViTMSN::builder().load("no/such/checkpoint").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Io, "{missing}");

    let model = ViTMSN::builder()
        .backend(BackendKind::Scalar)
        .load(classifier_dir())
        .unwrap();
    let wrong_channels = ForwardInput {
        pixel_values: Tensor::try_new(vec![1, 1, 32, 32], vec![0.0; 1024]).unwrap(),
        ..Default::default()
    };
    let bad_input = model.forward(&wrong_channels).unwrap_err();
    assert_eq!(bad_input.kind(), ErrorKind::Input, "{bad_input}");

    let unknown = "tpu".parse::<BackendKind>().unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::InvalidOption, "{unknown}");
    let unknown = "int4".parse::<Precision>().unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::InvalidOption, "{unknown}");

    let folder = common::TempDir::new("library-bad-config");
    std::fs::write(
        folder.path().join("config.json"),
        "{\"hidden_size\": \"wide\"}",
    )
    .unwrap();
    let bad_checkpoint = ViTMSN::builder().load(folder.path()).unwrap_err();
    assert_eq!(
        bad_checkpoint.kind(),
        ErrorKind::Checkpoint,
        "{bad_checkpoint}"
    );
}

#[test]
fn tensors_refuse_data_that_does_not_fit_their_shape() {
    assert!(Tensor::try_new(vec![2, 3], vec![0.0; 6]).is_ok());
    let short = Tensor::try_new(vec![2, 3], vec![0.0; 5]).unwrap_err();
    assert_eq!(short.kind(), ErrorKind::Input);
    let overflowing = Tensor::try_new(vec![usize::MAX, 2], Vec::new()).unwrap_err();
    assert_eq!(overflowing.kind(), ErrorKind::Input);
}

/// bf16 weights are read from an f32 checkpoint block by block: a tensor longer than a
/// block, with a partial last block, gives what rounding the whole tensor gives.
#[test]
fn bf16_weights_read_in_blocks_equal_the_whole_tensor_rounded() {
    let folder = common::TempDir::new("library-bf16-blocks");
    let values: Vec<f32> = (0..3 * 70_001)
        .map(|i| (i as f32 * 0.37).sin() * 3.0)
        .collect();
    let tensor = Tensor::new(vec![3, 70_001], values);
    let file = folder.path().join("model.safetensors");
    vitmsn::internals::io::write_tensors(&file, &[("w", &tensor)], None).unwrap();
    let weights = vitmsn::Weights::from_dir(folder.path()).unwrap();
    let whole = weights.get("w", &[3, 70_001]).unwrap();
    assert_eq!(
        weights.get_bf16("w", &[3, 70_001]).unwrap(),
        vitmsn_kernels::bf16::from_f32_slice(&whole)
    );
}
