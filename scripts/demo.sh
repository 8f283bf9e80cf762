#!/usr/bin/env bash
# The main job end to end on the built-in demo corpus: generate it (IEMOCAP layout), extract all
# three modalities with the offline demo encoders, verify the store, train and evaluate CM-ARR
# under the paper's protocol with the fast preset, and print the Table-2-shaped results.
set -euo pipefail
out="${1:-demo}"
cmarr-extract demo --out "$out"
cmarr-store verify "$out/demo.zarr"
cmarr-store info "$out/demo.zarr"
cmarr-train --store "$out/demo.zarr" --folds 5 --preset fast --out "$out/runs"
