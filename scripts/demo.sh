#!/usr/bin/env bash
# The main job end to end on the built-in demo corpus: generate it (IEMOCAP layout), extract all
# three modalities with the offline demo encoders, verify and describe the store.
set -euo pipefail
out="${1:-demo}"
cmarr-extract demo --out "$out"
cmarr-store verify "$out/demo.zarr"
cmarr-store info "$out/demo.zarr"
