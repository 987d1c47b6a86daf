//! The scalar reference backend against transformers on every committed fixture.

mod common;

use vitmsn::{BackendKind, BackendOptions};

#[test]
fn every_fixture_matches_transformers_within_1e_5() {
    common::check_all_cases(BackendKind::Scalar, &BackendOptions::default(), 1e-5);
}
