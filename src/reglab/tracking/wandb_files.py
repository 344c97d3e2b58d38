"""W&B's own record of a run, read from its local files without the network.

Each start of a W&B run (a segment) writes every record (the run's config and names, each
history row, summary updates, the exit) to `<dir>/wandb/<offline-run|run>-<time>-<id>[-N]/
run-<id>.wandb`, online before uploading and offline instead of it. The format is LevelDB's
log format: a 7-byte header (":W&B", 0xBEE1, version 0), then 32 KiB blocks of chunks (CRC-32
seeded with the chunk type, length, type: full, first, middle, last), each record a protobuf
`wandb.proto.wandb_internal_pb2.Record`. wandb 0.31 no longer ships a Python reader (its core
is Go), hence this one. A chunk that fails its checksum or is cut short (a killed process) ends
the read: what came before it is what W&B holds.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b":W&B"
FILE_HEADER = 7
BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class Segment:
    """One start of a W&B run, as its file holds it."""

    path: Path
    run: dict = field(default_factory=dict)
    """run_id, project, group, name, tags, config, start_time."""
    history: list[dict] = field(default_factory=list)
    """One dict per logged row, W&B's own keys (_step, _timestamp, ...) included."""
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None
    """None: the segment did not finish (killed, or still running)."""


def segments(wandb_dir: Path, run_id: str) -> list[Segment]:
    """Every segment of run `run_id` under `wandb_dir` (the `dir` given to wandb.init), oldest
    first."""
    files = {p.resolve() for p in Path(wandb_dir, "wandb").glob(f"*/run-{run_id}.wandb") if not p.parent.is_symlink()}
    found = [read_segment(p) for p in files]
    return sorted(found, key=lambda s: (s.run.get("start_time", 0.0), str(s.path)))


def read_segment(path: Path) -> Segment:
    from wandb.proto import wandb_internal_pb2 as pb

    seg = Segment(path)
    for payload in records(path):
        rec = pb.Record.FromString(payload)  # type: ignore[attr-defined]  # generated, no stubs
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            seg.run = {
                "run_id": r.run_id,
                "project": r.project,
                "group": r.run_group,
                "name": r.display_name,
                "tags": list(r.tags),
                "config": {_key(u): json.loads(u.value_json) for u in r.config.update if _key(u) != "_wandb"},
                "start_time": r.start_time.seconds + r.start_time.nanos * 1e-9,
            }
        elif kind == "history":
            seg.history.append({_key(item): _value(item) for item in rec.history.item})
        elif kind == "summary":
            seg.summary.update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
            for u in rec.summary.remove:
                seg.summary.pop(_key(u), None)
        elif kind == "exit":
            seg.exit_code = rec.exit.exit_code
    return seg


def records(path: Path) -> Iterator[bytes]:
    """The records of a `.wandb` file, in order (see the module docstring for the format)."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a W&B run file")
    pos, parts = FILE_HEADER, b""
    while True:
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's last bytes are padding when no header fits
            pos += left
            continue
        if pos + CHUNK_HEADER > len(data):
            return
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        body = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if len(body) < length or zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            parts = body
        elif kind == MIDDLE:
            parts += body
        elif kind == LAST:
            yield parts + body
        else:
            return


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    which = item.WhichOneof("value")
    if which in (None, "none"):
        return None
    value = getattr(item, which)
    return json.loads(value) if which == "json" else value
