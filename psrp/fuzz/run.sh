#!/bin/sh
# Builds and runs one fuzz target for a number of seconds, on the stable toolchain:
#
#   psrp/fuzz/run.sh defragment 60      # targets: defragment, outofproc, clixml
#   FUZZ_CORPUS_READONLY=1 psrp/fuzz/run.sh clixml 30   # the test suite's smoke run: the checked-in
#                                                       # corpus is read, never rewritten
#
# The corpus lives in the repository (psrp/fuzz/corpus/TARGET: seed-* files from seeds.py, real PSRP
# traffic of the project's peer engine, plus what libFuzzer found, minimized after each run); crashes
# land in psrp/fuzz/artifacts/TARGET (ignored by git) and make this script exit non-zero. Reproduce one
# with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-...` in psrp/fuzz.
#
# Why cargo-fuzz and not cargo-afl: cargo-fuzz drives libFuzzer in process (no fork per input), which
# for small, fast parsers like these gives far more executions per second; it is coverage guided
# (SanitizerCoverage with value profiling of comparisons, which gets through the magic values of XML
# tags and fragment flags) and runs AddressSanitizer by default; and it needs no extra toolchain: the
# only nightly parts are -Z flags to rustc, which stable accepts with RUSTC_BOOTSTRAP=1. cargo-afl needs
# its own AFL++ build and instrumentation plugins, forks per run unless persistent mode is wired in,
# and its multi-process setup is more than a 30-second CI step needs.
set -eu

TARGET=${1:?usage: run.sh TARGET SECONDS}
SECS=${2:-60}
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p "corpus/$TARGET" "artifacts/$TARGET"
SANITIZER=${FUZZ_SANITIZER:-address}   # none: faster, without AddressSanitizer
# Release build with debug assertions, as cargo-fuzz does by default.
cargo fuzz build --sanitizer "$SANITIZER" "$TARGET"
CORPUS="corpus/$TARGET"
if [ -n "${FUZZ_CORPUS_READONLY:-}" ]; then
    CORPUS=$(mktemp -d)
    cp -r "corpus/$TARGET/." "$CORPUS/"
fi
# -max_len: a 32 KiB fragment as base64 on one line is ~44 KB; larger inputs only slow the mutator.
cargo fuzz run --sanitizer "$SANITIZER" "$TARGET" "$CORPUS" -- \
    -max_total_time="$SECS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -use_value_profile=1 \
    -print_final_stats=1 -artifact_prefix="artifacts/$TARGET/"

if [ -n "${FUZZ_CORPUS_READONLY:-}" ]; then
    rm -rf "$CORPUS"
    exit 0
fi

# Keep the corpus in the repository small: merge the run's finds into the fewest inputs that cover the
# same edges, keeping the seeds (seed-*) as they are.
MIN=$(mktemp -d)
trap 'rm -rf "$MIN"' EXIT
cargo fuzz run --sanitizer "$SANITIZER" "$TARGET" "$MIN" "corpus/$TARGET" -- -merge=1 -max_len=65536 \
    >"$MIN.log" 2>&1 || { cat "$MIN.log" >&2; rm -f "$MIN.log"; exit 1; }
rm -f "$MIN.log"
find "corpus/$TARGET" -type f ! -name 'seed-*' -delete
for f in "$MIN"/*; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    [ -e "corpus/$TARGET/seed-$name" ] || mv "$f" "corpus/$TARGET/$name"
done
echo "run.sh: corpus/$TARGET now holds $(ls "corpus/$TARGET" | wc -l) inputs" \
    "($(ls "corpus/$TARGET" | grep -c '^seed-') seeds), $(du -sk --apparent-size "corpus/$TARGET" | cut -f1) KiB" >&2
