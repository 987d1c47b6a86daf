//! Every activation in transformers' `ACT2FN` against its values there
//! (`tests/fixtures/activations/act2fn.safetensors`, written by tools/make_fixtures.py):
//! the reference `Activation::apply` and the kernels of every instruction set this CPU
//! runs. A name vitmsn has no activation for must be refused, not approximated.

mod common;

use vitmsn::internals::safetensors_file::SafetensorsFile;
use vitmsn::Isa;
use vitmsn_kernels::activation::activation_inplace;
use vitmsn_kernels::Activation;

/// transformers' activations that vitmsn refuses (`hidden_act` fails to load): clipped,
/// Laplace, parametric and pure-Python variants no ViTMSN checkpoint uses.
const REFUSED: [&str; 7] = [
    "gelu_10",
    "gelu_accurate",
    "gelu_python",
    "gelu_python_tanh",
    "laplace",
    "prelu",
    "xielu",
];

/// How far ours may be from transformers' f32 values: `relative` units of f32 epsilon of
/// the value, plus `cancelling` units of epsilon·|x| for the GELUs, whose f32 formulas
/// (PyTorch's and ours) cancel in 1 + erf and 1 + tanh for negative x. Each is the worst
/// error measured over the fixture's 883 points, on the reference and the AVX2 kernels,
/// times about 1.5; the measured worst is in the comment. The relu family matched
/// PyTorch bit for bit.
fn tolerance(act: Activation) -> (f32, f32) {
    match act {
        Activation::Identity
        | Activation::Relu
        | Activation::Relu6
        | Activation::Relu2
        | Activation::LeakyRelu => (0.0, 0.0),
        Activation::Gelu => (0.0, 2.0),      // 1.28
        Activation::GeluTanh => (0.0, 1.5),  // 0.96
        Activation::GeluFast => (0.0, 1.5),  // 0.96
        Activation::QuickGelu => (2.3, 0.0), // 1.51
        Activation::Selu => (1.4, 0.0),      // 0.91
        Activation::Silu => (2.0, 0.0),      // 1.28
        Activation::Mish => (4.5, 0.0),      // 2.86
        Activation::Tanh => (2.1, 0.0),      // 1.36
        Activation::Sigmoid => (2.0, 0.0),   // 1.35
    }
}

#[test]
fn every_act2fn_activation_matches_transformers_or_is_refused() {
    let path = common::fixtures_dir().join("activations/act2fn.safetensors");
    let file = SafetensorsFile::open(&path).unwrap();
    let tensor = |name: &str| file.f32_data(&file.tensors[name], name).unwrap();
    let x = tensor("x");
    let mut names: Vec<&String> = file.tensors.keys().filter(|n| *n != "x").collect();
    names.sort();
    let mut checked = Vec::new();
    for name in names {
        let Some(act) = Activation::from_name(name) else {
            assert!(REFUSED.contains(&name.as_str()), "{name}: not in REFUSED");
            continue;
        };
        let want = tensor(name);
        let (relative, cancelling) = tolerance(act);
        for isa in Isa::supported() {
            let mut got = x.clone();
            activation_inplace(isa, act, &mut got);
            for ((&x, &got), &want) in x.iter().zip(&got).zip(&want) {
                // Below 1e-36 either side may flush to 0 (or differ in subnormals).
                if got == want || got.abs() < 1e-36 && want.abs() < 1e-36 {
                    continue;
                }
                let err = (got - want).abs();
                let bound = f32::EPSILON * (relative * want.abs() + cancelling * x.abs());
                assert!(
                    err <= bound,
                    "{name} on {}: at {x}, {got} against transformers' {want}",
                    isa.name()
                );
            }
        }
        checked.push(act);
    }
    for act in Activation::ALL {
        assert!(checked.contains(&act), "{act:?} has no transformers values");
    }
}
