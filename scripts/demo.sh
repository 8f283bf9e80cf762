#!/usr/bin/env bash
# The main job end to end on the built-in demo corpus, as far as the pipeline exists today.
set -euo pipefail
out="${1:-demo}"
rm -rf "$out" && mkdir -p "$out"
python3 - "$out" <<'PY'
import sys
from cmarr.shared.store.synthetic import write_synthetic_store, SyntheticModality
write_synthetic_store(f"{sys.argv[1]}/synthetic.zarr", 200, {
    "text": SyntheticModality(20, 32), "audio": SyntheticModality(80, 32), "video": SyntheticModality(30, 16, missing_rate=0.1)})
PY
cmarr-store verify "$out/synthetic.zarr"
cmarr-store info "$out/synthetic.zarr"
cmarr-store pack "$out/synthetic.zarr" --out "$out/synthetic.zarr.zip"
cmarr-store verify "$out/synthetic.zarr.zip"
