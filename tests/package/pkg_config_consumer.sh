#!/usr/bin/env bash
# Builds programs against an installed mproc with nothing but pkg-config and the compiler,
# as a Make or Meson user does, and runs the core one.
#   pkg_config_consumer.sh <prefix> <c++ compiler> <work dir> <source dir> [components...] [-- extra flags]
set -euo pipefail
prefix=$1 cxx=$2 work=$3 src=$4
shift 4
components=()
while (($#)) && [[ $1 != -- ]]; do components+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
extra=("$@")

pcfile=$(find "$prefix" -name mproc.pc -path '*/pkgconfig/*' | head -n 1)
[[ -n $pcfile ]] || { echo "no mproc.pc under $prefix" >&2; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pcfile")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
mkdir -p "$work"

read -r -a flags <<< "$(pkg-config --cflags --libs mproc)"
"$cxx" -std=c++20 "${extra[@]}" "$src/main.cpp" "${flags[@]}" -o "$work/consumer"
for component in "${components[@]}"; do
  read -r -a flags <<< "$(pkg-config --cflags --libs "mproc-$component")"
  "$cxx" -std=c++20 "${extra[@]}" "$src/$component.cpp" "${flags[@]}" -o "$work/consumer-$component"
  "$work/consumer-$component" >/dev/null  # links and loads; serves nothing without arguments
  echo "mproc-$component.pc ok"
done
"$work/consumer"
