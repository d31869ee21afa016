"""Regions to embed: parsed, validated against the reference, grouped into chunks and fetched.

Chunks are identical on every rank (planning is cheap); only the chunks a rank computes have their
sequences read, reverse-complemented on the minus strand and tokenised.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ...dna import encode
from ...errors import CaduceusError
from ...genome.bed import BedInterval, BedReader
from ...genome.windows import centred_on, fetch_window, tile_starts
from ...runtime import Runtime, owns
from .settings import EmbedSettings


@dataclass
class Job:
    """One region on its way through the pipeline; ``index`` is its rank in the input order."""

    index: int
    region: BedInterval
    window_start: int
    window_end: int
    contig: str | None = None  # the reference's spelling (None for FASTA-record input)
    ids: np.ndarray | None = None  # uint8 token ids of the strand-oriented window
    n_padded: int = 0
    tile_starts: list[int] = field(default_factory=lambda: [0])
    sequence: str | None = None  # FASTA-record input: the record, until it is tokenised
    context_start: int | None = None  # with --context: the bases the model reads, around the window
    context_end: int | None = None

    @property
    def length(self) -> int:
        return self.window_end - self.window_start

    @property
    def read_span(self) -> tuple[int, int]:
        """The bases the model reads: the context, or the window itself."""
        if self.context_start is None:
            return self.window_start, self.window_end
        return self.context_start, self.context_end

    @property
    def pooled(self) -> tuple[int, int]:
        """Positions of the window in the strand-oriented sequence the model reads."""
        start, end = self.read_span
        if self.region.strand == "-":
            return end - self.window_end, end - self.window_start
        return self.window_start - start, self.window_end - start


class Chunk(list):
    """The jobs of one chunk, in input order, ready for the model. ``failed``: regions of the chunk
    found invalid while their sequences were read (skipped with --skip-invalid)."""

    failed: int = 0


def _check_length(job: Job, settings: EmbedSettings) -> None:
    if job.length == 0:
        raise CaduceusError(f"{job.region.where()}: empty region (start == end == {job.region.start}): "
                            "give --window N to embed N bp around it")
    if settings.context is not None:
        if job.length > settings.context:
            raise CaduceusError(f"{job.region.where()}: region of {job.length:,} bp is longer than --context "
                                f"{settings.context:,}: give a longer --context, or --window N to embed a fixed window")
        job.context_start, job.context_end = centred_on(job.window_start, job.window_end, settings.context)
        return
    if job.length > settings.max_length and not settings.tile:
        raise CaduceusError(
            f"{job.region.where()}: region of {job.length:,} bp is longer than the model's trained length "
            f"({settings.max_length:,} bp): use --tile to tile it, --window N to embed a fixed window, "
            "or --max-length to raise the limit")
    if job.length > settings.max_length:
        job.tile_starts = tile_starts(job.length, settings.max_length, settings.overlap)


def plan_bed_region(index: int, region: BedInterval, reference, settings: EmbedSettings) -> Job:
    """Validate a BED region against the reference; raises CaduceusError naming the BED line."""
    contig = reference.resolve_contig(region.contig)
    if contig is None:
        names = list(reference.contigs)
        shown = ", ".join(names[:5]) + (f" ... ({len(names)} contigs)" if len(names) > 5 else "")
        skip = "" if settings.skip_invalid else " --skip-invalid skips such regions"
        raise CaduceusError(f"{region.where()}: contig {region.contig!r} is not in {reference.path.name} "
                            f"(it has {shown}): wrong genome build?{skip}")
    size = reference.contigs[contig]
    if region.start >= size and (region.length > 0 or region.start > size):
        raise CaduceusError(f"{region.where()}: region {region.contig}:{region.start}-{region.end} starts past "
                            f"the end of {contig} ({size:,} bp): wrong genome build?")
    job = Job(index, region, *centred_on(region.start, region.end, settings.window), contig)
    _check_length(job, settings)
    return job


def _encode(seq: str, job: Job) -> np.ndarray:
    """Token ids of the strand-oriented window sequence ``seq``."""
    r = job.region
    return encode(seq, source=f"{r.where()} ({r.contig}:{r.start}-{r.end})")


class RegionSource:
    """Valid regions in input order, as chunks of Jobs; invalid ones raise or, with --skip-invalid,
    are counted (``skipped``: seen by every rank; ``skipped_fetched``: found while reading this
    rank's own sequences, so only this rank knows them)."""

    def __init__(self, fasta: str | os.PathLike, regions: str | os.PathLike | None, settings: EmbedSettings,
                 stdin=None):
        self.fasta, self.regions, self.settings, self.stdin = fasta, regions, settings, stdin
        self.skipped = 0
        self.skipped_fetched = 0
        self.first_problems: list[str] = []
        self.reference = None
        self.bed = None
        if regions is not None:
            from ...genome.fasta import Reference

            self.bed = BedReader(regions, settings.skip_invalid, stdin=stdin)
            self.reference = Reference(fasta)
        elif str(fasta) != "-" and not Path(fasta).exists():
            raise CaduceusError(f"{fasta}: no such FASTA file")

    def _invalid(self, error: CaduceusError, fetched: bool = False) -> None:
        if not self.settings.skip_invalid:
            raise error
        self.skipped += 1
        self.skipped_fetched += fetched
        if len(self.first_problems) < 3:
            self.first_problems.append(str(error))

    def _bed_jobs(self) -> Iterator[Job]:
        index = 0
        for region in self.bed:
            try:
                job = plan_bed_region(index, region, self.reference, self.settings)
            except CaduceusError as e:
                self._invalid(e)
                continue
            index += 1
            yield job

    def count_valid(self) -> int:
        """The BED regions that pass the checks against the reference, that is those that will be
        embedded (a separate pass over the file; nothing is counted as skipped)."""
        count = 0
        for region in BedReader(self.regions, skip_invalid=True):
            try:
                plan_bed_region(count, region, self.reference, self.settings)
            except CaduceusError:
                continue
            count += 1
        return count

    def _record_jobs(self) -> Iterator[Job]:
        from ...genome.fasta import read_fasta_records

        index = 0
        label = "<stdin>" if str(self.fasta) == "-" else str(self.fasta)
        for number, (name, seq) in enumerate(read_fasta_records(self.fasta, stdin=self.stdin), start=1):
            region = BedInterval(name, 0, len(seq), name, "+", number, label, unit="record")
            job = Job(index, region, *centred_on(0, len(seq), self.settings.window), sequence=seq)
            try:
                _check_length(job, self.settings)
            except CaduceusError as e:
                self._invalid(e)
                continue
            index += 1
            yield job

    def _planned(self) -> Iterator[list[Job]]:
        """Chunks of validated jobs, bounded in count and bases; the same on every rank."""
        s = self.settings
        chunk, bases = [], 0
        for job in (self._bed_jobs() if self.bed is not None else self._record_jobs()):
            chunk.append(job)
            bases += job.length
            if len(chunk) >= s.chunk_regions or bases >= s.chunk_bases:
                yield chunk
                chunk, bases = [], 0
        if chunk:
            yield chunk

    def chunks(self, runtime: Runtime, first: int = 0) -> Iterator[Chunk | None]:
        """Every chunk in input order from chunk ``first`` (the earlier ones are planned, so counted
        and validated, but not read): fetched (token ids ready) where this rank computes it, None
        where another rank does."""
        pool = None
        if self.bed is not None:
            pool = ThreadPoolExecutor(max(1, self.settings.io_threads), thread_name_prefix="caduceus-fetch")
        try:
            for i, chunk in enumerate(self._planned()):
                if i >= first:
                    yield self._fetch(chunk, pool) if owns(i, runtime) else None
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            if self.bed is not None:
                self.skipped += self.bed.skipped
                self.first_problems += self.bed.first_problems[: max(0, 3 - len(self.first_problems))]

    def _fetch(self, chunk: list[Job], pool) -> Chunk:
        fetch = self._fetch_region if pool is not None else self._encode_record
        out = Chunk()
        for item in (pool.map(fetch, chunk) if pool is not None else map(fetch, chunk)):
            if isinstance(item, CaduceusError):
                self._invalid(item, fetched=True)
                out.failed += 1
            else:
                out.append(item)
        return out

    def note_replayed(self, failed: int) -> None:
        """Count the regions that chunks done by an interrupted run (--resume) found invalid."""
        self.skipped += failed
        self.skipped_fetched += failed

    def _fetch_region(self, job: Job) -> Job | CaduceusError:
        seq, job.n_padded = fetch_window(self.reference, job.contig, *job.read_span, job.region.strand)
        try:
            job.ids = _encode(seq, job)
        except CaduceusError as e:
            return e
        return job

    def _encode_record(self, job: Job) -> Job | CaduceusError:
        seq, (ws, we) = job.sequence, job.read_span
        left, right = max(0, -ws), max(0, we - len(seq))
        job.n_padded, job.sequence = left + right, None
        try:
            job.ids = _encode("N" * left + seq[max(ws, 0):min(we, len(seq))] + "N" * right, job)
        except CaduceusError as e:
            return e
        return job

    def close(self) -> None:
        if self.reference is not None:
            self.reference.close()
