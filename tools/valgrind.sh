#!/bin/sh
# Memcheck over the tests valgrind can run: the kernels' own tests (scalar and AVX2 paths;
# valgrind does not decode AVX-512, so VITMSN_MAX_ISA=avx2 hides it, with fewer property
# cases), tests/mutation.rs, which feeds mutated files to every loader on the scalar
# backend (the C JPEG decoder included), and tests/concurrency.rs on the AVX2 kernels.
# Any memcheck error fails the run.
set -eu
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z.-' 'A-Z__')
export "CARGO_TARGET_${triple}_RUNNER=valgrind --error-exitcode=99 --quiet" VITMSN_MAX_ISA=avx2
PROPTEST_CASES=16 cargo test -p vitmsn-kernels --lib
cargo test --test mutation --test concurrency
