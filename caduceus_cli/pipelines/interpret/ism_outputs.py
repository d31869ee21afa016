"""What ``ism`` writes: Parquet rows, a per-base bigWig of one method, a sequence logo of one region.

The logo shows, at each position, the reference base with a height that says how much the model
depends on it: minus the mean LLR of its three alternatives for ``masked`` and ``wt-marginal``
(tall: the model finds every other base less likely), the mean embedding distance for
``embedding``, minus the mean change of the class probability for ``classifier`` (tall: mutating
the base lowers the probability of the class). Negative heights are drawn below the axis.
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa

from ...errors import CaduceusError
from ...io import check_writable
from .ism_methods import CLASSIFIER, column
from .logo import check_logo_support, plot_logo
from .settings import BIGWIG_STATS, MAX_PLOT_BASES
from .targets import Target, overlapping

_IMPORTANCE = {"masked": (-1.0, "-mean LLR of the 3 alternatives"),
               "wt-marginal": (-1.0, "-mean LLR of the 3 alternatives"),
               "embedding": (1.0, "mean embedding distance"),
               CLASSIFIER: (-1.0, "-mean change of p(class)")}


def check_outputs(output, bigwig, bigwig_stat: str, plot) -> None:
    """Refuse before any work: no output at all, an unknown statistic, a missing library, an
    unwritable path."""
    from .bigwig import check_bigwig_support

    if bigwig_stat not in BIGWIG_STATS:
        raise CaduceusError(f"--bigwig-stat must be one of {', '.join(BIGWIG_STATS)}, got {bigwig_stat!r}")
    if output is not None:
        check_writable(output)
    if bigwig is not None:
        check_bigwig_support(bigwig)
    if plot is not None:
        if not str(plot).lower().endswith(".png"):
            raise CaduceusError(f"--plot {plot}: the logo is a PNG: end the name in .png")
        check_logo_support()
        check_writable(plot)


def check_targets(targets: list[Target], bigwig, plot) -> None:
    if bigwig is not None and (pair := overlapping(targets)) is not None:
        raise CaduceusError(f"--bigwig: regions {pair[0].name} and {pair[1].name} overlap, and a track has one "
                            "value per base: merge them (bedtools merge) or drop --bigwig")
    if plot is not None:
        if len(targets) != 1:
            raise CaduceusError(f"--plot draws one region, got {len(targets)}: give one -r region or a one-line BED")
        if targets[0].length > MAX_PLOT_BASES:
            raise CaduceusError(f"--plot: region {targets[0].name} is {targets[0].length:,} bp; a logo is readable up "
                                f"to {MAX_PLOT_BASES} bp: give a shorter region (or drop --plot)")


def schema(methods: tuple[str, ...], metadata: dict[str, str]) -> pa.Schema:
    fields = [pa.field("region", pa.string()), pa.field("chrom", pa.string()), pa.field("pos", pa.int64()),
              pa.field("ref", pa.string()), pa.field("alt", pa.string())]
    fields += [pa.field(column(m), pa.float64()) for m in methods]
    if CLASSIFIER in methods:
        fields.append(pa.field("class", pa.string()))
    return pa.schema(fields, metadata={k: str(v) for k, v in metadata.items()})


def rows(target: Target, positions: list[int], refs: list[str], scores: dict[str, np.ndarray | None],
         schema: pa.Schema, extra: dict) -> pa.RecordBatch:
    """Three rows per position (ALTs in ACGT order), with each method's (n, 3) scores."""
    n = len(positions)
    alts = [a for r in refs for a in "ACGT" if a != r]
    columns = {"region": [target.name] * 3 * n, "chrom": [target.contig] * 3 * n,
               "pos": np.repeat(np.asarray(positions, dtype=np.int64), 3), "ref": [r for r in refs for _ in range(3)],
               "alt": alts}
    for name, values in scores.items():
        columns[name] = np.zeros(0) if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
    for name, value in extra.items():
        columns[name] = [value] * 3 * n
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def per_position(table: pa.Table, method: str, stat: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chrom, 1-based pos, ``stat`` of the three ALT scores) per position of ``table``."""
    values = table.column(column(method)).to_numpy(zero_copy_only=False).reshape(-1, 3)
    reduce = {"mean": np.mean, "min": np.min, "max": np.max}[stat]
    chrom = np.asarray(table.column("chrom").to_pylist(), dtype=object)[::3]
    return chrom, table.column("pos").to_numpy()[::3], reduce(values, axis=1)


def write_bigwig(path, table: pa.Table, targets: list[Target], contigs: dict[str, int], method: str, stat: str,
                 meta: dict[str, str]) -> None:
    """One value per base of the targets: ``stat`` of the three ALT scores of ``method``."""
    from .bigwig import bigwig

    chrom, pos, values = per_position(table, method, stat)
    order = {c: i for i, c in enumerate(contigs)}
    used = sorted({t.contig for t in targets}, key=order.get)
    described = {**meta, "track": f"ism {method}: {stat} of the 3 alternative scores at each base",
                 "method": method, "statistic": stat}
    with bigwig(path, [(c, contigs[c]) for c in used], described) as writer:
        for t in sorted(targets, key=lambda t: (order[t.contig], t.start)):
            dense = np.full(t.length, np.nan)
            here = (chrom == t.contig) & (pos > t.start) & (pos <= t.end)
            dense[pos[here] - 1 - t.start] = values[here]
            writer.add(t.contig, t.start, dense)


def importance_matrix(table: pa.Table, target: Target, method: str) -> np.ndarray:
    """(length, 4) heights of the logo: the reference base's importance (module docstring), zero
    for the other bases and at positions without scores."""
    sign, _ = _IMPORTANCE[method]
    chrom, pos, mean = per_position(table, method, "mean")
    refs = np.asarray(table.column("ref").to_pylist(), dtype=object)[::3]
    matrix = np.zeros((target.length, 4))
    for p, r, m in zip(pos, refs, mean):
        if target.start < p <= target.end and np.isfinite(m):
            matrix[p - 1 - target.start, "ACGT".index(r)] = sign * m
    return matrix


def write_plot(path, table: pa.Table, target: Target, method: str, model) -> None:
    source = getattr(model, "source", {}) or {}
    where = f"{target.contig}:{target.start + 1:,}-{target.end:,}"
    label = where if target.name == f"{target.contig}:{target.start + 1}-{target.end}" else f"{target.name} ({where})"
    title = f"{label}: ism {method}, model {source.get('id', '')}"
    plot_logo(importance_matrix(table, target, method), "ACGT", title, path, start=target.start + 1,
              ylabel=_IMPORTANCE[method][1])
