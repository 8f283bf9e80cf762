#!/usr/bin/env bash
# The main job end to end on the built-in demo corpus: generate it (IEMOCAP layout), extract all
# three modalities with the offline demo encoders, verify the store, train and evaluate CM-ARR,
# its Baseline and one comparison system (CRA) under the paper's protocol with the fast preset,
# print the Table-2-shaped comparison, and label one utterance with the CM-ARR fold model that held it out.
set -euo pipefail
out="${1:-demo}"
cmarr-extract demo --out "$out"
cmarr-store verify "$out/demo.zarr"
cmarr-store info "$out/demo.zarr"
cmarr-train --store "$out/demo.zarr" --folds 5 --preset fast --systems cm-arr,baseline,cra --out "$out/runs"
# the three systems side by side (the comparison folder's Table 2, its first section)
comparison=$(ls -d "$out"/runs/demo-comparison-* | head -n 1)
awk '/^## /{exit} {print}' "$comparison/table2.md"
# One utterance of Session 5 with its transcript, labelled by the fold model that held Session 5 out
# (fold 5: sessions are folds in order), so the model has never seen it.
run=$(ls -d "$out"/runs/demo-cm-arr-* | head -n 1)
clip=$(ls "$out"/demo-corpus/Session5/sentences/wav/*/*.wav | head -n 1)
id=$(basename "$clip" .wav)
dialog=$(basename "$(dirname "$clip")")
transcript=$(sed -n "s/^$id \[[^]]*\]: //p" "$out/demo-corpus/Session5/dialog/transcriptions/$dialog.txt")
label=$(awk -F'\t' -v id="$id" '$2 == id {print $3}' "$out/demo-corpus/Session5/dialog/EmoEvaluation/$dialog.txt")
echo "predicting $id (held out by fold 5; its label: $label): audio $clip, text \"$transcript\""
cmarr-predict "$run/seed0/fold5/split0" --audio "$clip" --text "$transcript"
