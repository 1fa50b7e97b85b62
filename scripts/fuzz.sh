#!/usr/bin/env bash
# `make fuzz`: runs every libFuzzer target of fuzz/ for FUZZ_SECONDS each
# (default 600), JOBS at a time (default 2), growing fuzz/corpus/<target>/;
# a crash, an allocation past the limits, or a timeout stops that
# target and leaves the input in fuzz/artifacts/<target>/. Needs a nightly
# toolchain (rustup) and cargo-fuzz, installed here when missing.
#
# Leak detection is off: the store is opened once per process and lives
# to its end (by design, so inputs run fast), and glibc's thread-exit
# registrations of RocksDB's threads read as leaks.
#
# RocksDB is linked from the dev build's static library (ROCKSDB_LIB_DIR),
# so the fuzz build does not compile its C++ again (22 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-600}"
JOBS="${JOBS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/segsync-target}"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/segsync-fuzz-target}"

rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

lib="$(find "$CARGO_TARGET_DIR/debug/build" -name librocksdb.a -path '*librocksdb-sys-*' 2>/dev/null | head -1)"
if [ -z "$lib" ]; then
    cargo build --lib
    lib="$(find "$CARGO_TARGET_DIR/debug/build" -name librocksdb.a -path '*librocksdb-sys-*' | head -1)"
fi
export ROCKSDB_LIB_DIR="$(dirname "$lib")" ROCKSDB_STATIC=1

cd fuzz
cargo +nightly fuzz build -O --target-dir "$FUZZ_TARGET_DIR"
targets=(${FUZZ_TARGETS:-segment_import users_import cohort_request personas_request destination_config settings store_decoders})
run() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    cargo +nightly fuzz run -O --target-dir "$FUZZ_TARGET_DIR" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -malloc_limit_mb=512 \
        -max_len=65536 -timeout=10 -detect_leaks=0 -artifact_prefix="artifacts/$t/" \
        >"artifacts/$t.log" 2>&1 && echo "$t: ok" || echo "$t: FAILED (see fuzz/artifacts/$t.log)"
}
for ((i = 0; i < ${#targets[@]}; i += JOBS)); do
    for t in "${targets[@]:i:JOBS}"; do run "$t" & done
    wait
done
# Keep the corpora small enough to commit: libFuzzer's merge keeps only
# inputs that add coverage.
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t.min"
    cargo +nightly fuzz run -O --target-dir "$FUZZ_TARGET_DIR" "$t" "corpus/$t.min" "corpus/$t" -- -merge=1 >/dev/null 2>&1 || true
    rm -rf "corpus/$t" && mv "corpus/$t.min" "corpus/$t"
done
grep -h "stat::number_of_executed_units\|Done [0-9]* runs" artifacts/*.log 2>/dev/null | head -20 || true
