//! The classification losses transformers' `ForImageClassification` models return.

use crate::config::ProblemType;
use crate::error::{Error, Result};

/// Labels as given: class indices, or float targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// One class index per image (`-100` is ignored, as in PyTorch).
    Classes(Vec<i64>),
    /// Float targets: `[batch]` for regression, `[batch, num_labels]` otherwise.
    Values(Vec<f32>),
}

/// transformers' choice when `problem_type` is not set.
pub fn problem_type(
    configured: Option<ProblemType>,
    num_labels: usize,
    labels: &Labels,
) -> ProblemType {
    configured.unwrap_or(match (num_labels, labels) {
        (1, _) => ProblemType::Regression,
        (_, Labels::Classes(_)) => ProblemType::SingleLabelClassification,
        _ => ProblemType::MultiLabelClassification,
    })
}

/// The mean loss of `logits` `[batch, num_labels]` against `labels`.
pub fn loss(
    problem: ProblemType,
    logits: &[f32],
    num_labels: usize,
    labels: &Labels,
) -> Result<f32> {
    let batch = logits.len() / num_labels.max(1);
    let values = |expected: usize| match labels {
        Labels::Values(v) if v.len() == expected => {
            Ok(v.iter().map(|&x| x as f64).collect::<Vec<_>>())
        }
        Labels::Classes(c) if c.len() == expected => Ok(c.iter().map(|&x| x as f64).collect()),
        _ => Err(Error::Input(format!(
            "labels must hold {expected} values for {problem:?} over batch {batch}"
        ))),
    };
    let mean = |terms: Vec<f64>| (terms.iter().sum::<f64>() / terms.len() as f64) as f32;
    Ok(match problem {
        ProblemType::Regression => {
            let targets = values(logits.len())?;
            mean(
                logits
                    .iter()
                    .zip(&targets)
                    .map(|(&x, y)| (x as f64 - y).powi(2))
                    .collect(),
            )
        }
        ProblemType::MultiLabelClassification => {
            let targets = values(logits.len())?;
            let bce = |x: f64, y: f64| x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
            mean(
                logits
                    .iter()
                    .zip(&targets)
                    .map(|(&x, &y)| bce(x as f64, y))
                    .collect(),
            )
        }
        ProblemType::SingleLabelClassification => {
            let Labels::Classes(classes) = labels else {
                return Err(Error::Input(
                    "single-label classification needs integer labels".into(),
                ));
            };
            if classes.len() != batch {
                return Err(Error::Input(format!(
                    "labels hold {} values for batch {batch}",
                    classes.len()
                )));
            }
            let mut terms = Vec::new();
            for (row, &class) in logits.chunks_exact(num_labels).zip(classes) {
                if class == -100 {
                    continue;
                }
                let class = usize::try_from(class)
                    .ok()
                    .filter(|&c| c < num_labels)
                    .ok_or_else(|| {
                        Error::Input(format!("label {class} is outside 0..{num_labels}"))
                    })?;
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let log_sum = row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln()
                    + max;
                terms.push(log_sum - row[class] as f64);
            }
            mean(terms)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_classes() {
        let l = loss(
            ProblemType::SingleLabelClassification,
            &[0.0; 8],
            4,
            &Labels::Classes(vec![1, 3]),
        )
        .unwrap();
        assert!((l - 4f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn default_problem_type_follows_transformers() {
        assert_eq!(
            problem_type(None, 1, &Labels::Classes(vec![0])),
            ProblemType::Regression
        );
        assert_eq!(
            problem_type(None, 3, &Labels::Classes(vec![0])),
            ProblemType::SingleLabelClassification
        );
        assert_eq!(
            problem_type(None, 3, &Labels::Values(vec![0.0; 3])),
            ProblemType::MultiLabelClassification
        );
    }
}
