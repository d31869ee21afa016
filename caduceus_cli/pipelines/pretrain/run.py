"""``pretrain``: a whole run, from the options to final/, resumable, on one device or many ranks.

Steps: open the run folder (new, or the run to resume), resolve the settings (a resumed run keeps
its configuration and data), load the genomes and split them, then under torchrun build the model
and trainer, restore the latest checkpoint, write run.json, train (metrics, validation,
checkpoints, --max-time) and save final/ and summary.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ... import stopping
from ..._version import __version__
from ...errors import CaduceusError
from ...io import command_line, refuse_overwriting_inputs, write_json, writing
from ...progress import advise_on_cpu
from ...runtime import Runtime, prefetch, torchrun
from .checkpoints import (latest_checkpoint, load_trainer_state, prepare_run_folder, remove_unstarted_run,
                          save_checkpoint, save_final, truncate_metrics)
from .data import GenomeSet, WindowSampler, batch_stream, regions_digest, split_regions, unigram_baseline, validation_set
from .settings import (FINAL_DIR, MASK_PROB, MASK_TOKEN_FRACTION, MAX_N_FRACTION, METRICS_FILE, RANDOM_BASE_FRACTION,
                       RC_AUGMENT_PROB, RUN_FILE, PretrainSettings, parse_duration)
from .trainer import Trainer, default_micro_batch, new_model

log = logging.getLogger("caduceus")
ProgressFn = Callable[..., None]


@dataclass
class RunPlan:
    """A resolved run: its folder and settings, the saved run.json when resuming, and the data."""

    run_dir: Path
    settings: PretrainSettings
    saved: dict | None
    data: GenomeSet
    train: np.ndarray  # (n, 2) global [start, end) intervals
    valid: np.ndarray
    split_how: str
    digest: str
    command: str


@dataclass
class Reporting:
    """Where a run reports (rank 0 only): ``progress(n, **fields)`` per step, ``set_total(steps)``."""

    progress: ProgressFn | None = None
    set_total: Callable[[int], None] | None = None


def pretrain(genomes: list[str] | None = None, out_dir: str | None = None, *, resume: str | None = None,
             progress: ProgressFn | None = None, set_total: Callable[[int], None] | None = None,
             command: str | None = None, max_in_memory_bases: int | None = None, **options) -> dict:
    """Pretrain a Caduceus masked-LM on ``genomes`` into the run folder ``out_dir`` (or continue the
    run in ``resume``). ``options`` are ``PretrainSettings`` fields (``max_time`` may be a duration
    such as '1h30m'); None means "not given". Under torchrun each process takes cuda:LOCAL_RANK.

    Returns the summary (also written to RUN_DIR/summary.json by rank 0).
    """
    started = time.time()
    refuse_overwriting_inputs(out_dir, *(genomes or []), options.get("intervals"))
    run_dir, saved = _open_run(out_dir, resume)
    settings = _resolve_settings(_given_options(options, genomes, saved), saved, run_dir)
    created = prepare_run_folder(run_dir)
    try:
        with contextlib.closing(GenomeSet(settings.genomes, max_in_memory_bases)) as data:
            train, valid, split_how = split_regions(data, settings.seq_len, settings.intervals, settings.valid_contigs)
            digest = regions_digest(train, valid)
            _check_same_data(run_dir, saved, data, digest)
            plan = RunPlan(run_dir, settings, saved, data, train, valid, split_how, digest, command or command_line())
            with torchrun(settings.device) as runtime:
                return _train(plan, runtime, started, Reporting(progress, set_total))
    except BaseException:
        if created:
            remove_unstarted_run(run_dir)
        raise


# -- the run folder and the settings ---------------------------------------------------------------
def _open_run(out_dir: str | None, resume: str | None) -> tuple[Path, dict | None]:
    """(run folder, its run.json when resuming); refuses a new run in a folder that holds one."""
    if resume and out_dir and Path(out_dir).resolve() != Path(resume).resolve():
        raise CaduceusError(f"--resume {resume} and -o {out_dir} name different folders: give one of them")
    if not resume and not out_dir:
        raise CaduceusError("give the run folder with -o RUN_DIR (or --resume RUN_DIR to continue a run)")
    run_dir = Path(resume or out_dir)
    if not resume:
        if (run_dir / RUN_FILE).is_file():
            raise CaduceusError(f"{run_dir}: already holds a pretraining run: continue it with --resume {run_dir} "
                                "or choose another -o folder")
        if run_dir.exists() and not (run_dir.is_dir() and not any(run_dir.iterdir())):
            raise CaduceusError(f"{run_dir}: already exists{' and is not empty' if run_dir.is_dir() else ''}: a new "
                                "run needs a new (or empty) -o folder")
        return run_dir, None
    if not (run_dir / RUN_FILE).is_file():
        raise CaduceusError(f"{run_dir}: not a pretraining run folder (no {RUN_FILE}); nothing to resume")
    try:
        return run_dir, json.loads((run_dir / RUN_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CaduceusError(f"{run_dir / RUN_FILE}: line {e.lineno}: not valid JSON ({e.msg})") from None


def _given_options(options: dict, genomes: list[str] | None, saved: dict | None) -> dict:
    """The options as given, normalised; a resumed run's data options default to its own."""
    options = {k: v for k, v in options.items() if k != "genomes"}
    if isinstance(options.get("variant"), str):
        options["variant"] = options["variant"].lower()
    if isinstance(options.get("max_time"), str):
        options["max_time"] = parse_duration(options["max_time"])
    if genomes:
        options["genomes"] = [str(Path(g).resolve()) if g != "-" else g for g in genomes]
    if options.get("valid_contigs") is not None:
        options["valid_contigs"] = list(options["valid_contigs"])
    if saved is not None:
        for key in ("intervals", "valid_contigs"):  # part of the data identity, checked by digest
            if options.get(key) is None:
                options[key] = saved["settings"].get(key)
        if not genomes:
            options["genomes"] = saved["settings"]["genomes"]
    return options


def _resolve_settings(options: dict, saved: dict | None, run_dir: Path) -> PretrainSettings:
    """Options given now (None = not given) on top of the saved run (when resuming) or the defaults.
    A given identity option that differs from the saved run is refused."""
    defaults = PretrainSettings()
    values = {}
    saved_settings = (saved or {}).get("settings", {})
    for f in fields(PretrainSettings):
        given = options.get(f.name)
        if saved is not None and f.name in PretrainSettings.IDENTITY:
            before = saved_settings.get(f.name)
            if given is not None and before is not None and given != before:
                raise CaduceusError(
                    f"{run_dir}: was trained with --{f.name.replace('_', '-')} {before}, not {given}: a resumed "
                    "run keeps its configuration; start a new run folder to change it")
            values[f.name] = before if given is None else given
        elif given is not None:
            values[f.name] = given
        elif saved is not None and f.name in saved_settings and f.name not in ("device", "max_time"):
            values[f.name] = saved_settings[f.name]
        else:
            values[f.name] = getattr(defaults, f.name)
    settings = PretrainSettings(**values)
    settings.validate()
    if not settings.genomes:
        raise CaduceusError("give at least one genome FASTA file (GENOME.fa[.gz])")
    return settings


def _check_same_data(run_dir: Path, saved: dict | None, data: GenomeSet, digest: str) -> None:
    if saved is None:
        return
    if data.fingerprint() != saved["data"]["genomes"]:
        raise CaduceusError(f"{run_dir}: was trained on other genomes "
                            f"({', '.join(g['file'] for g in saved['data']['genomes'])}): a resumed run "
                            "keeps its data; start a new run folder")
    if digest != saved["data"]["split_digest"]:
        raise CaduceusError(f"{run_dir}: was trained with another train/validation split "
                            f"({saved['data']['split']}): a resumed run keeps its data")


# -- setting up the training -------------------------------------------------------------------------
def _micro_batch(settings: PretrainSettings, rt: Runtime) -> int:
    if settings.batch_size % rt.world_size:
        raise CaduceusError(f"--batch-size {settings.batch_size} is not divisible by the number of "
                            f"processes ({rt.world_size})")
    local_batch = settings.batch_size // rt.world_size
    micro = settings.micro_batch_size or default_micro_batch(local_batch, settings.seq_len, settings.variant)
    if local_batch % micro:
        raise CaduceusError(f"--micro-batch-size {micro} does not divide the per-process batch of {local_batch} "
                            f"(--batch-size {settings.batch_size} over {rt.world_size} process(es))")
    return micro


def _resume(trainer: Trainer, plan: RunPlan, rt: Runtime) -> str | None:
    """Restore the latest checkpoint of a resumed run into ``trainer``; returns its name."""
    ckpt = latest_checkpoint(plan.run_dir) if plan.saved is not None else None
    if ckpt is None:
        return None
    from ...model.checkpoint import load_state_dict_strict, read_state_dict

    state_dict, path = read_state_dict(ckpt)
    load_state_dict_strict(trainer.model, {k: v.to(rt.device) for k, v in state_dict.items()}, str(path))
    trainer.load_state_dict(load_trainer_state(ckpt))
    if trainer.step >= plan.settings.steps:
        raise CaduceusError(f"{plan.run_dir}: this run already finished its {plan.settings.steps} steps: nothing "
                            f"to resume (its model is in {plan.run_dir / FINAL_DIR})")
    return ckpt.name


def _training_record(plan: RunPlan, rt: Runtime) -> dict:
    """The 'training' record that every saved model's config.json carries."""
    s = plan.settings
    return {"tool": "caduceus-cli", "tool_version": __version__, "command": plan.command,
            "genomes": [Path(g).name for g in s.genomes], "split": plan.split_how, "variant": s.variant,
            "seq_len": s.seq_len, "batch_size": s.batch_size, "steps_planned": s.steps, "lr": s.lr,
            "warmup": s.resolved_warmup(), "weight_decay": s.weight_decay, "seed": s.seed,
            "world_size": rt.world_size}


def _write_run_info(plan: RunPlan, rt: Runtime, step: int) -> None:
    """run.json (settings, data, objective, provenance); metric lines past ``step`` dropped."""
    s, train, valid = plan.settings, plan.train, plan.valid
    run_info = {
        "settings": {**asdict(s), "warmup": s.resolved_warmup()},
        "data": {"genomes": plan.data.fingerprint(), "split": plan.split_how, "split_digest": plan.digest,
                 "train_regions": int(len(train)), "valid_regions": int(len(valid)),
                 "train_bases": int((train[:, 1] - train[:, 0]).sum()),
                 "valid_bases": int((valid[:, 1] - valid[:, 0]).sum()) if len(valid) else 0},
        "objective": {"mask_prob": MASK_PROB, "mask_token": MASK_TOKEN_FRACTION,
                      "random_base": RANDOM_BASE_FRACTION, "max_n_fraction": MAX_N_FRACTION,
                      "rc_augment_prob": RC_AUGMENT_PROB if s.variant == "ph" else 0.0},
        "tool_version": __version__, "command": plan.command, "world_size": rt.world_size,
        "created": (plan.saved or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(plan.run_dir / RUN_FILE, run_info)
    metrics = plan.run_dir / METRICS_FILE
    if plan.saved is not None:
        truncate_metrics(metrics, step)
    elif metrics.exists():
        metrics.unlink()


def _train(plan: RunPlan, rt: Runtime, started: float, reporting: Reporting) -> dict:
    s = plan.settings
    model = new_model(s.variant, s.d_model, s.n_layer, s.seq_len, s.seed)
    trainer = Trainer(model, lr=s.lr, warmup=s.resolved_warmup(), steps=s.steps, weight_decay=s.weight_decay,
                      micro_batch_size=_micro_batch(s, rt), runtime=rt, backend=s.backend)
    resumed_from = _resume(trainer, plan, rt)
    valid_set = validation_set(WindowSampler(plan.data, plan.valid, s.seq_len), s.seed,
                               s.valid_windows) if len(plan.valid) else None
    record = _training_record(plan, rt)
    model.config.extra["training"] = record
    if rt.is_main:
        _write_run_info(plan, rt, trainer.step)
    loop = TrainingLoop(plan, trainer, WindowSampler(plan.data, plan.train, s.seq_len), valid_set, rt, started,
                        record, reporting)
    loop.run()
    summary = _summary(plan, trainer, loop, valid_set, resumed_from, rt, started)
    if rt.is_main:
        final_record = {**record, **{k: summary[k] for k in ("steps", "tokens", "train_loss", "valid_loss",
                                                             "valid_masked_accuracy", "unigram_baseline_base",
                                                             "unigram_baseline_accuracy")}}
        summary["final"] = str(save_final(plan.run_dir, model, final_record))
        write_json(plan.run_dir / "summary.json", summary)
    rt.barrier()
    return summary


# -- the training loop ---------------------------------------------------------------------------------
@dataclass
class TrainingLoop:
    """Steps until ``steps`` (or --max-time): metric lines, validation and checkpoints on schedule."""

    plan: RunPlan
    trainer: Trainer
    sampler: WindowSampler
    valid_set: tuple[np.ndarray, np.ndarray] | None
    rt: Runtime
    started: float
    record: dict
    reporting: Reporting
    stopped_early: bool = False
    last: dict = field(default_factory=lambda: {"train_loss": None, "valid_loss": None,
                                                "valid_masked_accuracy": None})
    speeds: list[float] = field(default_factory=list)  # tokens/s of each logged interval
    _interval: list[float] = field(default_factory=lambda: [0.0, 0, 0.0])  # start, steps, seconds excluded
    _shown: dict = field(default_factory=dict)

    @property
    def tokens_per_step(self) -> int:
        return self.plan.settings.batch_size * self.plan.settings.seq_len

    def run(self) -> None:
        s, trainer, rt = self.plan.settings, self.trainer, self.rt
        self._report_start()
        rc_prob = RC_AUGMENT_PROB if s.variant == "ph" else 0.0
        batches = prefetch(batch_stream(self.sampler, s.seed, rt.rank, s.batch_size // rt.world_size, trainer.step,
                                        s.steps, rc_prob, pin=trainer.device.type == "cuda"), depth=4)
        self._interval = [time.time(), 0, 0.0]
        try:
            for _, inputs, labels, n_targets in batches:
                stopping.check()
                trainer.train_step(inputs, labels, n_targets)
                self._interval[1] += 1
                if self._after_step(trainer.step):
                    break
        except stopping.Stopped:
            self._checkpoint_on_stop()
            raise
        finally:
            batches.close()

    def _checkpoint_on_stop(self) -> None:
        """A signal stopped the run between steps: keep the steps done since the last checkpoint
        (one process only; ranks of a torchrun run may stop at different steps, so they resume
        from the last scheduled checkpoint)."""
        step = self.trainer.step
        if self.rt.distributed or step == 0 or step % self.plan.settings.checkpoint_every == 0:
            return
        self._checkpoint(step)
        log.warning("stopped after step %d of %d: checkpoint saved; continue with --resume %s", step,
                    self.plan.settings.steps, self.plan.run_dir)

    def _after_step(self, step: int) -> bool:
        """Log, validate, checkpoint and report as scheduled; True when --max-time stops the run."""
        s = self.plan.settings
        over_time = self._over_time(step)
        done = step == s.steps or over_time
        if step % s.log_every == 0 or step % s.valid_every == 0 or done:
            self._log(step, done)
        if step % s.checkpoint_every == 0 or done:
            self._checkpoint(step)
        if self.rt.is_main and self.reporting.progress is not None:
            self.reporting.progress(1, **self._shown)
        if over_time and step < s.steps:
            self.stopped_early = True
            log.warning(
                "--max-time reached after %d of %d steps: checkpoint saved; continue with --resume %s",
                step, s.steps, self.plan.run_dir)
            return True
        return False

    def _report_start(self) -> None:
        if not self.rt.is_main:
            return
        if self.reporting.set_total is not None:
            self.reporting.set_total(self.plan.settings.steps)
        advise_on_cpu(self.reporting.progress, self.rt.device)
        if self.reporting.progress is not None and self.trainer.step:
            self.reporting.progress(self.trainer.step)

    def _over_time(self, step: int) -> bool:
        """Whether --max-time has passed on any rank (checked every 10 steps under torchrun)."""
        s = self.plan.settings
        if s.max_time is None or (self.rt.distributed and step % 10 and step != s.steps):
            return False
        return bool(self.rt.all_reduce([float(time.time() - self.started >= s.max_time)], "max")[0])

    def _log(self, step: int, done: bool) -> None:
        """One metric line (rank 0 writes it): train loss, speed, and validation when due."""
        s, trainer = self.plan.settings, self.trainer
        train_loss = trainer.take_train_loss()  # syncs the device: the timing below is honest
        start, steps, excluded = self._interval
        elapsed = time.time() - start - excluded
        tok_s = steps * self.tokens_per_step / elapsed if elapsed > 0 else float("nan")
        self.speeds.append(tok_s)
        line = {"step": step, "train_loss": train_loss, "valid_loss": None, "valid_masked_accuracy": None,
                "lr": trainer.last_lr, "tokens_per_s": tok_s, "tokens": step * self.tokens_per_step}
        if self.valid_set is not None and (step % s.valid_every == 0 or done):
            line["valid_loss"], line["valid_masked_accuracy"] = trainer.evaluate(*self.valid_set)
            self.last["valid_loss"], self.last["valid_masked_accuracy"] = line["valid_loss"], line["valid_masked_accuracy"]
        self.last["train_loss"] = train_loss
        if self.rt.is_main:
            metrics = self.plan.run_dir / METRICS_FILE
            with writing(metrics), open(metrics, "a") as f:
                f.write(json.dumps(line) + "\n")
        self._shown = {"loss": f"{train_loss:.4f}", "tok/s": f"{tok_s:,.0f}"}
        self._interval = [time.time(), 0, 0.0]

    def _checkpoint(self, step: int) -> None:
        """checkpoint-STEP/ by rank 0; its time is left out of the speed of the interval."""
        t0 = time.time()
        if self.rt.is_main:
            self.trainer.model.config.extra["training"] = {**self.record, "steps": step}
            save_checkpoint(self.plan.run_dir, self.trainer.model, self.trainer.state_dict(),
                            self.plan.settings.keep_checkpoints)
        self.rt.barrier()
        self._interval[2] += time.time() - t0


def _summary(plan: RunPlan, trainer: Trainer, loop: TrainingLoop, valid_set, resumed_from: str | None, rt: Runtime,
             started: float) -> dict:
    s = plan.settings
    baseline = unigram_baseline(valid_set[1]) if valid_set is not None else (None, None)
    return {
        "run_dir": str(plan.run_dir), "variant": "Caduceus-PS" if s.variant == "ps" else "Caduceus-Ph",
        "d_model": s.d_model, "n_layer": s.n_layer, "seq_len": s.seq_len, "steps": trainer.step,
        "steps_planned": s.steps, "stopped_early": loop.stopped_early, "resumed_from": resumed_from,
        "tokens": trainer.step * loop.tokens_per_step, **loop.last,
        "unigram_baseline_base": baseline[0], "unigram_baseline_accuracy": baseline[1],
        "tokens_per_s": float(np.median(loop.speeds)) if loop.speeds else None,
        "world_size": rt.world_size, "rank": rt.rank, "device": str(rt.device),
        "elapsed_s": round(time.time() - started, 1),
    }
