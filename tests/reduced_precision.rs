//! bf16 and int8 on the SIMD backend, on every instruction set this CPU runs, against
//! transformers' f32 outputs on every fixture: within the accuracy a user of a reduced
//! precision is promised (bf16: max relative error 2e-2, cosine ≥ 0.9999; int8: 1e-1 and
//! 0.998), and choosing them where they do not run is refused.

mod common;

use vitmsn::{BackendKind, BackendOptions, ErrorKind, Isa, Precision, Tensor, ViTMSN};

/// `(max relative error, least cosine)` promised for each reduced precision.
fn bounds(precision: Precision) -> (f32, f64) {
    match precision {
        Precision::Bf16 => (2e-2, 0.9999),
        Precision::Int8 => (1e-1, 0.998),
        other => unreachable!("{other:?} is not a reduced CPU precision"),
    }
}

/// The cosine of the angle between two tensors as vectors (1 when both are zero).
fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let dot: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |t: &Tensor| {
        t.data
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na * nb)
    }
}

fn options(precision: Precision, isa: Isa) -> BackendOptions {
    BackendOptions {
        threads: Some(2),
        isa: Some(isa),
        precision: Some(precision),
        ..Default::default()
    }
}

#[test]
fn every_fixture_is_within_the_promised_accuracy_on_every_instruction_set() {
    for precision in [Precision::Bf16, Precision::Int8] {
        let (max_error, min_cosine) = bounds(precision);
        for isa in Isa::supported() {
            let mut failures = Vec::new();
            let (mut worst_error, mut worst_cosine) = (0.0f32, 1.0f64);
            for case in common::cases() {
                let options = options(precision, isa);
                let ours =
                    common::named_outputs(&common::run_case(&case, BackendKind::Cpu, &options));
                let reference = common::expected(&case);
                let name = case.file_name().unwrap().to_string_lossy().to_string();
                for ((tensor, a), (_, b)) in ours.iter().zip(&reference) {
                    let (error, cos) = (common::relative_error(a, b), cosine(a, b));
                    worst_error = worst_error.max(error);
                    worst_cosine = worst_cosine.min(cos);
                    if !(error <= max_error && cos >= min_cosine) {
                        failures.push(format!("{name}/{tensor}: error {error:e}, cosine {cos}"));
                    }
                }
            }
            let what = format!("{} on {}", precision.name(), isa.name());
            assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
            eprintln!("{what}: worst relative error {worst_error:e}, least cosine {worst_cosine}");
        }
    }
}

/// The reduced precisions keep the engine's other promise: the thread count changes no bit.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let case = common::fixtures_dir().join("base_all_outputs");
    for precision in [Precision::Bf16, Precision::Int8] {
        let run = |threads| {
            let options = BackendOptions {
                threads: Some(threads),
                ..options(precision, Isa::detect())
            };
            common::named_outputs(&common::run_case(&case, BackendKind::Cpu, &options))
        };
        let one = run(1);
        assert!(one == run(3), "{precision:?}: 3 threads differ from 1");
    }
}

#[test]
fn a_reduced_precision_runs_on_its_own_backend_only() {
    let model = common::fixtures_dir().join("base_all_outputs/model");
    for (precision, elsewhere) in [
        (Precision::Bf16, BackendKind::Scalar),
        (Precision::Int8, BackendKind::Scalar),
        (Precision::F16, BackendKind::Cpu),
    ] {
        let err = ViTMSN::builder()
            .backend(elsewhere)
            .precision(precision)
            .load(&model)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOption, "{err}");
        let message = err.to_string();
        assert!(message.contains(precision.name()), "{message}");
    }
    let bf16 = ViTMSN::builder()
        .backend(BackendKind::Cpu)
        .precision(Precision::Bf16)
        .load(&model)
        .unwrap();
    assert_eq!(bf16.precision(), Precision::Bf16);
    assert!(format!("{bf16:?}").contains("Bf16"));
}
