"""What `cmarr-store info` reports: counts per class, session and modality, and provenance."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cmarr.shared.store.reader import FeatureStore, staged_parts
from cmarr.shared.store.schema import Status


def summarize(store: FeatureStore, scan: bool = True) -> dict[str, Any]:
    """A JSON-ready description of the store (works on incomplete stores too). `scan` reads every
    feature value (verified) to count non-finite ones; without it only metadata, the utterance
    table, offsets and status are read. Damage met on the way raises `StoreDamagedError`."""
    utt = store.utterances
    classes = store.classes
    labels = store.labels  # checked against the class list
    per_class = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
    if (labels < 0).any():
        per_class["(unlabelled)"] = int((labels < 0).sum())
    return {
        "location": store.location,
        "corpus": store.corpus,
        "utterances": len(store),
        "label_set": store.attrs.get("label_set"),
        "per_class": per_class,
        "per_session": dict(sorted(Counter(utt["session"].tolist()).items())),
        "per_speaker": dict(sorted(Counter(utt["speaker"].tolist()).items())) if "speaker" in utt else {},
        "modalities": {m: _modality(store, m, scan) for m in store.modality_names},
        "provenance": {k: store.attrs.get(k) for k in ("created", "software", "config_hash")}
        | {"fingerprint": store.fingerprint(), "degradation": store.degradation},
        "notes": store.notes,
    }


def degradation_line(degradation: dict[str, dict[str, Any]]) -> str:
    """`FeatureStore.degradation` on one line: each modality's spec, its noise, the seed ('' when clean)."""
    parts = []
    for record in degradation.values():
        noise = record.get("noise")
        if isinstance(noise, dict):
            noise = f"noise from {noise['folder']}/, {noise['files']} files, sha256 {noise['sha256'][:12]}"
        parts.append(record["spec"] + (f" ({noise})" if noise else ""))
    seeds = sorted({str(r.get("seed")) for r in degradation.values()})
    return f"{'; '.join(parts)}; seed {', '.join(seeds)}" if parts else ""


def _modality(store: FeatureStore, name: str, scan: bool) -> dict[str, Any]:
    group = store.group(name)
    spec = dict(group.attrs.get("spec", {}))
    if not group.attrs.get("finalized"):
        return {"finalized": False, "staged_parts": staged_parts(group), "spec": spec}
    reader = store.modality(name)
    lengths = reader.lengths[reader.present]
    return {
        "finalized": True,
        "dim": reader.dim,
        "dtype": str(reader.values.dtype),
        "frames": int(reader.offsets[-1]),
        "frames_per_utterance": {
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "min": int(lengths.min()) if len(lengths) else 0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
        "status": {s.label: int((reader.status == s).sum()) for s in Status},
        "failures": len(group.attrs.get("failures", {})),
        "reasons": _reasons(store, name, reader.status),
        "nonfinite_values": int(reader.nonfinite_counts().sum()) if scan else None,
        "bytes_stored": _stored_bytes(store, name),
        "spec": spec,
    }


def _reasons(store: FeatureStore, name: str, status) -> dict[str, dict[str, str]]:
    """Every reason extraction recorded, by the item's outcome: {outcome: {utterance id: reason}}."""
    recorded = store.reasons(name)
    outcome = dict(zip(store.utterances["id"].tolist(), status.tolist())) if recorded else {}
    by_outcome: dict[str, dict[str, str]] = {}
    for utt, why in recorded.items():
        by_outcome.setdefault(Status(outcome.get(utt, Status.PENDING)).label, {})[utt] = why
    return by_outcome


def _stored_bytes(store: FeatureStore, name: str) -> int | None:
    """Bytes of the modality's arrays on disk (None when the backend cannot list sizes)."""
    try:
        return int(sum(store.root[f"{name}/{a}"].nbytes_stored() for a in ("values", "offsets", "status")))
    except Exception:
        return None
