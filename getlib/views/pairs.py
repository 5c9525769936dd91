"""What notebooks/04_pairs shows: the manifest's shards and a checksum recomputed by hand."""
from __future__ import annotations

from pathlib import Path

from getlib.io import file_sha256


def shard_table(manifest: dict) -> list[dict]:
    """The manifest's shards: file, pairs, seeds and recorded sha256 (first 16 hex digits)."""
    return [{"file": s["file"], "count": s["count"], "first_seed": s.get("first_seed"),
             "sha256": s["sha256"][:16] + "..."} for s in manifest["shards"]]


def check_shard(root: str | Path, manifest: dict, k: int = 0) -> dict:
    """Recompute shard k's sha256 and compare it with the manifest's."""
    shard = manifest["shards"][k]
    computed = file_sha256(Path(root) / shard["file"])
    return {"file": shard["file"], "recorded": shard["sha256"], "computed": computed,
            "matches": computed == shard["sha256"]}
