#!/usr/bin/env bash
# Builds mproc's libFuzzer targets (tests/fuzz) with clang-14, AddressSanitizer and
# UndefinedBehaviorSanitizer, then runs each for a bounded time on a copy of its seed corpus
# and regressions, in build-fuzz/fuzz-run/<name>/ (the committed corpus never grows).
#   scripts/fuzz.sh [seconds-per-target (default 60)] [target ...]   (default: all targets)
# Fails if any target finds something, printing the input that did it. Once the bug is
# fixed, copy that input to tests/fuzz/regressions/<name>/: the normal build then replays
# it under ctest (ctest -L fuzz).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
mproc_install_deps clang libclang-rt-14-dev

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(serialize channel_record pool_frames)
build=build-fuzz

CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMPROC_WARNINGS_AS_ERRORS=ON -DMPROC_BUILD_TESTS=ON -DMPROC_BUILD_EXAMPLES=OFF \
  -DMPROC_BUILD_BENCHMARKS=OFF -DMPROC_INSTALL=OFF \
  -DMPROC_FUZZ=ON -DMPROC_SANITIZE=address,undefined
cmake --build "$build" --parallel "$(nproc)" --target mproc_fuzz

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0
for name in "${targets[@]}"; do
  run="$build/fuzz-run/$name"
  rm -rf "$run"
  mkdir -p "$run/corpus" "$run/artifacts"
  cp tests/fuzz/corpus/"$name"/* "$run/corpus/"
  if [[ -d tests/fuzz/regressions/$name ]] && compgen -G "tests/fuzz/regressions/$name/*" > /dev/null; then
    cp tests/fuzz/regressions/"$name"/* "$run/corpus/"
  fi
  echo "fuzz: $name for ${seconds}s (log: $run/log)"
  status=0
  "$build/tests/fuzz/mproc_fuzz_$name" -max_total_time="$seconds" -timeout=20 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$run/artifacts/" "$run/corpus" > "$run/log" 2>&1 || status=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$run/log" | tail -n 1)
  inputs=$(find "$run/corpus" -type f | wc -l)
  artifacts=$(find "$run/artifacts" -type f)
  if ((status != 0)) || [[ -n $artifacts ]]; then
    failed=1
    tail -n 60 "$run/log" >&2
    echo "fuzz: $name FAILED (exit status $status); the input that did it:" >&2
    if [[ -n $artifacts ]]; then
      printf '  %s\n' $artifacts >&2
    else
      echo "  (none saved; see $run/log)" >&2
    fi
  else
    echo "fuzz: $name ok: ${runs:-? runs}, corpus of $inputs inputs, no finding"
  fi
done
exit "$failed"
