#!/bin/sh
# Memcheck over the tests valgrind can run (issue 18): tests/mutation.rs, which feeds
# mutated files to every loader on the scalar backend (the C JPEG decoder included),
# and tests/concurrency.rs on the AVX2 kernels, since valgrind does not decode AVX-512.
# Any memcheck error fails the run. The kernels' own tests pick every ISA the CPU has,
# AVX-512 included, so they cannot run under valgrind on such a machine yet.
set -eu
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z.-' 'A-Z__')
env "CARGO_TARGET_${triple}_RUNNER=valgrind --error-exitcode=99 --quiet" VITMSN_ISA=avx2 \
    cargo test --test mutation --test concurrency
