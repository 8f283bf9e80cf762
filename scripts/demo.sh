#!/usr/bin/env bash
# The main job end to end on the built-in demo corpus: generate it (IEMOCAP layout), extract all
# three modalities with the offline demo encoders, verify the store, train and evaluate CM-ARR,
# its Baseline and one comparison system (CRA) under the paper's protocol with the fast preset,
# print the Table-2-shaped comparison, and label one new recording with the trained CM-ARR run.
set -euo pipefail
out="${1:-demo}"
cmarr-extract demo --out "$out"
cmarr-store verify "$out/demo.zarr"
cmarr-store info "$out/demo.zarr"
cmarr-train --store "$out/demo.zarr" --folds 5 --preset fast --systems cm-arr,baseline,cra --out "$out/runs"
run=$(ls -d "$out"/runs/demo-cm-arr-* | head -n 1)
clip=$(ls "$out"/demo-corpus/Session5/sentences/wav/*/*.wav | head -n 1)
cmarr-predict "$run" --audio "$clip" --text "I can't believe you did that."
