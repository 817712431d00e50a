#!/usr/bin/env bash
# Installs the Debian packages gemmatune needs to build and test (see README "Dependencies").
set -euo pipefail
# clang + libclang-rt-14-dev (libFuzzer and the sanitizer runtimes): the fuzz targets (scripts/fuzz.sh).
# openmpi-bin + libopenmpi-dev: data-parallel training (dist/); the build works without them (single process).
# iproute2: `ip netns` for the two-namespace MPI test (DistMpi.TwoNetworkNamespaces; "Not Run" without it).
# libcpp-httplib-dev (+ pkg-config): HTTP for `gemmatune serve`. chromium + python3-venv: the serve
# tests' headless browser and the virtualenv the official openai client is installed into.
PKGS=(g++ cmake make libdnnl-dev nlohmann-json3-dev libyaml-cpp-dev libgtest-dev xz-utils clang libclang-rt-14-dev
      openmpi-bin libopenmpi-dev iproute2 libcpp-httplib-dev pkg-config chromium python3-venv)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
else
  echo "all build dependencies are installed"
fi
