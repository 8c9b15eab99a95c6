"""Read a W&B run's record log (`offline-run-*/run-<id>.wandb`), for tests that check what was logged.

wandb 0.31 writes no `config.yaml` / `wandb-summary.json` offline and ships no reader, so this one
follows its format: a 7-byte file header (`:W&B`, magic 0xBEE1, version 0), then a LevelDB log of
32 KiB blocks. Each chunk has a header `<crc32: u32><length: u16><type: u8>` (crc32 of the type byte,
then the payload); types FULL, or FIRST MIDDLE... LAST for a record split across blocks; a block
tail shorter than a header is zero padding. Each record is a `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT, FILE_MAGIC, FILE_VERSION = b":W&B", 0xBEE1, 0
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a `.wandb` file, in order; raises `ValueError` on a corrupt file."""
    data = Path(path).read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(data)
    if (ident, magic, version) != (FILE_IDENT, FILE_MAGIC, FILE_VERSION):
        raise ValueError(f"{path}: not a W&B record log (header {ident!r}, {magic:#x}, {version})")
    records, pending = [], []
    position = FILE_HEADER.size
    while position + CHUNK_HEADER.size <= len(data):
        block_left = BLOCK_SIZE - position % BLOCK_SIZE
        if block_left < CHUNK_HEADER.size:
            position += block_left
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if (checksum, length, kind) == (0, 0, 0):  # zero padding up to the end of the block
            position += block_left
            continue
        payload = data[position + CHUNK_HEADER.size : position + CHUNK_HEADER.size + length]
        if len(payload) < length:
            break  # a chunk still being written
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"{path}: bad checksum at byte {position}")
        position += CHUNK_HEADER.size + length
        pending.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pending))
            records.append(record)
            pending = []
        elif kind not in (FIRST, MIDDLE):
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {position}")
    return records


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


@dataclass
class ArtifactLog:
    """A logged artifact: name, type, aliases, metadata and the names of its files."""

    name: str
    type: str
    aliases: list[str]
    metadata: dict[str, Any]
    files: list[str]


@dataclass
class RunLog:
    """What a run logged: its id, name, group, job type, config, history rows, artifacts, the
    files saved with it (media included) and exit code (None: no exit record).

    A history row maps flat keys to values; an image is logged as nested keys
    (`test/bag_mosaic.filenames`, `.width`, ...): `image_files` reads them back.
    """

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[ArtifactLog] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None

    def metric_values(self, key: str) -> list[Any]:
        return [row[key] for row in self.history if key in row]

    def image_files(self, key: str) -> list[str]:
        """The media files (relative to the run's `files/` folder) of every image logged as `key`."""
        found: list[str] = []
        for row in self.history:
            if row.get(f"{key}._type") == "images/separated":
                found += row[f"{key}.filenames"]
            elif row.get(f"{key}._type") == "image-file":
                found.append(row[f"{key}.path"])
        return found

    def table(self, key: str) -> dict[str, Any] | None:
        """The last table logged as `key`: its `_type`, `path` (in `files/`), `nrows`, `ncols`."""
        rows = [row for row in self.history if row.get(f"{key}._type") == "table-file"]
        if not rows:
            return None
        prefix = f"{key}."
        return {
            name[len(prefix) :]: value
            for name, value in rows[-1].items()
            if name.startswith(prefix)
        }


def read_run(path: str | Path) -> RunLog:
    """Collect the run, config, history, artifact, file and exit records of a `.wandb` file."""
    run = RunLog()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group, run.job_type = (
                record.run.run_id,
                record.run.display_name,
                record.run.run_group,
                record.run.job_type,
            )
            run.config.update(
                {_item_key(i): json.loads(i.value_json) for i in record.run.config.update}
            )
        elif kind == "config":
            run.config.update(
                {_item_key(i): json.loads(i.value_json) for i in record.config.update}
            )
        elif kind == "history":
            run.history.append(
                {_item_key(i): json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "artifact":
            artifact = record.artifact
            run.artifacts.append(
                ArtifactLog(
                    name=artifact.name,
                    type=artifact.type,
                    aliases=list(artifact.aliases),
                    metadata=json.loads(artifact.metadata) if artifact.metadata else {},
                    files=[entry.path for entry in artifact.manifest.contents],
                )
            )
        elif kind == "files":
            run.files += [item.path for item in record.files.files]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_finished_run(path: str | Path, timeout_s: float = 30.0) -> RunLog:
    """`read_run` once the run's exit record is in the file.

    wandb-core writes the log after `wandb.finish()` returns (seen: only the 7-byte header right
    after `finish`, the whole log a moment later); the exit record comes last.
    """
    deadline = time.monotonic() + timeout_s
    while (run := read_run(path)).exit_code is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout_s} s (run not finished?)")
        time.sleep(0.05)
    return run
