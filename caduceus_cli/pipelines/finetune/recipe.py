"""The fine-tuning recipe of the Caduceus paper as defaults, and the probe's settings.

Plain constants (no torch import), so that the command line can state them in ``--help``.
Sources: the official configs and appendix D of Schiff et al. (2024), quoted in
``../shared/data/published_figures.md``.
"""

from ...limits import MAX_BASES, MAX_BATCH, MAX_COUNT, MAX_REPEATS, check_real, check_size

EPOCHS = 10                   # Genomic Benchmarks: 10 epochs (NT tasks: 20)
LR = 1e-3                     # peak learning rate
BATCH_SIZE = 128              # sequences per optimiser step, over all processes
WEIGHT_DECAY = 0.1            # AdamW, not on norms, biases, embeddings, A_log, D
ADAM_BETAS = (0.9, 0.999)
WARMUP_FRACTION = 0.01        # linear warmup over the first 1% of steps ...
FINAL_LR_FRACTION = 0.1       # ... then cosine decay to 0.1 x lr
GRAD_CLIP = 1.0               # gradient-norm clipping
VALID_FRACTION = 0.1          # stratified 90/10 train/validation split per seed
POOLING = "mean"              # mean over the sequence, then linear
SHUFFLE_WINDOW = 50           # batches per shuffled window sorted by length (equal-length batches)
SELECT_METRIC = {"classification": "mcc", "regression": "mse"}  # best epoch on validation
# Whole-block gradient checkpointing is on by default when the longest training sequence is longer
# than this: PS 256x16 keeps ~0.47 MB of activations per training token in bf16 (58.8 GiB for one
# 131,072 bp sequence on an H100; 0.55 MB by the estimate in pipelines/variants/context.py), so a
# batch of 8 x 16,384 bp needs ~60 GB without checkpointing, most of an 80 GB GPU, and ~11 GB with
# it; shorter sequences fit without recomputing every block (8% more time measured at 131,072 bp).
CHECKPOINT_BLOCKS_ABOVE = 16_384

# Probe: frozen embeddings + scikit-learn; C (or the ridge alpha) chosen by CV on train.
PROBE_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
PROBE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
PROBE_CV_FOLDS = 5
PROBE_MAX_ITER = 2000
PROBE_BATCH_SIZE = {"cpu": 64, "cuda": 512}

# The ranges of the options of classify and probe (limits.check_size / check_real).
SIZE_LIMITS = {"seeds": (1, MAX_REPEATS), "folds": (2, MAX_REPEATS), "epochs": (1, MAX_COUNT),
               "batch_size": (1, MAX_BATCH), "eval_batch_size": (1, MAX_BATCH), "center_width": (1, MAX_BASES),
               "max_length": (1, MAX_BASES), "seed": (0, MAX_COUNT), "micro_batch_size": (1, MAX_BATCH)}
REAL_LIMITS = {"lr": {"above": 0.0}, "weight_decay": {"minimum": 0.0}, "valid_fraction": {"above": 0.0, "below": 1.0}}


def check_options(**values) -> None:
    """Refuse an option of classify or probe out of its range (None: not given, the default applies)."""
    for name, value in values.items():
        option = "--" + name.replace("_", "-")
        if name in REAL_LIMITS:
            check_real(option, value, **REAL_LIMITS[name])
        else:
            low, high = SIZE_LIMITS[name]
            check_size(option, value, minimum=low, maximum=high)


CLASSIFICATION_METRICS = ("accuracy", "mcc", "f1", "auroc", "auprc")
REGRESSION_METRICS = ("mse", "pearson", "spearman", "r2")
LOWER_IS_BETTER = ("mse", "loss")


def metric_names(task: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def recipe(**overrides) -> dict:
    """The recipe as recorded in reports: the defaults above with the run's own settings on top."""
    base = {"optimizer": "AdamW", "betas": list(ADAM_BETAS), "weight_decay": WEIGHT_DECAY, "lr": LR,
            "schedule": f"linear warmup over {WARMUP_FRACTION:.0%} of steps, cosine decay to "
                        f"{FINAL_LR_FRACTION} x lr", "warmup_fraction": WARMUP_FRACTION,
            "final_lr_fraction": FINAL_LR_FRACTION, "grad_clip": GRAD_CLIP, "epochs": EPOCHS,
            "batch_size": BATCH_SIZE, "pooling": POOLING, "precision": "bf16 autocast on CUDA, fp32 on CPU"}
    base.update(overrides)
    return base
