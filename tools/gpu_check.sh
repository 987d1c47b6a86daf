#!/usr/bin/env bash
# The GPU backend on a real GPU, in one prepared run (docs/gpu.md, "Running the prepared
# check").
#
#   tools/gpu_check.sh --prepare   here, before the device call: Debian's Vulkan loader
#                                  packages into .gl/, release builds of vitmsn, the GPU
#                                  test binaries and the GPU examples into .gpu-check/
#   tools/gpu_check.sh             on the device machine, with .gl and .gpu-check carried:
#                                  writes at most 8 files into $OUT
#   tools/gpu_check.sh --local     the same run here (lavapipe or whatever adapter there
#                                  is), smaller, into $GPU_CHECK_OUT or target/gpu-check-local
#
# The run never stops at a failed step: each is bounded by `timeout`, its exit status and
# time go to summary.txt, and the steps after it still run, until the time budget
# (GPU_CHECK_BUDGET_S: 450 s on the device, 1800 s with --local) is spent.
#
# Files written: summary.txt (one line a step), env.txt (machine, driver, Vulkan ICDs),
# adapters.jsonl (examples/gpu_adapters.rs), tests.txt (tests/gpu_parity.rs and
# tests/gpu_kernels.rs), bench.jsonl (`vitmsn bench --json`, with "precision" added),
# gemm.jsonl (examples/gpu_gemm.rs), torch.jsonl (tools/gpu_torch_bench.py), log.txt
# (each step's command line and the stderr of those that write JSON).

set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GL=.gl
PACK=.gpu-check
BINARIES=(vitmsn gpu_parity gpu_kernels gpu_adapters gpu_gemm)

die() {
    echo "gpu_check: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------- --prepare
prepare() {
    set -e
    # The Vulkan loader (and glvnd, which NVIDIA's ICD library links) as Debian packages,
    # unpacked over / at the start of a device run: that machine's image may lack them.
    if ! ls "$GL"/libvulkan1_*.deb >/dev/null 2>&1; then
        mkdir -p "$GL" /tmp/amd64/partial
        local o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
        apt-get "${o[@]}" -qq update
        (cd "$GL" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    ls -l "$GL"

    # Release builds without debug info (the profile's line tables only make the
    # binaries larger than the 64 MiB that travels).
    export CARGO_PROFILE_RELEASE_DEBUG=0
    cargo build --release --bin vitmsn --example gpu_adapters --example gpu_gemm
    local tests
    tests=$(cargo test --release --no-run --test gpu_parity --test gpu_kernels --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])')
    rm -rf "$PACK"
    mkdir -p "$PACK"
    strip --strip-debug -o "$PACK/vitmsn" target/release/vitmsn
    strip --strip-debug -o "$PACK/gpu_adapters" target/release/examples/gpu_adapters
    strip --strip-debug -o "$PACK/gpu_gemm" target/release/examples/gpu_gemm
    while read -r name path; do
        strip --strip-debug -o "$PACK/$name" "$path"
    done <<<"$tests"
    for b in "${BINARIES[@]}"; do
        [ -x "$PACK/$b" ] || die "$PACK/$b was not built"
    done
    {
        echo "built: $(date -u +%FT%TZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src shaders kernels tests examples Cargo.toml Cargo.lock || echo ' with uncommitted changes')"
        echo "rustc: $(rustc --version)"
        echo "host: $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
        echo "needs: $(cd "$PACK" && objdump -T "${BINARIES[@]}" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1) or newer"
        (cd "$PACK" && sha256sum "${BINARIES[@]}")
    } >"$PACK/MANIFEST"
    cat "$PACK/MANIFEST"
    # What a device call would send: tracked and untracked-not-ignored files plus the
    # carried folders; the limit is 64 MiB.
    local tree carried
    tree=$(git ls-files -co --exclude-standard -z | du -bc --files0-from=- | tail -1 | cut -f1)
    carried=$(du -bc "$GL" "$PACK" | tail -1 | cut -f1)
    echo "travels: tree $((tree / 1024)) KiB + .gl and .gpu-check $((carried / 1024)) KiB = $(((tree + carried) / 1048576)) MiB (limit 64 MiB)"
    [ $((tree + carried)) -lt $((64 * 1048576)) ] || die "over the 64 MiB a device call carries"
}

# ------------------------------------------------------------------------- the run itself
START=$(date +%s)

# step NAME LIMIT_S OUT_FILE CMD...: runs CMD under `timeout`, bounded by what is left
# of the budget; its stdout goes to OUT_FILE, its stderr too for a .txt file, else to
# log.txt; one line to summary.txt.
step() {
    local name=$1 limit=$2 out=$3
    shift 3
    local left=$((START + BUDGET - $(date +%s) - 10))
    if [ "$left" -lt 15 ]; then
        echo "$name: skipped, the ${BUDGET} s budget is spent" >>"$DIR/summary.txt"
        return 0
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "### $name: $* (limit ${limit} s)" >>"$DIR/log.txt"
    [[ $out == *.txt ]] && echo "### $name" >>"$out"
    local t0 rc ms note=""
    t0=$(date +%s%N)
    if [[ $out == *.txt ]]; then
        timeout -k 10 "$limit" "$@" >>"$out" 2>&1
    else
        timeout -k 10 "$limit" "$@" >>"$out" 2>>"$DIR/log.txt"
    fi
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note=" (timed out at ${limit} s)"; fi
    LAST_RC=$rc
    printf '%s: %s in %d.%d s%s\n' "$name" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED rc=$rc")" \
        $((ms / 1000)) $((ms % 1000 / 100)) "$note" >>"$DIR/summary.txt"
    return 0
}

# bench ARCH BATCH PRECISION ITERS: one `vitmsn bench --json` line into bench.jsonl,
# with the precision added (the JSON does not carry it). Each is capped at BENCH_LIMIT s
# (60 on the device); after two time out the rest are skipped, so that a hanging
# backend does not spend the budget that the PyTorch and GEMM steps need.
BENCH_TIMEOUTS=0
bench() {
    local arch=$1 batch=$2 precision=$3 iters=$4
    if [ "$BENCH_TIMEOUTS" -ge 2 ]; then
        echo "bench $arch batch $batch $precision: skipped after two timed-out benches" >>"$DIR/summary.txt"
        return 0
    fi
    local tmp
    tmp=$(mktemp /tmp/gpu-check-bench.XXXXXX)
    LAST_RC=0
    step "bench $arch batch $batch $precision" "$BENCH_LIMIT" "$tmp" \
        "$BIN/vitmsn" bench --arch "$arch" --batch "$batch" --iters "$iters" --backend gpu --precision "$precision" --json
    if [ "$LAST_RC" -eq 124 ] || [ "$LAST_RC" -eq 137 ]; then BENCH_TIMEOUTS=$((BENCH_TIMEOUTS + 1)); fi
    sed "s/^{/{\"precision\":\"$precision\",/" "$tmp" >>"$DIR/bench.jsonl"
    rm -f "$tmp"
}

environment() {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $(nproc) CPUs"
    echo "mode: $MODE; budget ${BUDGET} s"
    echo "--- .gpu-check/MANIFEST"
    cat "$PACK/MANIFEST" 2>/dev/null || echo "(none)"
    echo "--- nvidia-smi"
    if command -v nvidia-smi >/dev/null; then
        timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv 2>&1
    else
        echo "(no nvidia-smi)"
    fi
    echo "--- Vulkan loader"
    ldconfig -p | grep -E 'libvulkan|libGLX_nvidia|libGLdispatch|libnvidia-glvkspirv|libnvidia-glcore' || echo "(none of libvulkan, libGLX_nvidia, libGLdispatch in ldconfig)"
    echo "--- ICD folders"
    for d in /etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; do
        [ -d "$d" ] && echo "$d:" && ls -l "$d"
    done
    for f in /usr/local/nvidia/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/nvidia*.json /usr/share/vulkan/icd.d/nvidia*.json; do
        [ -f "$f" ] && { echo "$f:"; cat "$f"; }
    done
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
    echo "VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-}"
    echo "--- python"
    timeout 60 "$PYTHON" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1
    timeout 60 "$PYTHON" -c 'import transformers; print("transformers", transformers.__version__)' 2>&1 | tail -1
}

run_check() {
    if [ "$MODE" = device ]; then
        [ -n "${OUT:-}" ] || die "OUT is not set: the device run writes into \$OUT (use --local here)"
        DIR=$OUT
        BUDGET=${GPU_CHECK_BUDGET_S:-450}
        BENCH_LIMIT=60
    else
        DIR=${GPU_CHECK_OUT:-$ROOT/target/gpu-check-local}
        BUDGET=${GPU_CHECK_BUDGET_S:-1800}
        # lavapipe takes up to a minute and a half per vit-msn-base forward on two cores.
        BENCH_LIMIT=240
        rm -rf "$DIR"
    fi
    mkdir -p "$DIR"
    PYTHON=${GPU_CHECK_PYTHON:-python3}
    [ -f "$PACK/MANIFEST" ] || die "$PACK/MANIFEST is missing: run tools/gpu_check.sh --prepare first (and carry .gpu-check)"

    # Binaries run from a copy: carried files may lose their execute bits.
    BIN=$(mktemp -d /tmp/gpu-check-bin.XXXXXX)
    for b in "${BINARIES[@]}"; do
        cp "$PACK/$b" "$BIN/$b" && chmod +x "$BIN/$b"
    done

    if [ "$MODE" = device ]; then
        # The Vulkan loader, as the device notes say (only the .deb files of .gl/).
        if ls "$GL"/*.deb >/dev/null 2>&1; then
            for f in "$GL"/*.deb; do dpkg -x "$f" /; done
            ldconfig
        else
            echo "no $GL/*.deb carried: relying on the image's Vulkan loader" >>"$DIR/summary.txt"
        fi
        # NVIDIA's ICD manifest lives beside the mounted driver, where the loader does not
        # look; name it unless a standard folder already has one.
        local nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nv" ] &&
            ! ls /etc/vulkan/icd.d/nvidia*.json /usr/share/vulkan/icd.d/nvidia*.json /usr/local/share/vulkan/icd.d/nvidia*.json >/dev/null 2>&1; then
            export VK_DRIVER_FILES=$nv
            export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
        fi
    else
        # Mesa warns about a missing runtime dir on every start.
        if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
            export XDG_RUNTIME_DIR
            XDG_RUNTIME_DIR=$(mktemp -d /tmp/gpu-check-xdg.XXXXXX)
        fi
        # A dry run of the packages' contents: they unpack and hold the loader.
        local unpacked
        unpacked=$(mktemp -d /tmp/gpu-check-gl.XXXXXX)
        for f in "$GL"/*.deb; do dpkg -x "$f" "$unpacked" || echo "$f does not unpack" >>"$DIR/summary.txt"; done
        if ls "$unpacked"/usr/lib/x86_64-linux-gnu/libvulkan.so.1 >/dev/null 2>&1; then
            echo "local: $GL/*.deb unpack and hold libvulkan.so.1 (not unpacked over / here)" >>"$DIR/summary.txt"
        else
            echo "local: $GL/*.deb lack libvulkan.so.1" >>"$DIR/summary.txt"
        fi
        rm -rf "$unpacked"
    fi
    export RUST_BACKTRACE=1

    environment >"$DIR/env.txt" 2>&1
    step "adapters" 60 "$DIR/adapters.jsonl" "$BIN/gpu_adapters"

    # CI=true: no adapter fails these tests instead of skipping them.
    export VITMSN_FIXTURES=$ROOT/tests/fixtures
    step "gpu_parity (every fixture, f32 1e-4, f16 2e-2)" 180 "$DIR/tests.txt" \
        env CI=true "$BIN/gpu_parity" --nocapture

    if [ "$MODE" = device ]; then
        # The goals' rows first, so a short run still has them.
        for p in f32 f16; do bench vit-msn-base 64 $p 10; done
        for p in f32 f16; do
            for b in 1 8; do bench vit-msn-base $b $p 20; done
            for b in 1 8; do bench vit-msn-small $b $p 20; done
            bench vit-msn-small 64 $p 10
            bench vit-msn-base-4 1 $p 10
        done
        step "pytorch" 150 "$DIR/torch.jsonl" "$PYTHON" tools/gpu_torch_bench.py --max-seconds 110 \
            --case vit-msn-base:64 --case vit-msn-base:1 --case vit-msn-base:8 \
            --case vit-msn-small:1 --case vit-msn-small:8 --case vit-msn-small:64 --case vit-msn-base-4:1 \
            --gemm vit-msn-base:64 --gemm vit-msn-small:64 --gemm vit-msn-base:1
        step "gemm" 90 "$DIR/gemm.jsonl" "$BIN/gpu_gemm" \
            --arch vit-msn-small --arch vit-msn-base --batch 1 --batch 8 --batch 64 --iters 10
        step "gpu_kernels (property tests)" 120 "$DIR/tests.txt" \
            env CI=true "$BIN/gpu_kernels" --nocapture
    else
        for p in f32 f16; do
            bench vit-msn-small 1 $p 2
            bench vit-msn-base 1 $p 2
        done
        step "pytorch" 300 "$DIR/torch.jsonl" "$PYTHON" tools/gpu_torch_bench.py --device cpu \
            --case vit-msn-small:1 --iters 2 --warmup 1 --gemm vit-msn-small:1 --gemm-repeat 2 --precision f32
        step "gemm" 300 "$DIR/gemm.jsonl" "$BIN/gpu_gemm" \
            --arch vit-msn-small --batch 1 --iters 2 --gflop-per-submit 0.5
        step "gpu_kernels (property tests)" 900 "$DIR/tests.txt" \
            env CI=true "$BIN/gpu_kernels" --nocapture
    fi

    rm -rf "$BIN"
    local elapsed=$(($(date +%s) - START))
    {
        echo "total: ${elapsed} s"
        echo "--- results"
        grep -hE '^test result|tensors within|panicked|skipped' "$DIR/tests.txt" 2>/dev/null | head -40
        timeout 30 python3 tools/gpu_check_summary.py "$DIR" 2>&1
    } >>"$DIR/summary.txt"
    echo "wrote $(ls "$DIR" | tr '\n' ' ')into $DIR"
    cat "$DIR/summary.txt"
}

MODE=device
case "${1:-}" in
--prepare) prepare ;;
--local)
    MODE=local
    run_check
    ;;
"") run_check ;;
-h | --help) sed -n '2,22p' "$0" ;;
*) die "unknown option $1 (expected --prepare, --local or nothing)" ;;
esac
