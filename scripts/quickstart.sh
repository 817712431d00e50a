#!/usr/bin/env bash
# Quick start, step 1: install the Debian packages, build, and run the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/demo.sh
