"""`finetune_classifier`: full fine-tuning with a classification (or regression) head, under the
paper's protocol (seeds, folds), into a classifier folder in the HuggingFace layout.

The folder: config.json (backbone + head: task, label names, pooling, RC handling, max length),
model.safetensors (the run with the best validation metric, at its best epoch), report.json,
metrics.jsonl, and resume/ when ``max_time`` stopped the job (continue with ``resume=DIR``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import torch

from ... import stopping
from ...choices import DEFAULT_MODEL, check_pooling
from ...errors import CaduceusError
from ...io import refuse_overwriting_inputs
from ...model.checkpoint import TASKS, new_classifier, save_model
from ...model.loading import resolve_model
from ...progress import advise_on_cpu
from ...runtime import torchrun
from . import recipe as R
from .data import LabelSpace, TokenSplit, load_split, tokenize_split
from .metrics import check_metric, is_better
from .protocol import check_protocol, plan_runs
from .report import METRICS_FILE, RESUME_DIR, MetricsLog, build_report, check_new_output, output_folder, stamp_head, write_report
from .resume import load_resume, load_weights, save_resume
from .train import RunState, RunTrainer, TrainSettings, init_head

log = logging.getLogger("caduceus")

# Settings that define a job: a resumed job keeps them (a different value given again is refused).
IDENTITY_DEFAULTS = {
    "model": DEFAULT_MODEL, "revision": None, "task": "classification", "seeds": 1, "folds": None,
    "valid_fraction": R.VALID_FRACTION, "epochs": R.EPOCHS, "lr": R.LR, "batch_size": R.BATCH_SIZE,
    "weight_decay": R.WEIGHT_DECAY, "pool": R.POOLING, "center_width": 1, "rc_aug": False, "conjoin_train": False,
    "freeze_backbone": False, "max_length": None, "select_metric": None, "sequence_column": None,
    "label_column": None, "fasta": None,
}
DATA_KEYS = ("train", "valid", "test")


def finetune_classifier(train=None, output_dir=None, *, model=DEFAULT_MODEL, valid=None, valid_fraction=R.VALID_FRACTION,
                        test=None, fasta=None, task="classification", seeds=1, folds=None, epochs=R.EPOCHS, lr=R.LR,
                        batch_size=R.BATCH_SIZE, weight_decay=R.WEIGHT_DECAY, pool=R.POOLING, rc_aug=False,
                        freeze_backbone=False, device=None, max_length=None, max_time=None, resume=None, progress=None,
                        sequence_column=None, label_column=None, center_width=1, conjoin_train=False,
                        select_metric=None, eval_batch_size=None, backend="auto", revision=None,
                        checkpoint_blocks=None, micro_batch_size=None) -> dict:
    """Fine-tune ``model`` on TRAIN; returns the report (also DIR/report.json). See the package docstring.

    ``checkpoint_blocks``: recompute each block in the backward pass instead of keeping its
    activations (same gradients, far less memory); None: on when the longest training sequence is
    longer than ``recipe.CHECKPOINT_BLOCKS_ABOVE`` bp. ``micro_batch_size``: sequences per
    forward/backward pass, whose gradients add up to the batch's (None: on a GPU as many as the
    activation estimate fits in 85% of its memory, else the whole batch)."""
    R.check_options(micro_batch_size=micro_batch_size)
    started = time.time()
    given = {k: v for k, v in locals().items() if k in IDENTITY_DEFAULTS}
    if isinstance(given["model"], os.PathLike):
        given["model"] = str(given["model"])
    if given["fasta"] is not None:
        given["fasta"] = str(Path(given["fasta"]).resolve())
    data = {"train": train, "valid": valid, "test": test}
    saved = None
    if resume is not None:
        if output_dir is not None and Path(output_dir).resolve() != Path(resume).resolve():
            raise CaduceusError(f"--resume {resume} and -o {output_dir} name different folders: give one of them")
        saved = load_resume(resume)
        given, data = _resumed_options(saved, given, data, resume)
    else:
        refuse_overwriting_inputs(output_dir, train, valid, test, fasta)
        check_new_output(output_dir)
    R.check_options(eval_batch_size=eval_batch_size)
    options = _checked(given, data)
    with torchrun(device) as runtime:
        job = _Job(options, data, runtime, backend, eval_batch_size, max_time, started, progress, checkpoint_blocks,
                   micro_batch_size)
        if saved is not None:
            job.check_digests(saved["digests"], resume)
        target = resume if resume is not None else output_dir
        with output_folder(target, replace=resume is not None, enabled=runtime.is_main) as folder:
            report = job.run(folder, saved, Path(resume) if resume is not None else None, target)
        runtime.barrier()
    if job.signal is not None:  # the folder holds what --resume continues; end as a stopped command does
        raise stopping.Stopped(job.signal)
    return report


def _resumed_options(saved: dict, given: dict, data: dict, folder) -> tuple[dict, dict]:
    options = dict(saved["options"])
    for key, value in given.items():
        if value != IDENTITY_DEFAULTS[key] and value != options.get(key):
            raise CaduceusError(f"{folder}: was started with {key}={options.get(key)!r}, not {value!r}: a resumed run "
                                "keeps its settings; start a new output folder to change them")
    for key in DATA_KEYS:
        if data[key] is None:
            data[key] = saved["data_paths"].get(key)
        if saved["data_paths"].get(key) is None and saved["digests"].get(key) is not None and data[key] is None:
            raise CaduceusError(f"{folder}: the {key} split was given in memory: pass it again to resume")
    return options, data


def _checked(options: dict, data: dict) -> dict:
    if data["train"] is None:
        raise CaduceusError("give the training data (TRAIN), or --resume DIR to continue a stopped run")
    if options["task"] not in TASKS:
        raise CaduceusError(f"--task must be one of {', '.join(TASKS)}, got {options['task']!r}")
    check_pooling(options["pool"])
    R.check_options(**{k: options[k] for k in ("epochs", "batch_size", "center_width", "max_length", "lr",
                                               "weight_decay")})
    check_protocol(seeds=options["seeds"], folds=options["folds"], valid_fraction=options["valid_fraction"],
                   has_valid=data["valid"] is not None, has_test=data["test"] is not None)
    options["select_metric"] = check_metric(options["task"], options["select_metric"] or R.SELECT_METRIC[options["task"]])
    return options


class _Job:
    """The data, label space, backbone and plan of one fine-tuning job."""

    def __init__(self, options: dict, data: dict, runtime, backend: str, eval_batch_size, max_time, started, progress,
                 checkpoint_blocks: bool | None = None, micro_batch_size: int | None = None):
        self.options, self.runtime, self.backend = options, runtime, backend
        self.max_time, self.started = max_time, started
        self.signal: int | None = None  # the signal that stopped the job (stopping.py)
        self.progress = progress if runtime.is_main else None
        read = dict(fasta=options["fasta"], task=options["task"], sequence_column=options["sequence_column"],
                    label_column=options["label_column"])
        self.splits = {k: load_split(data[k], k, **read) for k in DATA_KEYS}
        self.paths = {k: str(Path(v).resolve()) if isinstance(v, (str, Path)) else None for k, v in data.items()}
        self.digests = {k: v.digest() if v is not None else None for k, v in self.splits.items()}
        self.space = LabelSpace.from_train(self.splits["train"], options["task"])
        self.tokens = {k: self._tokens(v, k) for k, v in self.splits.items() if v is not None}
        longest = int(self.tokens["train"].lengths.max()) if len(self.tokens["train"].tokens) else 0
        self.checkpoint_blocks = (longest > R.CHECKPOINT_BLOCKS_ABOVE if checkpoint_blocks is None
                                  else bool(checkpoint_blocks))
        strata = self.space.stratify(self.tokens["train"].y)
        self.plans = plan_runs(len(self.tokens["train"].tokens), strata, seeds=options["seeds"], folds=options["folds"],
                               has_valid=self.splits["valid"] is not None, valid_fraction=options["valid_fraction"])
        self.backbone = resolve_model(options["model"], device=runtime.device, backend=backend,
                                      revision=options["revision"])
        self.settings = TrainSettings(options["epochs"], options["lr"], options["batch_size"], options["weight_decay"],
                                      options["rc_aug"], options["select_metric"],
                                      eval_batch_size or options["batch_size"],
                                      micro_batch_size or self._micro_batch(longest))

    def _micro_batch(self, longest: int) -> int | None:
        """On a GPU, the training sequences per pass that the activation estimate fits in 85% of its
        memory beside the weights, gradients and AdamW state; None (the whole batch) on a CPU."""
        if self.runtime.device.type != "cuda":
            return None
        import torch

        from ..variants.context import training_micro_batch

        total = torch.cuda.get_device_properties(self.runtime.device).total_memory
        state = 16 * sum(p.numel() for p in self.backbone.parameters())
        share = -(-self.options["batch_size"] // self.runtime.world_size)
        return training_micro_batch(self.backbone.config, longest, share, int(0.85 * total) - state,
                                    checkpoint=self.checkpoint_blocks)

    def check_digests(self, digests: dict, folder) -> None:
        for key, split in self.splits.items():
            if self.digests[key] != digests.get(key):
                raise CaduceusError(f"{folder}: the {key} data differ from the data the run started with: a "
                                    "resumed run keeps its data")

    def _tokens(self, split, what: str) -> TokenSplit:
        return tokenize_split(split.sequences, self.space.encode(split, what), self.options["max_length"])

    def _parts(self, plan) -> tuple[TokenSplit, TokenSplit, TokenSplit | None]:
        train = self.tokens["train"]
        valid = self.tokens["valid"] if plan.valid is None else train.subset(plan.valid)
        test = self.tokens.get("test") if plan.test is None else train.subset(plan.test)
        return train.subset(plan.train), valid, test

    def new_model(self, seed: int, fold: int | None):
        o = self.options
        model = new_classifier(self.backbone.config, task=o["task"], label_names=self.space.names, pooling=o["pool"],
                               center_width=o["center_width"], conjoin_train=o["conjoin_train"], conjoin_eval=True,
                               protocol="finetune", max_length=o["max_length"])
        model.caduceus.load_state_dict(self.backbone.caduceus.state_dict())
        init_head(model, seed, fold)
        model.to(self.runtime.device)
        model.backend = self.backend
        model.source = self.backbone.source
        model.backbone.checkpoint_blocks = self.checkpoint_blocks
        if o["freeze_backbone"]:
            model.caduceus.requires_grad_(False)
        return model

    def should_stop(self) -> bool:
        """After each step: past ``max_time``, or asked to stop by a signal (on any process)."""
        if self.max_time is None and not self.runtime.distributed:
            return stopping.requested() is not None
        over = self.max_time is not None and time.time() - self.started >= self.max_time
        return bool(self.runtime.all_reduce([float(over or stopping.requested() is not None)], "max")[0])

    # -- the whole protocol --------------------------------------------------------------------
    def run(self, folder: Path | None, saved: dict | None, resume_dir: Path | None, target) -> dict:
        self.target = target
        metrics_log = MetricsLog(folder, resume_dir / METRICS_FILE if resume_dir else None)
        completed = list(saved["completed"]) if saved else []
        chosen = {"index": saved.get("chosen_index"), "metric": saved.get("chosen_metric"),
                  "state": load_weights(resume_dir, "chosen")} if saved else {"index": None, "metric": None, "state": None}
        advise_on_cpu(self.progress, self.runtime.device)
        if self.progress is not None and hasattr(self.progress, "set_total"):
            per_step = self.options["batch_size"]
            self.progress.set_total(self.options["epochs"] * sum(-(-len(p.train) // per_step) for p in self.plans))
        for index in range(len(completed), len(self.plans)):
            plan = self.plans[index]
            model = self.new_model(plan.seed, plan.fold)
            train, valid, test = self._parts(plan)
            trainer = RunTrainer(model, self.settings, self.space, train, valid, self.runtime, seed=plan.seed,
                                 fold=plan.fold, log_metrics=metrics_log.write, progress=self.progress,
                                 should_stop=self.should_stop)
            state = RunState()
            if saved and index == saved["run_index"]:
                state = self._restore(trainer, saved, resume_dir)
                if self.progress is not None:
                    self.progress(index * self.settings.epochs * trainer.steps_per_epoch + state.step)
            if torch.cuda.is_available() and self.runtime.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.runtime.device)
            try:
                finished = trainer.fit(state)
            except stopping.Stopped:  # during a validation: the steps of the epoch are done and kept
                finished = False
            if not finished:
                return self._stop(folder, model, trainer, state, index, completed, chosen)
            result = self._finish_run(plan, model, trainer, state, test)
            completed.append(result)
            if is_better(self.settings.select_metric, state.best_metric, chosen["metric"]) or chosen["state"] is None:
                chosen = {"index": index, "metric": state.best_metric, "state": trainer.best_state}
        return self._final(folder, completed, chosen)

    def _restore(self, trainer: RunTrainer, saved: dict, resume_dir: Path) -> RunState:
        state = RunState(**saved["run_state"])
        trainer.model.load_state_dict({k: v.to(self.runtime.device) for k, v in load_weights(resume_dir, "current").items()})
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.best_state = load_weights(resume_dir, "best")
        return state

    def _finish_run(self, plan, model, trainer: RunTrainer, state: RunState, test) -> dict:
        if trainer.best_state is not None:
            model.load_state_dict({k: v.to(self.runtime.device) for k, v in trainer.best_state.items()})
        else:  # no epoch had a defined validation metric: keep the last weights
            trainer.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        test_metrics = trainer.evaluate(test) if test is not None and len(test.tokens) else None
        peak = (torch.cuda.max_memory_allocated(self.runtime.device) / 2**30
                if self.runtime.device.type == "cuda" else None)
        return {"seed": plan.seed, "fold": plan.fold, "valid": state.best_valid, "test": test_metrics,
                "best_epoch": state.best_epoch, "seconds": round(state.seconds, 2), "steps": state.step,
                "train_records": len(plan.train), "valid_records": len(trainer.valid.tokens),
                "test_records": None if test is None else len(test.tokens),
                "train_bases_per_s": state.bases * self.runtime.world_size / state.train_seconds
                if state.train_seconds else None, "peak_memory_gib": peak}

    # -- outputs -------------------------------------------------------------------------------
    def _report(self, completed: list[dict], chosen: dict, status: str) -> dict:
        o = self.options
        splits = {k: {"source": v.source, "records": len(v), "truncated": self.tokens[k].truncated}
                  for k, v in self.splits.items() if v is not None}
        used = R.recipe(lr=o["lr"], epochs=o["epochs"], batch_size=o["batch_size"], weight_decay=o["weight_decay"],
                        pooling=o["pool"], center_width=o["center_width"], rc_aug=o["rc_aug"],
                        conjoin_train=o["conjoin_train"], freeze_backbone=o["freeze_backbone"], seeds=o["seeds"],
                        folds=o["folds"], valid_fraction=None if self.splits["valid"] else o["valid_fraction"],
                        select_metric=o["select_metric"], max_length=o["max_length"],
                        checkpoint_blocks=self.checkpoint_blocks, micro_batch_size=self.settings.micro_batch,
                        world_size=self.runtime.world_size, device=str(self.runtime.device))
        plan = self.plans[chosen["index"]] if chosen["index"] is not None else None
        return build_report(task=o["task"], protocol="finetune", label_names=self.space.names, runs=completed,
                            folds=o["folds"], data=self._digests(),
                            recipe=used, model=self.backbone, status=status,
                            extra={"splits": splits, "saved_run": None if plan is None else plan.key,
                                   "runs_planned": len(self.plans)})

    def _save_model(self, folder: Path, state: dict) -> None:
        model = self.new_model(1, None).to("cpu")
        model.load_state_dict(state)
        if self.space.task == "regression":  # fold the target standardisation into the head
            with torch.no_grad():
                model.score.weight.mul_(self.space.std)
                model.score.bias.mul_(self.space.std).add_(self.space.mean)
        stamp_head(model, self.backbone, self._digests())
        save_model(model, folder)

    def _digests(self) -> dict:
        return dict(self.digests)

    def _final(self, folder: Path | None, completed: list[dict], chosen: dict) -> dict:
        report = self._report(completed, chosen, "finished")
        if folder is not None:
            self._save_model(folder, chosen["state"])
            write_report(folder, report)
        return report

    def _stop(self, folder, model, trainer: RunTrainer, state: RunState, index: int, completed, chosen) -> dict:
        report = self._report(completed, chosen, "stopped")
        self.signal = stopping.requested()
        cause = "--max-time" if self.signal is None else signal.Signals(self.signal).name
        report["resume"] = (f"stopped by {cause} in run {index + 1} of {len(self.plans)} ({self.plans[index].key}), "
                            f"epoch {state.epoch + 1}, step {state.step}: continue with --resume {self.target}")
        log.warning("%s", report["resume"])
        if folder is not None:
            current = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best = chosen["state"] or trainer.best_state or current
            self._save_model(folder, best)
            save_resume(folder / RESUME_DIR, options=self.options, data_paths=self.paths,
                        digests=self._digests(),
                        run_index=index, run_state=state.to_dict(), optimizer=trainer.optimizer.state_dict(),
                        completed=completed, chosen_index=chosen["index"], chosen_metric=chosen["metric"],
                        weights={"current": current, "best": trainer.best_state, "chosen": chosen["state"]})
            write_report(folder, report)
        return report
