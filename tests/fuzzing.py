"""Fuzzing machinery for tests/test_fuzz.py: seeds, byte mutations and the readers under test.

Seeds are small slices of the real files in ../shared/data (and the bundled model's config.json);
mutations are byte flips, truncation, deletion, duplication of lines and insertion of tabs, CR, NUL,
UTF-8 junk and numeric extremes. Every reader is driven through its public entry point only, so
these tests keep working when the readers move behind the shared runtime.
"""

from __future__ import annotations

import copy
import faulthandler
import gzip
import importlib
import io
import json
import math
import os
import re
import shutil
import signal
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hypothesis import strategies as st

from caduceus_cli.errors import CaduceusError

from .conftest import DATA, REPO

BUNDLED_CONFIG = REPO / "caduceus_cli" / "data" / "default_model" / "config.json"

# -- seeds -------------------------------------------------------------------------------------------


def _text(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [line for _, line in zip(range(400), f)]


def _join(lines: list[str]) -> bytes:
    return "".join(lines).encode()


def vcf_seed() -> bytes:
    """A short header (format, FILTER, a few INFO lines, #CHROM) and 12 real records, indels included."""
    lines = _text(DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.vcf.gz")
    header = [ln for ln in lines if ln.startswith(("##fileformat", "##FILTER", "##INFO=<ID=AC", "##INFO=<ID=AF",
                                                      "##INFO=<ID=AA", "##INFO=<ID=NS", "#CHROM"))]
    records = [ln for ln in lines if not ln.startswith("#")]
    odd = [ln for ln in records if "," in ln.split("\t")[4] or len(ln.split("\t")[3]) > 1][:4]
    return _join(header + records[:8] + odd)


def labeled_vcf_seed() -> bytes:
    """The VCF seed with a 0/1 ``label`` INFO field on every record."""
    out = []
    for i, line in enumerate(vcf_seed().decode().splitlines(keepends=True)):
        if line.startswith("#CHROM"):
            out.append('##INFO=<ID=label,Number=1,Type=Integer,Description="class">\n')
        if not line.startswith("#"):
            cols = line.rstrip("\n").split("\t")
            cols[7] += f";label={i % 2}"
            line = "\t".join(cols) + "\n"
        out.append(line)
    return _join(out)


def labeled_tsv_seed() -> bytes:
    """chrom, pos, ref, alt, label, tissue rows of real records, with a header line."""
    rows = ["chrom\tpos\tref\talt\tlabel\ttissue\n"]
    for i, line in enumerate(ln for ln in vcf_seed().decode().splitlines() if not ln.startswith("#")):
        chrom, pos, _, ref, alt = line.split("\t")[:5]
        rows.append(f"{chrom}\t{pos}\t{ref}\t{alt.split(',')[0]}\t{i % 2}\t{'Liver' if i % 3 else 'Lung'}\n")
    return _join(rows)


def bed_seeds() -> list[bytes]:
    segments = _text(DATA / "annotation" / "sacCer3.segments.bed")[:12]
    tss = _text(DATA / "annotation" / "hg38_refGene_tss.bed.gz")[:8]
    bed6 = [f"{c}\t{s}\t{e}\t{n}\t0\t{'+-'[i % 2]}\n" for i, (c, s, e, n) in
            enumerate(ln.rstrip("\n").split("\t") for ln in segments[:6])]
    return [_join(segments), _join(tss), _join(["track name=x\n"] + bed6)]


def gtf_seed() -> bytes:
    """GTF gene/transcript/exon records at real refGene TSS positions (no GTF is in ../shared/data)."""
    rows = ["#!genome-build GRCh38\n"]
    for i, line in enumerate(_text(DATA / "annotation" / "hg38_refGene_tss.bed.gz")[1:6]):
        chrom, start, _, name = line.rstrip("\n").split("\t")[:4]
        strand, s = "+-"[i % 2], int(start) + 1
        for feature, length in (("gene", 2000), ("transcript", 1500), ("exon", 200)):
            rows.append(f'{chrom}\tHAVANA\t{feature}\t{s}\t{s + length}\t.\t{strand}\t.\tgene_id "{name}";\n')
    return _join(rows)


def fasta_seeds() -> list[bytes]:
    small = _text(DATA / "variants" / "1kgp_grch37_chr20_1-2Mb.fa")[:6]
    yeast = _text(DATA / "genomes" / "sacCer3.fa.gz")[:5]
    human = _text(DATA / "genomes" / "hg38_chr2_1-2333275.fa.gz")[:3]
    return [_join(small), _join(yeast + human)]


def csv_seed() -> bytes:
    return _join(_text(DATA / "tasks" / "gue" / "prom_core_all" / "test.csv.gz")[:10])


def config_seed() -> dict:
    return json.loads(BUNDLED_CONFIG.read_text())


def tiny_config_seed() -> dict:
    """The config.json of :func:`tiny_checkpoint`."""
    from caduceus_cli.model.config import CaduceusConfig

    return CaduceusConfig.small("ps", d_model=8, n_layer=1).to_dict()


def tiny_checkpoint(folder: Path) -> Path:
    """A random PS model (d_model 8, one layer) saved in the HuggingFace layout."""
    import torch

    from caduceus_cli.model import CaduceusConfig, CaduceusForMaskedLM, save_model

    torch.manual_seed(0)
    return save_model(CaduceusForMaskedLM(CaduceusConfig.small("ps", d_model=8, n_layer=1)), folder)


# -- byte mutations ----------------------------------------------------------------------------------

JUNK = [b"\t", b"\r", b"\n", b"\r\n", b"\x00", b" ", b"#", b">", b",", b";", b"=", b'"', b"-", b".", b"\x1f\x8b",
        "é".encode(), "\u2028".encode(), "\ufeff".encode(), b"\xff", b"\xc3", b"\x80\x80", b"\t\t\t", b"\n>\n",
        b"track", b"##fileformat=VCFv4.2\n", b"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"]
NUMBERS = [b"0", b"-1", b"-0", b"+5", b"1.5", b"1e308", b"-1e308", b"nan", b"NaN", b"inf", b"-inf", b"", b"0x10",
           b"2147483648", b"4294967296", b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809",
           b"18446744073709551616", b"9" * 40, b"1" * 5000, b"1_000", "\u0661\u0662".encode()]
SEPARATORS = b"\t\n,;=:| "


@st.composite
def mutated(draw, seeds: list[bytes], max_ops: int = 6) -> bytes:
    """A seed changed by 1..max_ops edits; hypothesis shrinks towards fewer and smaller edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "insert", "field", "delete", "truncate", "line")))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(JUNK + NUMBERS))
        elif op == "field":
            lo, hi = _field_bounds(data, at)
            data[lo:hi] = draw(st.sampled_from(NUMBERS + JUNK))
        elif op == "delete":
            data[at:at + draw(st.integers(1, 64))] = b""
        elif op == "truncate":
            del data[at:]
        else:
            data = _line_edit(data, at, draw(st.sampled_from(("duplicate", "drop", "swap"))))
    return bytes(data)


def _field_bounds(data: bytearray, at: int) -> tuple[int, int]:
    lo = at
    while lo > 0 and data[lo - 1] not in SEPARATORS:
        lo -= 1
    hi = at
    while hi < len(data) and data[hi] not in SEPARATORS:
        hi += 1
    return lo, hi


def _line_edit(data: bytearray, at: int, how: str) -> bytearray:
    lines = bytes(data).splitlines(keepends=True)
    if len(lines) < 2:
        return data
    i = min(at * len(lines) // max(len(data), 1), len(lines) - 2)
    if how == "duplicate":
        lines.insert(i, lines[i])
    elif how == "drop":
        del lines[i]
    else:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return bytearray(b"".join(lines))


def packed(contents: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Contents written plain, gzip or bgzip (readers recognise compression by content), sometimes
    with the compressed bytes themselves damaged."""
    return st.tuples(contents, st.sampled_from(("plain", "plain", "gzip", "bgzip")), st.integers(0, 3),
                     st.integers(0, 1 << 16)).map(_pack)


def _pack(args: tuple[bytes, str, int, int]) -> bytes:
    data, how, damage, at = args
    if how == "plain":
        return data
    if how == "gzip":
        out = gzip.compress(data, mtime=0)
    else:
        import tempfile

        from caduceus_cli.io import open_file

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "packed.gz"
            with open_file(path, "wb", compress=True) as writer:
                writer.write(data)
            out = path.read_bytes()
    if damage == 1:  # truncated
        return out[: at % max(len(out), 1)]
    if damage == 2:  # one byte changed
        out = bytearray(out)
        out[at % len(out)] ^= 0x55
        return bytes(out)
    return out


VALUE_EXTREMES = [0, -1, 1, 2, 3, 7, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e308, math.nan, math.inf, -math.inf,
                  0.5, -0.5, True, False, None, "", "auto", "x", "16", [], {}, [1, 2], {"0": 1}, {"7": 99}]


@st.composite
def mutated_config(draw, seed: dict, max_ops: int = 4) -> bytes:
    """The bundled config.json with values replaced by extremes, keys dropped or added, as JSON text
    (NaN and Infinity included, as Python writes them), sometimes with byte edits on top."""
    data = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(_paths(data)))
        parent = _parent(data, path)
        key = path[-1]
        how = draw(st.sampled_from(("set", "set", "set", "delete", "add")))
        value = copy.deepcopy(draw(st.sampled_from(VALUE_EXTREMES)))  # never share the list's own objects
        if how == "delete" and isinstance(parent, dict):
            parent.pop(key, None)
        elif how == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(("d_state", "expand", "d_conv", "dt_rank", "layer_idx", "auto_map", "99",
                                         "-1", "x")))] = value
        else:
            parent[key] = value
    text = json.dumps(data, indent=1).encode()
    if draw(st.booleans()):
        return text
    return draw(mutated([text], max_ops=2))


def _paths(node, prefix=()) -> list[tuple]:
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append(prefix + (key,))
        out += _paths(value, prefix + (key,))
    return out or [("d_model",)]


def _parent(data, path: tuple):
    for key in path[:-1]:
        data = data[key]
    return data


# -- the readers under test --------------------------------------------------------------------------

def _read_labeled():
    """The labeled-variant reader: in pipelines/svm.py today, moving to a module of genome/."""
    import pkgutil

    import caduceus_cli.genome as genome

    modules = [f"caduceus_cli.genome.{m.name}" for m in pkgutil.iter_modules(genome.__path__)]
    for module in modules + ["caduceus_cli.pipelines.svm"]:
        reader = getattr(importlib.import_module(module), "read_labeled", None)
        if reader is not None:
            return reader
    raise ImportError("read_labeled is in neither caduceus_cli.genome nor caduceus_cli.pipelines.svm")


def consume_bed(path: Path) -> None:
    from caduceus_cli.genome.bed import BedReader

    for region in BedReader(path):
        assert 0 <= region.start <= region.end, region


def consume_bed_stdin(path: Path) -> None:
    from caduceus_cli.genome.bed import BedReader

    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(path.read_bytes())))
    for region in BedReader("-", stdin=stdin):
        assert 0 <= region.start <= region.end, region


def consume_vcf(path: Path) -> None:
    from caduceus_cli.genome.vcf import VcfReader

    reader = VcfReader(path)
    try:
        for _, record in reader:
            assert record.line > 0 and isinstance(record.chrom, str), record
    finally:
        reader.close()


def consume_reference(path: Path) -> None:
    from caduceus_cli.genome.fasta import Reference

    with Reference(path) as reference:
        for contig, length in list(reference.contigs.items())[:4]:
            end = min(length, 50) + 3
            sequence, pad = reference.fetch(contig, -3, end)
            assert len(sequence) == end + 3 and pad == 3 + max(0, end - length), (contig, sequence, pad)
            reference.resolve_contig(contig[3:] if contig.startswith("chr") else "chr" + contig)


def consume_fasta_records(path: Path) -> None:
    from caduceus_cli.genome.fasta import read_fasta_records

    for name, sequence in read_fasta_records(path):
        assert name and isinstance(sequence, str)


def consume_tss(path: Path) -> None:
    from caduceus_cli.genome.tss import read_tss

    index = read_tss(path)
    for contig in list(index.positions)[:3]:
        index.nearest(contig, 1000)
        index.nearest_many(contig, [0, 10**6])


def consume_lines(sep: str | None) -> Callable[[Path], None]:
    def consume(path: Path) -> None:
        from caduceus_cli.genome.lines import parse_int, read_lines

        for line in read_lines(path, what="fuzzed file", sep=sep, skip_track=True):
            assert line.number > 0 and line.fields is not None
            if len(line.fields) > 1:
                try:
                    parse_int(line.fields[1], "column 2", line.where, minimum=0)
                except CaduceusError:
                    pass
    return consume


def consume_labeled(path: Path) -> None:
    for variant in _read_labeled()(str(path)):
        assert variant.label in (0, 1)


def consume_config(path: Path) -> None:
    from caduceus_cli.model.config import CaduceusConfig

    config = CaduceusConfig.from_json(path)
    # Whatever validation accepts, the sizes a model is built from must be computable.
    assert config.padded_vocab_size >= config.vocab_size and config.d_inner > 0 and config.dt_rank > 0
    assert len(config.complement_list()) == config.padded_vocab_size
    CaduceusConfig.from_dict(json.loads(json.dumps(config.to_dict())))


def consume_checkpoint(weights: Path) -> Callable[[Path], None]:
    """load_model on a folder holding the fuzzed config.json beside real (tiny) weights."""
    def consume(config_path: Path) -> None:
        from caduceus_cli.model.checkpoint import load_model

        folder = config_path.parent / "model"
        folder.mkdir()
        shutil.copy(config_path, folder / "config.json")
        (folder / weights.name).symlink_to(weights)
        load_model(folder)
    return consume


@dataclass(frozen=True)
class Target:
    """A reader under test: the file name its input is written under, and how it is consumed."""

    name: str
    filename: str
    consume: Callable[[Path], None]
    native: bool = False  # parsed by C code (htslib): run first in a forked child to catch crashes


class ReaderCrashed(Exception):
    """The reader killed its process (a signal from native code) or hung past the time limit.

    ``frames`` are the (file, function) pairs of the Python stack at that moment, innermost last.
    """

    def __init__(self, message: str, frames: list[tuple[str, str]]):
        super().__init__(message + "".join(f"\n  {file} in {function}" for file, function in frames))
        self.frames = frames


def crash_check(consume: Callable[[Path], None], path: Path, seconds: int = 30) -> None:
    """Run ``consume(path)`` in a forked child; raise ReaderCrashed if a signal ended it.

    A segmentation fault in native code would otherwise end the whole test session; Python-level
    errors are ignored here (the caller reads the input again in-process to see them).
    """
    stack = path.with_name(path.name + ".stack")
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            with open(stack, "w") as out:
                faulthandler.enable(out)
                faulthandler.dump_traceback_later(seconds, exit=True, file=out)
                consume(path)
        except BaseException:  # noqa: BLE001 - judged by the in-process run
            pass
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    frames = re.findall(r'File "([^"]+)", line \d+ in (\S+)', stack.read_text()) if stack.exists() else []
    frames = frames[::-1]  # faulthandler writes the innermost call first
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        raise ReaderCrashed(f"{path.name}: the reader was killed by {sig}", frames)
    if "Timeout" in (stack.read_text() if stack.exists() else ""):
        raise ReaderCrashed(f"{path.name}: the reader hung for {seconds} s", frames)


# -- running one input ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenBug:
    """A bug found by fuzzing in a reader this branch may not edit (the runtime refactor owns it):
    the corpus inputs that show it, and the exceptions it lets escape from which function."""

    corpus: tuple[str, ...]  # paths under tests/fuzz_corpus/, their folder naming the reader
    exceptions: tuple[type, ...]
    file: str
    function: str
    summary: str

    @property
    def targets(self) -> set[str]:
        return {path.split("/", 1)[0] for path in self.corpus}

    def matches(self, error: BaseException) -> bool:
        if not isinstance(error, self.exceptions):
            return False
        return project_frames(error)[-1:] == [(Path(self.file).name, self.function)]


def project_frames(error: BaseException) -> list[tuple[str, str]]:
    """(file name, function) of the caduceus_cli frames an error passed through, innermost last
    (for a crash: the Python stack the child dumped when it died)."""
    if isinstance(error, ReaderCrashed):
        frames = error.frames
    else:
        frames = [(f.filename, f.name) for f in traceback.extract_tb(error.__traceback__)]
    return [(Path(file).name, function) for file, function in frames if "caduceus_cli" in file]


# Every finding so far is fixed (the readers now answer each corpus input with CaduceusError);
# a new finding in a reader this branch may not edit goes here as an OpenBug.
OPEN_BUGS: list[OpenBug] = []


def allowed(error: BaseException) -> bool:
    """The project's error type, or ImportError naming the install command of an optional extra."""
    if isinstance(error, CaduceusError):
        return "\n" not in str(error) and bool(str(error).strip())
    return isinstance(error, ImportError) and "pip install" in str(error)


def run_reader(target: Target, data: bytes, known: tuple[OpenBug, ...] = ()) -> None:
    """Write ``data`` under the target's file name in a fresh folder and read it to the end.

    Passes when the reader finishes or raises an allowed error; an open bug listed in ``known``
    passes too (its own strict xfail test tracks it); anything else propagates.
    """
    with tempfile.TemporaryDirectory(prefix="caduceus-fuzz-") as tmp:
        path = Path(tmp) / target.filename
        path.write_bytes(data)
        try:
            if target.native:
                crash_check(target.consume, path)
            target.consume(path)
        except Exception as error:  # noqa: BLE001 - the property under test
            if allowed(error) or any(bug.matches(error) for bug in known):
                return
            _keep_finding(target, data, error)
            raise


def signature(error: BaseException) -> str:
    """Exception type and the innermost project frame (else the innermost frame) it came from."""
    frames = project_frames(error) or [(Path(f.filename).name, f.name)
                                       for f in traceback.extract_tb(error.__traceback__)]
    where = "-".join(frames[-1]) if frames else "unknown"
    return f"{type(error).__name__}-{where}"


def _keep_finding(target: Target, data: bytes, error: BaseException) -> None:
    """During a campaign (CADUCEUS_FUZZ_FINDINGS=folder), keep the latest failing input per bug:
    hypothesis replays the shrunk example last, so what remains is the smallest one found."""
    folder = os.environ.get("CADUCEUS_FUZZ_FINDINGS")
    if folder:
        save_finding(Path(folder), target.name, signature(error), data, Path(target.filename).suffix)


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "README.md")


def save_finding(root: Path, target: str, label: str, data: bytes, suffix: str) -> Path:
    """Write a found input to the corpus (used while triaging a campaign's findings)."""
    name = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
    path = root / target / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path

