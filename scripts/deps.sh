#!/usr/bin/env bash
# Sourced by the other scripts: installs the Debian packages mproc needs, only those
# missing, so a fresh Debian 12 machine needs nothing by hand.
#   mproc_install_deps [extra-package ...]
mproc_install_deps() {
  local wanted=(cmake make g++ python3 libgtest-dev libgmock-dev libbenchmark-dev libcereal-dev libboost-dev openmpi-bin libopenmpi-dev redis-server libhiredis-dev "$@")
  local missing=() pkg
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "mproc: installing missing packages: ${missing[*]}" >&2
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
