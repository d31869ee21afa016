"""Resumable outputs: the chunks a run has finished, kept beside its output until the output is
complete, so that ``--resume`` continues an interrupted ``embed`` or ``score-variants``.

A run with ``--resume`` keeps, in the hidden folder ``.{output name}.resume/`` next to the output:

- ``state.json``: what the run is (command, settings, model, a fingerprint of every input file) and
  how far it got (chunks and records done, counters the summary needs);
- ``chunk-{i}.arrow``: the finished record batch of chunk i (Arrow IPC), written atomically.

On the next run with ``--resume`` the stored batches are written to the output again, in order,
then the run goes on from the first chunk not stored; the output is the one an uninterrupted run
writes (the same batches in the same order through the same writer). A run whose identity differs
(another input, option or model) is refused, naming the first difference. The folder is removed
once the output is complete. A run without ``--resume`` refuses to start while the folder is there,
so that progress is never thrown away by accident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import CaduceusError
from .io import atomic_file, write_json, writing

log = logging.getLogger("caduceus")

STATE_FILE = "state.json"
FORMAT_VERSION = 1
_SAMPLE_BYTES = 1 << 20
_SAMPLES = 16


def fingerprint(path: str | os.PathLike) -> str:
    """A fingerprint of a file's content that costs the same for 1 MB or 100 GB: its size and the
    sha256 of 1 MiB at 16 evenly spaced places (the start and the end included)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        step = max(0, size - _SAMPLE_BYTES) // (_SAMPLES - 1)
        for k in range(_SAMPLES):
            f.seek(min(k * step, max(0, size - _SAMPLE_BYTES)))
            digest.update(f.read(_SAMPLE_BYTES))
    return f"{size}:{digest.hexdigest()[:32]}"


def progress_folder(output: str | os.PathLike) -> Path:
    target = Path(os.path.realpath(output))
    return target.parent / f".{target.name}.resume"


class ResumableOutput:
    """The progress of one run writing ``output``; inactive (stores nothing) without ``--resume``.

    ``identity`` holds everything the output depends on; ``inputs`` the input files (fingerprinted
    here). Use ``replay()`` for the stored batches, ``add(batch, **counters)`` after each finished
    chunk, ``finish()`` once the output is complete.
    """

    def __init__(self, output: str | os.PathLike, identity: dict, inputs: dict[str, str | None], enabled: bool):
        self.output, self.enabled = str(output), enabled
        self.folder = progress_folder(output)
        self.chunks, self.records = 0, 0
        self.counters: dict[str, int] = {}
        if not enabled:
            if self.folder.exists():
                raise CaduceusError(f"{output}: an interrupted run left its progress in {self.folder}: continue it "
                                    f"with --resume, or remove that folder to start again")
            return
        if any(str(p) == "-" for p in inputs.values() if p is not None):
            raise CaduceusError("--resume needs input files (it cannot read stdin again)")
        self.identity = {"format_version": FORMAT_VERSION, **identity,
                         "inputs": {k: f"{p} {fingerprint(p)}" for k, p in inputs.items() if p is not None}}
        if self.folder.is_dir():
            self._load()
        else:
            with writing(self.folder):
                self.folder.mkdir()
            self._save()

    def _load(self) -> None:
        try:
            state = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            raise CaduceusError(f"{self.folder}: the progress of the interrupted run is unreadable; remove the "
                                "folder to start again") from None
        self._refuse_other_run(state.get("identity", {}), self.identity)
        self.chunks, self.records = int(state["chunks"]), int(state["records"])
        self.counters = {k: int(v) for k, v in state.get("counters", {}).items()}
        if self.chunks:
            log.info("resuming after %d chunk(s) (%d records) kept in %s", self.chunks, self.records, self.folder)

    def _refuse_other_run(self, before: dict, now: dict, where: str = "") -> None:
        for key in sorted(set(before) | set(now)):
            if isinstance(before.get(key), dict) and isinstance(now.get(key), dict):
                self._refuse_other_run(before[key], now[key], f"{where}{key}.")
            elif before.get(key) != now.get(key):
                raise CaduceusError(
                    f"{self.output}: the interrupted run kept in {self.folder} had {where}{key}={before.get(key)}, "
                    f"this one has {now.get(key)}: rerun it as it was, or remove that folder to start again")

    def _save(self) -> None:
        write_json(self.folder / STATE_FILE, {"identity": self.identity, "chunks": self.chunks,
                                               "records": self.records, "counters": self.counters})

    def _chunk_path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:08d}.arrow"

    def replay(self) -> Iterator:
        """The stored record batches, in chunk order."""
        import pyarrow as pa

        for index in range(self.chunks if self.enabled else 0):
            path = self._chunk_path(index)
            try:
                with pa.OSFile(str(path), "rb") as f:
                    yield pa.ipc.open_stream(f).read_next_batch()
            except (OSError, pa.ArrowInvalid, StopIteration):
                raise CaduceusError(f"{path}: a stored chunk is missing or damaged; remove {self.folder} "
                                    "to start again") from None

    def add(self, batch, records: int, **counters: int) -> None:
        """Store the finished batch of the next chunk (``records`` input records) and counters."""
        if not self.enabled:
            return
        import pyarrow as pa

        with atomic_file(self._chunk_path(self.chunks)) as tmp, pa.OSFile(str(tmp), "wb") as f:
            with pa.ipc.new_stream(f, batch.schema) as writer:
                writer.write_batch(batch)
        self.chunks += 1
        self.records += records
        for key, value in counters.items():
            self.counters[key] = self.counters.get(key, 0) + int(value)
        self._save()

    def finish(self) -> None:
        """The output is complete: the progress is no longer needed."""
        if self.enabled:
            shutil.rmtree(self.folder, ignore_errors=True)

    def note_stopped(self) -> None:
        """Say where the progress is kept (the run is stopping)."""
        if self.enabled and self.chunks:
            log.warning("%d chunk(s) (%d records) done are kept in %s: run the same command with --resume to "
                        "continue", self.chunks, self.records, self.folder)


def kept_then_new(kept: ResumableOutput | None, batches: Iterator, records=lambda batch: batch.num_rows) -> Iterator:
    """The batches an interrupted run kept, then the new ones, each new one stored in ``kept`` as it
    passes (``records(batch)``: the input records it finishes). ``kept`` None: the new ones alone."""
    if kept is None:
        yield from batches
        return
    yield from kept.replay()
    for batch in batches:
        yield batch
        kept.add(batch, records(batch))
