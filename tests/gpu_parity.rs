//! The GPU backend against transformers on every committed fixture, in f32 and f16.

#![cfg(feature = "gpu")]

mod common;

use vitmsn::Precision;
use vitmsn::{BackendKind, BackendOptions};

#[test]
fn every_fixture_matches_transformers_in_f32() {
    let options = BackendOptions::default();
    if common::gpu_ready(&options) {
        common::check_all_cases(BackendKind::Gpu, &options, 1e-4);
    }
}

#[test]
fn every_fixture_matches_transformers_in_f16() {
    let options = BackendOptions {
        precision: Precision::F16,
        ..Default::default()
    };
    if common::gpu_ready(&options) {
        common::check_all_cases(BackendKind::Gpu, &options, 2e-2);
    }
}
