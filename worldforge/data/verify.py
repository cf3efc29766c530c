"""Checking a built dataset against its manifest: every shard present, byte-identical (sha256) and
readable with the recorded number of samples."""

from __future__ import annotations

from pathlib import Path

from worldforge.data.episode import DatasetError
from worldforge.data.manifest import read_manifest, sha256_file
from worldforge.data.samples import read_shard_samples


def verify_dataset(folder: Path) -> list[tuple[str, str]]:
    """Check every shard against the manifest: present, same sha256, same number of readable samples.

    Returns one (shard name, "ok" or the problem) row per shard, plus rows for tar files the
    manifest does not list. Reads every byte once."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    rows = []
    for shard in manifest.shards:
        path = folder / shard.name
        if not path.is_file():
            rows.append((shard.name, "missing"))
            continue
        digest = sha256_file(path)
        if digest != shard.sha256:
            rows.append((shard.name, f"sha256 {digest[:12]}... but the manifest records {shard.sha256[:12]}..."))
            continue
        try:
            count = sum(1 for _ in read_shard_samples(path))
        except DatasetError as error:
            rows.append((shard.name, f"unreadable: {error}"))
            continue
        problem = "ok" if count == shard.samples else f"{count} samples but the manifest records {shard.samples}"
        rows.append((shard.name, problem))
    listed = {s.name for s in manifest.shards}
    rows += [(p.name, "not listed in the manifest") for p in sorted(folder.glob("*.tar")) if p.name not in listed]
    return rows
