"""The command line as a user meets it: usage errors are one line with exit status 2 (through the
real console script); every --help shows real examples and flags as flags; every command that
writes data ends with one summary sentence on stderr (--json: one JSON line)."""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, console

@pytest.mark.parametrize("args, fragments", [
    (["nosuch"], ["No such command 'nosuch'", "caduceus --help"]),
    (["embed", "--bogus-flag"], ["embed: No such option: --bogus-flag", "caduceus embed --help"]),
    (["embed"], ["embed: Missing argument 'FASTA'"]),
    (["score-variants", "in.vcf"], ["score-variants: Missing option '--fasta'"]),
    (["embed", "g.fa", "--window", "1.5"], ["embed: Invalid value for '--window'"]),
    (["finetune", "svm", "x.tsv", "--n-train", "many"], ["finetune svm: Invalid value for '--n-train'"]),
    (["models", "info", "--bogus"], ["models info: No such option: --bogus"]),
])
def test_usage_errors_are_one_line_with_exit_status_2(args, fragments):
    """Defect: with Typer 0.29 (click vendored as typer._click) these printed a traceback."""
    result = console(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caduceus: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args", [[], ["finetune"], ["models"]])
def test_a_bare_group_prints_its_help(args):
    result = console(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "Usage:" in result.stderr + result.stdout  # rich help goes to stdout, plain click help to stderr


def _commands() -> dict[str, object]:
    """Every command and group of the app by its words after `caduceus` ('' for the root)."""
    import typer

    from caduceus_cli.cli import app

    def walk(path, command):
        yield " ".join(path), command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk((*path, name), sub)

    return dict(walk((), typer.main.get_command(app)))


@pytest.mark.parametrize("path", list(_commands()), ids=lambda p: p or "caduceus")
def test_every_help_shows_real_examples_and_flags_as_flags(run_cli, monkeypatch, path):
    monkeypatch.setenv("COLUMNS", "200")  # example lines unwrapped
    code, out, err = run_cli(*path.split(), "--help")
    assert code == 0, err
    text = out + err
    lines = [ln.strip(" │") for ln in text.splitlines()]
    examples = [ln for ln in lines[lines.index("Examples:") + 1:] if ln.startswith("caduceus ")]
    assert 1 <= len(examples) <= 3 and all(ln.startswith(f"caduceus {path}".strip()) for ln in examples), text
    assert not [w for w in ("<bool>", "BOOLEAN", "<int>", "<str>", "<float>") if w in text]
    flags = [p for p in _commands()[path].params if getattr(p, "is_flag", False)]
    for flag in flags:
        row = next(ln.split() for ln in lines if ln.split()[:1] == [max(flag.opts, key=len)])
        after = row[2] if len(row) > 2 and row[1] in flag.opts else row[1]
        assert not after.isupper(), row  # a flag takes no value: no TEXT/INTEGER/... after it


EXAMPLES = REPO / "caduceus_cli" / "data" / "examples"


@pytest.mark.parametrize("command", ["embed", "score-variants", "pretrain"])
def test_every_data_command_ends_with_one_sentence_on_stderr_or_one_json_line(run_cli, small_ps_dir, tmp_path,
                                                                             command):
    """Commands writing data say what they did in one sentence on stderr (stdout may be the data);
    --json makes that one JSON line; --quiet silences it."""
    genome, regions = EXAMPLES / "synthetic_genome.fa", EXAMPLES / "synthetic_regions.bed"
    ref = genome.read_text().splitlines()[1][9]
    vcf = tmp_path / "one.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chrA\t10\t.\t{ref}\t{'C' if ref == 'A' else 'A'}\t.\t.\t.\n")
    args, verb, key = {
        "embed": (["embed", genome, regions, "-m", small_ps_dir, "--window", "64"], "embedded", "regions"),
        "score-variants": (["score-variants", vcf, "-f", genome, "-m", small_ps_dir, "--window", "32"], "scored",
                           "records"),
        "pretrain": (["pretrain", genome, "--d-model", "16", "--n-layer", "1", "--seq-len", "64", "--steps", "2",
                      "--batch-size", "2", "--device", "cpu"], "trained", "steps"),
    }[command]
    for k, extra in enumerate(([], ["--json"], ["-q"])):
        code, _, err = run_cli(*args, *extra, "-o", tmp_path / f"out{k}.{'tsv' if command != 'pretrain' else 'run'}")
        assert code == 0, err
        last = err.splitlines()[-1] if err else ""
        if not extra:
            assert last.startswith(f"caduceus: {command}: {verb} ") and " -> " in last, err
        elif extra == ["--json"]:
            assert key in json.loads(last), err
        else:  # warnings still show
            assert f"caduceus: {command}:" not in err and "{" not in err, err


def test_every_command_that_runs_a_model_takes_threads_and_the_inference_ones_dtype():
    """--threads on every command that runs a model; --dtype (the compute dtype) on every one that
    runs it for inference (pretrain and finetune classify train in their own precision)."""
    options = {path: {opt for p in getattr(cmd, "params", []) for opt in p.opts} for path, cmd in _commands().items()}
    runs_a_model = [p for p, opts in options.items() if "--model" in opts or p in ("pretrain", "predict")]
    assert {"score-variants", "embed", "predict", "ism", "track", "calibrate", "benchmark", "pretrain",
            "finetune svm", "finetune probe", "finetune classify"} <= set(runs_a_model)
    assert [p for p in runs_a_model if p != "models info" and "--threads" not in options[p]] == []
    training = {"pretrain", "finetune classify", "models info"}
    assert [p for p in runs_a_model if p not in training and "--dtype" not in options[p]] == []
