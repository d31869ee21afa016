"""The documentation cannot drift from the code: the CLI reference is generated, every run the docs
keep in docs/runs/ is cited by them, the pages hold no history, and every example command of
README.md and docs/*.md runs.

Examples are the fenced ```bash / ```sh / ```console / ```python blocks. Each runs in a temporary
folder holding small stand-ins of the inputs the examples name (``genome.fa``, ``regions.bed``,
``calls.vcf.gz``, ``train.csv`` ...), through the real console script, one command at a time. A
block that cannot run here (a GPU, a download, hours of work) carries ``<!-- not run: why -->`` on
the line before it and is listed in NOT_RUN; its commands are checked against the options of the
command they call (``caduceus <command> --help``, or the script's own option strings).
"""

from __future__ import annotations

import fnmatch
import gzip
import importlib.util
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, console_command, console_env

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "console", "shell"}
EXAMPLES = SHELL | {"python"}
NOT_RUN_MARK = re.compile(r"^\s*<!--\s*not run(?: here)?:\s*(.+?)\s*-->\s*$")

# Every block marked not run, by page and its first command line: why it cannot run in the test.
NOT_RUN = {
    ("README.md", "pip install torch==2.13.0 && pip install . && caduceus embed"):
        ".ci/run runs the two set-up commands in a fresh virtual environment",
    ("README.md", "pip install torch==2.13.0 && pip install -e '.[test]' && python -m pytest -q"):
        ".ci/run runs the two set-up commands in a fresh virtual environment",
    ("README.md", "pip install '.[cuda]'"): "installs packages and builds CUDA kernels",
    ("benchmarks.md", "caduceus benchmark nt-suite -o nt_report"): "downloads data sets and models; hours",
    ("benchmarks.md", "caduceus benchmark nt-suite --data ../shared/data/tasks/nt_yeast_histone --protocol probe"):
        "about 75 minutes on 2 CPU cores",
    ("benchmarks.md", "caduceus benchmark nt-suite --data ../shared/data/tasks/nt_yeast_histone --protocol finetune --epochs 4"):
        "needs a GPU",
    ("benchmarks.md", "caduceus benchmark nt-suite --data ../shared/data/tasks/nt_yeast_histone --protocol finetune -o"):
        "needs a GPU",
    ("benchmarks.md", "caduceus benchmark gue --data ../shared/data/tasks/gue --protocol finetune"): "needs a GPU",
    ("benchmarks.md", "python benchmarks/finetune_gpu.py"): "needs a GPU",
    ("embed.md", "torchrun --standalone --nproc-per-node 2 -m caduceus_cli embed"): "needs two GPUs",
    ("finetune.md", "caduceus finetune classify train.csv -o clf10/"): "trains 10 models (hours on a CPU); torchrun on 8 GPUs",
    ("finetune.md", "zcat ../shared/data/tasks/gue/prom_core_all/train.csv.gz | head -1001"):
        "real data; about 6 minutes on 2 CPU cores",
    ("model-card.md", "caduceus pretrain ../shared/data/genomes/sacCer3.fa.gz"): "needs a GPU",
    ("model-card.md", "caduceus pretrain sacCer3.fa.gz ecoli_K12_MG1655.fa.gz"): "needs a GPU",
    ("interpret.md", "caduceus track ../shared/data/genomes/hg38_chr2_1-2333275.fa.gz"): "minutes of CPU on ../shared/data",
    ("models.md", "caduceus models info kuleshov-group/"): "downloads a model from the Hugging Face hub",
    ("performance.md", "python benchmarks/model_speed.py --device cuda"): "needs a GPU",
    ("performance.md", "python benchmarks/scan_speed.py --device cuda"): "needs a GPU",
    ("performance.md", "python benchmarks/pretrain_speed.py --backend triton"): "needs a GPU",
    ("performance.md", "python benchmarks/pretrain_speed.py --micro-batch-size 128"): "needs one and two GPUs",
    ("performance.md", "python benchmarks/embed_speed.py --regions 10000 --device cuda"): "needs a GPU",
    ("performance.md", "python benchmarks/variants_speed.py --model random-ps-256x16 --device cuda"): "needs a GPU",
    ("performance.md", "caduceus benchmark speed --tasks forward"): "needs a GPU",
    ("performance.md", "python benchmarks/finetune_gpu.py"): "needs a GPU",
    ("performance.md", "python benchmarks/scan_speed.py --device cpu"): "a measurement: minutes of CPU",
    ("performance.md", "python benchmarks/model_speed.py --device cpu"): "a measurement: minutes of CPU",
    ("performance.md", "python benchmarks/variants_speed.py --model bundled --device cpu"): "a measurement: minutes of CPU",
    ("performance.md", "python benchmarks/memory_scaling.py"): "a measurement: about an hour of CPU",
    ("performance.md", "python benchmarks/model_speed.py --cpu-compare"): "a measurement: minutes of CPU",
    ("performance.md", "caduceus score-variants first200.vcf"): "needs a subset of a real VCF, made by hand",
    ("performance.md", "caduceus finetune probe train4000.csv"): "needs subsets of a real task, made by hand",
    ("performance.md", "python benchmarks/interpret_speed.py dense"): "a measurement: minutes of CPU",
    ("performance.md", "python benchmarks/long_range_gpu.py --out"): "needs a GPU",
    ("performance.md", "python benchmarks/multi_gpu.py --out"): "needs several GPUs of one host",
    ("performance.md", "caduceus score-variants snv4.vcf"): "a measurement: minutes on 2 CPU cores",
    ("score-variants.md", "caduceus score-variants eqtl.vcf.gz -f hg38.fa -m kuleshov-group/"):
        "downloads a model from the Hugging Face hub and needs a GPU",
    ("embed.md", "caduceus embed hg38.fa tss.bed --window 1536 --context 131072"):
        "downloads a model from the Hugging Face hub and needs a GPU",
    ("performance.md", "python benchmarks/attribution_cpu.py"): "a measurement on real data: minutes of CPU",
    ("pretrain.md", "caduceus pretrain sacCer3.fa.gz ecoli_K12_MG1655.fa.gz"): "needs one or several GPUs",
    ("pretrain.md", "A=\"$G/sacCer3.fa.gz"): "needs two GPUs",
    ("reliability.md", "CADUCEUS_FUZZ_EXAMPLES=15000"): "a fuzzing campaign: minutes to hours",
    ("reliability.md", "nextflow run examples/nextflow/main.nf"): "needs Nextflow and a network connection",
}

# Example commands that fail until a fix on another branch is merged: the test expects them to
# fail, and fails as soon as one of them runs (then remove it from here).
KNOWN_BROKEN: dict[str, str] = {}  # example command -> why it cannot run yet (none today)

# Words of a lab notebook: history, internal references, how runs were scheduled.
NOTEBOOK = [r"\bissue \d", r"\(issue", r"\bthe issue\b", r"kept as history", r"first engine", r"this machine",
            r"this session", r"earlier session", r"device call", r"device time", r"for the lead", r"\.gpu/",
            r"shared/gpu", r"(?<![\w/-])#\d+", r"\bTODO\b", r"not re-measured", r"was not run\b"]


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    text: str
    not_run: str | None

    @property
    def first(self) -> str:
        return commands(self)[0] if self.lang in SHELL else self.text.strip().splitlines()[0]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the not-run mark of the line before each."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        mark = NOT_RUN_MARK.match(lines[i - 1]) if i else None
        blocks.append(Block(page.name, i + 1, lang, body, mark.group(1) if mark else None))
        i = end + 1
    return blocks


def commands(block: Block) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments and output lines left out."""
    out, pending = [], ""
    for raw in block.text.splitlines():
        line = raw.strip()
        if block.lang == "console":
            if not pending and not line.startswith("$ "):
                continue
            line = line.removeprefix("$ ")
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(" ".join((pending + line).split()))
        pending = ""
    return out


ALL_BLOCKS = [block for page in PAGES for block in read_blocks(page)]
EXAMPLE_BLOCKS = [b for b in ALL_BLOCKS if b.lang in EXAMPLES]
RUN = [b for b in EXAMPLE_BLOCKS if b.not_run is None]
PARSE_ONLY = [b for b in EXAMPLE_BLOCKS if b.not_run is not None]


# ---- stand-in inputs ---------------------------------------------------------------------------

def _sequence(rng: random.Random, label: int) -> str:
    bases = [rng.choice("ACGT") for _ in range(48)]
    if label:
        bases[20:26] = "TATAAA"
    return "".join(bases)


def _labeled_csv(rng: random.Random, n: int) -> str:
    return "sequence,label\n" + "".join(f"{_sequence(rng, i % 2)},{i % 2}\n" for i in range(n))


def make_inputs(folder: Path) -> None:
    """Small stand-ins of every input the examples name, from the bundled synthetic genome (chrA
    18 kb, chrB 9 kb): a few regions, variants and sequences, so that each example runs in seconds."""
    import pysam

    examples = REPO / "caduceus_cli" / "data" / "examples"
    shutil.copy(examples / "synthetic_genome.fa", folder / "genome.fa")
    shutil.copy(examples / "synthetic_genome.fa.fai", folder / "genome.fa.fai")
    genome = pysam.FastaFile(str(folder / "genome.fa"))
    rng = random.Random(0)

    def base(contig: str, pos: int) -> str:
        return genome.fetch(contig, pos - 1, pos).upper()

    def other(ref: str) -> str:
        return rng.choice([b for b in "ACGT" if b != ref])

    (folder / "regions.bed").write_text("chrA\t1000\t1300\tr1\t0\t+\nchrA\t5000\t5200\tr2\t0\t-\n"
                                        "chrB\t8900\t9100\tr3\t0\t+\n")
    (folder / "sequences.fa").write_text("".join(f">seq{i}\n{genome.fetch('chrA', 2000 + 300 * i, 2200 + 300 * i)}\n"
                                                 for i in range(3)))
    tss = "chrA\t500\t501\tg1\nchrA\t9000\t9001\tg2\nchrB\t3000\t3001\tg3\n"
    (folder / "tss.bed").write_text(tss)
    with gzip.open(folder / "tss.bed.gz", "wt") as handle:
        handle.write(tss)
    records = [f"chrA\t{pos}\t.\t{base('chrA', pos)}\t{other(base('chrA', pos))}\t.\t.\t." for pos in (1000, 2000, 3000)]
    deleted = genome.fetch("chrA", 3999, 4001).upper()
    records.append(f"chrA\t4000\t.\t{deleted}\t{deleted[0]}\t.\t.\t.")
    header = ["##fileformat=VCFv4.2", "##contig=<ID=chrA,length=18000>", "##contig=<ID=chrB,length=9000>",
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    (folder / "calls.vcf").write_text("\n".join(header + records) + "\n")
    pysam.tabix_compress(str(folder / "calls.vcf"), str(folder / "calls.vcf.gz"))
    pysam.tabix_index(str(folder / "calls.vcf.gz"), preset="vcf")
    (folder / "calls.vcf").unlink()
    labeled = ["chrom\tpos\tref\talt\tlabel"]
    for contig, length in (("chrA", 18000), ("chrB", 9000)):
        for i in range(10):
            pos = 300 + i * (length - 600) // 10
            labeled.append(f"{contig}\t{pos}\t{base(contig, pos)}\t{other(base(contig, pos))}\t{i % 2}")
    (folder / "labeled.tsv").write_text("\n".join(labeled) + "\n")
    (folder / "train.csv").write_text(_labeled_csv(rng, 32))
    (folder / "test.csv").write_text(_labeled_csv(rng, 16))
    (folder / "new.fa").write_text("".join(f">s{i}\n{_sequence(rng, i % 2)}\n" for i in range(4)))
    task = folder / "GUE" / "tf_0"
    task.mkdir(parents=True)
    for split, n in (("train", 32), ("dev", 16), ("test", 16)):
        (task / f"{split}.csv").write_text(_labeled_csv(rng, n))


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """One folder of stand-in inputs per page (examples of a page run in order, in one folder)."""
    made: dict[str, Path] = {}

    def get(page: str) -> Path:
        if page not in made:
            made[page] = tmp_path_factory.mktemp(page.replace(".", "_"))
            make_inputs(made[page])
        return made[page]

    return get


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    bin_dir = str(Path(console_command()[0]).parent)
    return console_env({"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
                        "CADUCEUS_CACHE": str(tmp_path_factory.mktemp("cache")), "NUMBA_NUM_THREADS": "1"})


# ---- the examples run --------------------------------------------------------------------------

@pytest.mark.parametrize("block", RUN, ids=str)
def test_example_runs(block, workspaces, example_env):
    folder = workspaces(block.page)
    if block.lang == "python":
        done = subprocess.run([sys.executable, "-"], input=block.text, cwd=folder, env=example_env, text=True,
                              capture_output=True, timeout=600)
        assert done.returncode == 0, f"{block}: the Python example failed:\n{done.stderr[-3000:]}"
        return
    failed, broke_as_known = [], []
    for command in commands(block):
        done = subprocess.run(["bash", "-c", "set -euo pipefail; " + command], cwd=folder, env=example_env,
                              text=True, capture_output=True, timeout=600)
        ok = done.returncode == 0 and "Traceback" not in done.stderr
        command = re.sub(r"\s+#.*$", "", command)
        if command in KNOWN_BROKEN:
            assert not ok, f"{block}: `{command}` runs now: remove it from KNOWN_BROKEN"
            broke_as_known.append(command)
        elif not ok:
            failed.append(f"`{command}` exited {done.returncode}:\n{done.stderr[-2000:]}")
    assert not failed, f"{block}: " + "\n".join(failed)
    if broke_as_known:
        pytest.xfail("; ".join(f"`{c}`: {KNOWN_BROKEN[c]}" for c in broke_as_known))


def test_examples_are_found():
    """The extraction sees the examples of every command page (so that the test above cannot pass
    by finding nothing)."""
    runnable = {b.page for b in RUN}
    assert {"README.md", "embed.md", "score-variants.md", "pretrain.md", "finetune.md", "benchmarks.md",
            "models.md", "reliability.md"} <= runnable
    programs = {shlex.split(c)[0] for b in RUN if b.lang in SHELL for c in commands(b)}
    assert programs <= {"caduceus", "zcat"}, programs


# ---- blocks that do not run: listed, and their options exist --------------------------------------

def test_every_block_that_does_not_run_is_marked_and_listed():
    marked = {(b.page, b.first): b.not_run for b in PARSE_ONLY}
    listed = {key: why for key, why in NOT_RUN.items()}
    unlisted = [f"{page}: {first}" for page, first in marked if not any(
        page == p and first.startswith(prefix) for p, prefix in listed)]
    stale = [f"{p}: {prefix}" for p, prefix in listed if not any(
        page == p and first.startswith(prefix) for page, first in marked)]
    assert unlisted == [], "blocks marked <!-- not run --> but missing from NOT_RUN"
    assert stale == [], "NOT_RUN entries whose block is gone or no longer marked"


def test_commands_outside_example_blocks_are_not_hidden():
    """A command line in a block of another language (or none) would escape this test."""
    starts = ("caduceus ", "$ caduceus", "torchrun ", "python ", "python3 ")
    hidden = [f"{b}: {line.strip()}" for b in ALL_BLOCKS if b.lang not in EXAMPLES
              for line in b.text.splitlines() if line.strip().startswith(starts)]
    assert hidden == []


_HELP: dict[tuple[str, ...], set[str]] = {}


def _caduceus_options(path: tuple[str, ...]) -> set[str]:
    if path not in _HELP:
        done = subprocess.run(console_command(*path, "--help"), capture_output=True, text=True, timeout=120,
                              env=console_env({"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}))
        assert done.returncode == 0, f"`caduceus {' '.join(path)} --help` failed: {done.stderr[-500:]}"
        _HELP[path] = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", done.stdout))
    return _HELP[path]


def _options(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if re.match(r"^--?[A-Za-z]", t)]


def _check_caduceus(args: list[str]) -> list[str]:
    path = tuple(args[:2]) if args and args[0] in ("finetune", "models") else tuple(args[:1])
    known = _caduceus_options(path)
    return [f"caduceus {' '.join(path)}: no option {o}" for o in _options(args[len(path):]) if o not in known]


def _check_script(script: str, args: list[str]) -> list[str]:
    path = REPO / script
    if not path.is_file():
        return [f"{script}: no such script"]
    text = path.read_text()
    return [f"{script}: no option {o}" for o in _options(args) if f'"{o}"' not in text and f"'{o}'" not in text]


def _check_segment(tokens: list[str]) -> list[str]:
    while tokens and re.match(r"^\w+=", tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return []
    program, args = tokens[0], tokens[1:]
    if program == "caduceus":
        return _check_caduceus(args)
    if program in ("python", "python3", "torchrun"):
        if "-m" in args:
            module, rest = args[args.index("-m") + 1], args[args.index("-m") + 2:]
            if module == "caduceus_cli":
                return _check_caduceus(rest)
            if module == "pytest":
                test = next((a for a in rest if a.startswith("tests/")), None)
                if test is None:
                    return []
                file, _, name = test.partition("::")
                missing = not (REPO / file).is_file() or (name and name.split("[")[0] not in (REPO / file).read_text())
                return [f"no test {test}"] if missing else []
            return [] if module == "pip" else [f"python -m {module}: no check for it"]
        script = next(a for a in args if a.endswith(".py"))
        return _check_script(script, args[args.index(script) + 1:])
    if program in ("pip", "cp", "mkdir", "zcat", "cat", "gzip", "head"):
        return []
    if program == "bash":
        return [] if args and (REPO / args[0]).is_file() else [f"bash {' '.join(args)}: no such script"]
    if program == "nextflow":
        workflow = REPO / args[1]
        if not workflow.is_file():
            return [f"{args[1]}: no such workflow"]
        text = workflow.read_text()
        return [f"{args[1]}: no parameter {o}" for o in _options(args[2:]) if f"params.{o.lstrip('-')}" not in text]
    return [f"{program}: no check for this program; add one to tests/test_docs.py"]


def _expand(command: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), command)


@pytest.mark.parametrize("block", PARSE_ONLY, ids=str)
def test_example_that_does_not_run_uses_options_that_exist(block):
    if block.lang == "python":
        compile(block.text, str(block), "exec")
        return
    problems, variables = [], {}
    for command in commands(block):
        assignment = re.match(r'^(\w+)="([^"]*)"$', command)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        tokens = shlex.split(_expand(command, variables), comments=True)
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token in ("|", "&&", "||", ";"):
                problems += _check_segment(segment)
                segment = []
            else:
                segment.append(token)
    assert problems == [], f"{block}: {problems}"


# ---- what the pages say ------------------------------------------------------------------------

def test_pages_hold_no_history_and_no_internal_references():
    found = [f"{page.name}:{n}: {line.strip()[:100]}" for page in PAGES
             for n, line in enumerate(page.read_text().splitlines(), 1)
             for pattern in NOTEBOOK if re.search(pattern, line, re.IGNORECASE)]
    assert found == []


def test_speed_and_memory_tables_are_on_the_performance_page():
    speed = re.compile(r"tokens/s|regions/s|variants/s|bases/s|peak (RSS|GiB|GPU|memory)|\bms\b", re.IGNORECASE)
    found = []
    for page in PAGES:
        if page.name == "performance.md":
            continue
        lines = page.read_text().splitlines()
        found += [f"{page.name}:{n}" for n, (header, rule) in enumerate(zip(lines, lines[1:]), 1)
                  if re.match(r"^\|\s*-{3}", rule) and speed.search(header)]
    assert found == []


def test_the_default_model_is_not_called_yeast_only():
    text = "\n".join(p.read_text() for p in PAGES)
    assert not re.search(r"pretrained on the yeast genome|yeast-pretrained", text)


def test_no_page_installs_from_pypi_by_name():
    """The package is not published: an install command names a local folder."""
    text = "\n".join(p.read_text() for p in PAGES)
    assert not re.search(r"pip install '?caduceus-cli", text)


def test_every_backend_option_lists_every_backend():
    from caduceus_cli.choices import BACKENDS

    rows = [line for line in (REPO / "docs" / "cli.md").read_text().splitlines() if line.startswith("| `--backend`")]
    assert len(rows) >= 6
    assert [row for row in rows if not all(name in row for name in BACKENDS)] == []


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*\.md)?(?:#([\w-]+))?\)", page.read_text()):
            linked = (page.parent / target) if target else page
            if target.startswith("http") or not (target or anchor):
                continue
            if not linked.is_file():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == []


def _names_exist(dotted: str) -> bool:
    """``caduceus_cli.model.scan.selective_scan``: the longest module prefix is a file or package of
    the repository and the rest (if any) is a name defined or imported in it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[cut:]
            return not rest or re.search(rf"\b{re.escape(rest[0])}\b", module.read_text()) is not None
    return False


def test_files_and_modules_the_docs_name_exist():
    """Paths of the repository (`caduceus_cli/...`, `tests/...::test_name`, `benchmarks/...`) and
    dotted names of the package that a page names in code spans are there."""
    missing = []
    for page in PAGES:
        text = page.read_text()
        for path in re.findall(r"`((?:caduceus_cli|tests|benchmarks|scripts|examples)/[\w/.-]+(?:::\w+)?)", text):
            file, _, test = path.partition("::")
            target = REPO / file
            if not target.exists() or (test and test not in target.read_text()):
                missing.append(f"{page.name}: {path}")
        for path in re.findall(r"`((?:genome|model|pipelines|commands|runtime)/[\w/.-]+\.py)", text):
            if not (REPO / "caduceus_cli" / path).is_file():
                missing.append(f"{page.name}: {path}")
        for dotted in re.findall(r"`(caduceus_cli(?:\.\w+)+)", text):
            if not _names_exist(dotted):
                missing.append(f"{page.name}: {dotted}")
    assert missing == []


def test_pretrain_help_lists_every_backend_it_accepts():
    from caduceus_cli.choices import BACKENDS

    done = subprocess.run(console_command("pretrain", "--help"), capture_output=True, text=True, timeout=120,
                          env=console_env({"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}))
    backend_help = done.stdout[done.stdout.index("--backend"):]
    assert done.returncode == 0 and [name for name in BACKENDS if name not in backend_help] == []


# ---- generated reference and cited runs ----------------------------------------------------------

def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_app():
    assert _generator().render() == (REPO / "docs" / "cli.md").read_text(), \
        "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_cli_reference_lists_the_options_older_docs_missed():
    text = (REPO / "docs" / "cli.md").read_text()
    for option in ("--tissue", "--n-train", "--dtype", "--seed", "--revision"):
        assert f"`{option}`" in text


def _expand_braces(pattern: str) -> list[str]:
    """``a_{x,y}.json`` -> ``a_x.json``, ``a_y.json``."""
    match = re.search(r"\{([^}]*)\}", pattern)
    if not match:
        return [pattern]
    return [p for alt in match.group(1).split(",")
            for p in _expand_braces(pattern[:match.start()] + alt + pattern[match.end():])]


def test_every_file_in_docs_runs_is_cited_by_the_docs():
    text = "\n".join(p.read_text() for p in PAGES)
    patterns = [q for p in re.findall(r"runs/([\w.*{},-]+)", text) for q in _expand_braces(p.rstrip(".,"))]
    uncited = [f.name for f in sorted((REPO / "docs" / "runs").iterdir())
               if not any(fnmatch.fnmatch(f.name, p) for p in patterns)]
    assert uncited == []
