//! Few-shot classification on frozen embeddings, MSN's purpose: a handful of labelled
//! support images per class, then each query gets the class it resembles most.
//!
//! ```
//! use vitmsn::fewshot::{FewShot, Method};
//! use vitmsn::pipeline::Pipeline;
//! use vitmsn::{BackendKind, BackendOptions, Feature};
//!
//! let pipeline = Pipeline::from_dir(
//!     "tests/fixtures/base_all_outputs/model",
//!     BackendKind::default_for_this_cpu(),
//!     &BackendOptions::default(),
//! )?;
//! let support = ["samples/support/cat/cat-1.jpg", "samples/support/rocket/rocket-1.jpg"];
//! let features = pipeline.embed(&support, &[Feature::Cls])?;
//! let classes = vec!["cat".to_string(), "rocket".to_string()];
//! let classifier = FewShot::fit(Method::Prototype, classes, features.get(Feature::Cls).unwrap(), &[0, 1])?;
//!
//! let query = pipeline.embed(&["samples/support/rocket/rocket-1.jpg"], &[Feature::Cls])?;
//! let answer = &classifier.predict(query.get(Feature::Cls).unwrap())?[0];
//! assert_eq!(answer.class, 1); // a support image is its own class's prototype
//! # Ok::<(), vitmsn::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::str::FromStr;

/// How the support set becomes a classifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// Nearest class prototype by cosine: each feature L2-normalised, a class's prototype
    /// the L2-normalised mean of its normalised support features.
    #[default]
    Prototype,
    /// MSN's low-shot protocol: features centred on the support mean and L2-normalised,
    /// then multinomial logistic regression with an L2 penalty and no intercept.
    Logistic,
}

impl Method {
    /// The name the CLI takes.
    pub fn name(self) -> &'static str {
        match self {
            Method::Prototype => "prototype",
            Method::Logistic => "logistic",
        }
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "prototype" => Ok(Method::Prototype),
            "logistic" => Ok(Method::Logistic),
            other => Err(Error::Input(format!(
                "unknown few-shot method \"{other}\" (expected prototype or logistic)"
            ))),
        }
    }
}

/// The L2 penalty of the logistic method, on the mean loss: MSN's evaluation
/// (`logistic_eval.py`, cyanure's `lambd`) uses 0.0025.
pub const LOGISTIC_L2: f64 = 0.0025;

/// A classifier fitted on support embeddings.
#[derive(Clone, Debug)]
pub struct FewShot {
    classes: Vec<String>,
    dim: usize,
    model: Fitted,
}

#[derive(Clone, Debug)]
enum Fitted {
    /// One unit-length prototype per class, `[classes, dim]`.
    Prototypes(Vec<f64>),
    /// The support mean the features are centred on, and the weights `[classes, dim]`.
    Logistic { center: Vec<f64>, weights: Vec<f64> },
}

/// A query's answer: the class index and its score (the cosine to the prototype, or the
/// logistic probability).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FewShotPrediction {
    /// Index into [`FewShot::classes`].
    pub class: usize,
    /// The cosine to the class prototype, or the logistic probability.
    pub score: f32,
}

impl FewShot {
    /// Fits `method` on `support` `[n, dim]`, whose row `i` belongs to class `labels[i]`
    /// (an index into `classes`). Every class needs at least one row.
    pub fn fit(
        method: Method,
        classes: Vec<String>,
        support: &Tensor,
        labels: &[usize],
    ) -> Result<Self> {
        let &[n, dim] = support.shape.as_slice() else {
            return Err(Error::Input(format!(
                "support embeddings have shape {:?}, expected [images, dim]",
                support.shape
            )));
        };
        if labels.len() != n {
            return Err(Error::Input(format!(
                "{} labels for {n} support embeddings",
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes.len()) {
            return Err(Error::Input(format!(
                "label {bad} names no class of {}",
                classes.len()
            )));
        }
        if let Some(empty) = (0..classes.len()).find(|c| !labels.contains(c)) {
            return Err(Error::Input(format!(
                "class \"{}\" has no support image",
                classes[empty]
            )));
        }
        let rows: Vec<Vec<f64>> = support
            .data
            .chunks_exact(dim)
            .map(|r| r.iter().map(|&x| x as f64).collect())
            .collect();
        let model = match method {
            Method::Prototype => {
                let mut sums = vec![0.0; classes.len() * dim];
                for (row, &label) in rows.iter().zip(labels) {
                    let row = normalized(row.clone());
                    let sum = &mut sums[label * dim..(label + 1) * dim];
                    sum.iter_mut().zip(&row).for_each(|(s, x)| *s += x);
                }
                let prototypes = sums.chunks_exact(dim).flat_map(|s| normalized(s.to_vec()));
                Fitted::Prototypes(prototypes.collect())
            }
            Method::Logistic => {
                let mut center = vec![0.0; dim];
                for row in &rows {
                    center
                        .iter_mut()
                        .zip(row)
                        .for_each(|(c, x)| *c += x / n as f64);
                }
                let centred: Vec<Vec<f64>> = rows.iter().map(|r| centre(r, &center)).collect();
                let weights = fit_logistic(&centred, labels, classes.len(), LOGISTIC_L2);
                Fitted::Logistic { center, weights }
            }
        };
        Ok(Self {
            classes,
            dim,
            model,
        })
    }

    /// The class names, in index order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The class of each row of `query` `[n, dim]`.
    pub fn predict(&self, query: &Tensor) -> Result<Vec<FewShotPrediction>> {
        if query.shape.len() != 2 || query.shape[1] != self.dim {
            return Err(Error::Input(format!(
                "query embeddings have shape {:?}, expected [images, {}]",
                query.shape, self.dim
            )));
        }
        let classes = self.classes.len();
        Ok(query
            .data
            .chunks_exact(self.dim)
            .map(|row| {
                let row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
                let (x, weights, probabilities) = match &self.model {
                    Fitted::Prototypes(p) => (normalized(row), p, false),
                    Fitted::Logistic { center, weights } => (centre(&row, center), weights, true),
                };
                let mut scores: Vec<f64> =
                    weights.chunks_exact(self.dim).map(|w| dot(w, &x)).collect();
                if probabilities {
                    softmax_in_place(&mut scores);
                }
                let class = (0..classes)
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
                    .expect("at least one class");
                FewShotPrediction {
                    class,
                    score: scores[class] as f32,
                }
            })
            .collect())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v / |v|`; a zero vector stays zero.
fn normalized(mut v: Vec<f64>) -> Vec<f64> {
    let norm = dot(&v, &v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `row - center`, L2-normalised.
fn centre(row: &[f64], center: &[f64]) -> Vec<f64> {
    normalized(row.iter().zip(center).map(|(x, c)| x - c).collect())
}

fn softmax_in_place(scores: &mut [f64]) {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    scores.iter_mut().for_each(|s| *s = (*s - max).exp());
    let sum: f64 = scores.iter().sum();
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// Minimises the mean cross-entropy of `softmax(W x)` plus `l2 / 2 · |W|²` over unit-length
/// rows `x`, by Nesterov's accelerated gradient descent. With `|x| ≤ 1` the gradient is
/// `(1/2 + l2)`-Lipschitz, which fixes the step; the objective is strongly convex, so the
/// minimum is unique and the iteration converges to it from zero, deterministically.
fn fit_logistic(rows: &[Vec<f64>], labels: &[usize], classes: usize, l2: f64) -> Vec<f64> {
    const MAX_STEPS: usize = 20_000;
    const GRADIENT_TOLERANCE: f64 = 1e-9;
    let dim = rows[0].len();
    let n = rows.len() as f64;
    let step = 1.0 / (0.5 + l2);
    let momentum = {
        let kappa = (0.5 + l2) / l2;
        (kappa.sqrt() - 1.0) / (kappa.sqrt() + 1.0)
    };
    let mut weights = vec![0.0; classes * dim];
    let mut previous = weights.clone();
    let mut gradient = vec![0.0; classes * dim];
    let mut scores = vec![0.0; classes];
    for _ in 0..MAX_STEPS {
        // Look ahead along the momentum, then step from there.
        let ahead: Vec<f64> = weights
            .iter()
            .zip(&previous)
            .map(|(w, p)| w + momentum * (w - p))
            .collect();
        gradient
            .iter_mut()
            .zip(&ahead)
            .for_each(|(g, w)| *g = l2 * w);
        for (x, &label) in rows.iter().zip(labels) {
            for (c, s) in scores.iter_mut().enumerate() {
                *s = dot(&ahead[c * dim..(c + 1) * dim], x);
            }
            softmax_in_place(&mut scores);
            scores[label] -= 1.0;
            for (c, &s) in scores.iter().enumerate() {
                let g = &mut gradient[c * dim..(c + 1) * dim];
                g.iter_mut().zip(x).for_each(|(g, xi)| *g += s * xi / n);
            }
        }
        previous = std::mem::replace(
            &mut weights,
            ahead
                .iter()
                .zip(&gradient)
                .map(|(w, g)| w - step * g)
                .collect(),
        );
        if dot(&gradient, &gradient).sqrt() < GRADIENT_TOLERANCE {
            break;
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(rows: &[[f32; 3]]) -> Tensor {
        Tensor::new(vec![rows.len(), 3], rows.concat())
    }

    fn classes() -> Vec<String> {
        vec!["x".into(), "y".into(), "z".into()]
    }

    #[test]
    fn prototypes_pick_the_class_of_highest_cosine() {
        let support = tensor(&[[2., 0., 0.], [1., 0.2, 0.], [0., 5., 0.], [0., 0., 1.]]);
        let model = FewShot::fit(Method::Prototype, classes(), &support, &[0, 0, 1, 2]).unwrap();
        let query = tensor(&[[10., 1., 0.], [0., 1., 0.1], [0.1, 0., 3.]]);
        let answers = model.predict(&query).unwrap();
        assert_eq!(
            answers.iter().map(|p| p.class).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // [0, 1, 0.1] against the unit prototype [0, 1, 0].
        let expected = 1.0 / (1.0f32 + 0.01).sqrt();
        assert!((answers[1].score - expected).abs() < 1e-6, "{answers:?}");
    }

    #[test]
    fn logistic_separates_classes_and_gives_probabilities() {
        let support = tensor(&[
            [1., 0.1, 0.],
            [0.9, 0., 0.1],
            [0., 1., 0.1],
            [0.1, 0.9, 0.],
            [0., 0.1, 1.],
            [0.1, 0., 0.8],
        ]);
        let labels = [0, 0, 1, 1, 2, 2];
        let model = FewShot::fit(Method::Logistic, classes(), &support, &labels).unwrap();
        let answers = model.predict(&support).unwrap();
        assert_eq!(answers.iter().map(|p| p.class).collect::<Vec<_>>(), labels);
        for a in &answers {
            assert!(a.score > 1.0 / 3.0 && a.score < 1.0, "{a:?}");
        }
        // The same fit twice gives the same bits.
        let again = FewShot::fit(Method::Logistic, classes(), &support, &labels).unwrap();
        assert_eq!(again.predict(&support).unwrap(), answers);
    }

    #[test]
    fn logistic_reaches_the_stationary_point() {
        let rows = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let labels = [0, 1, 1];
        let w = fit_logistic(&rows, &labels, 2, LOGISTIC_L2);
        // The gradient of the penalised mean loss vanishes at the answer.
        let mut gradient: Vec<f64> = w.iter().map(|w| LOGISTIC_L2 * w).collect();
        for (x, &label) in rows.iter().zip(&labels) {
            let mut s = vec![dot(&w[..2], x), dot(&w[2..], x)];
            softmax_in_place(&mut s);
            s[label] -= 1.0;
            for c in 0..2 {
                for d in 0..2 {
                    gradient[c * 2 + d] += s[c] * x[d] / 3.0;
                }
            }
        }
        assert!(gradient.iter().all(|g| g.abs() < 1e-8), "{gradient:?}");
    }

    #[test]
    fn a_class_without_support_is_an_error() {
        let support = tensor(&[[1., 0., 0.]]);
        let err = FewShot::fit(Method::Prototype, classes(), &support, &[0]).unwrap_err();
        assert!(
            err.to_string().contains("\"y\" has no support image"),
            "{err}"
        );
        assert!("knn".parse::<Method>().is_err());
    }
}
