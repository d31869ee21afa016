"""The benchmark suites: tasks, where their data come from, metrics, classes and published figures.

Every published figure carries the key of its source in :data:`SOURCES`; reports cite it beside the
number. Figures are quoted from the sources (see ``../shared/data/published_figures.md``); none is
computed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import CaduceusError

SOURCES = {
    "caduceus-t1": "Schiff et al., Caduceus, ICML 2024, Table 1: fine-tuned, top-1 accuracy, mean of 5 seeds "
                   "(+- max-min over seeds), ~470k-parameter models",
    "caduceus-t2": "Schiff et al., Caduceus, ICML 2024, Table 2: fine-tuned, 10 seeds, 20 epochs; baselines from "
                   "the Nucleotide Transformer leaderboard",
    "natcomm-2025": "Benchmarking DNA foundation models for genomic and genetic tasks, Nature Communications 2025: "
                    "frozen embeddings, mean pooling, AUROC (Caduceus-Ph pretrained on human)",
    "vep-repro": "ZJ4433MR/caduceus-genomic-benchmark results/processed/vep/main_table.csv: independent "
                 "reproduction of the paper's causal-eQTL SVM (the paper shows bars only), AUROC per bucket",
    "gpu-readme": "official Caduceus implementation with mamba-ssm kernels, bf16, one NVIDIA H200 "
                  "(../shared/gpu/README.md)",
}

# The models whose published figures the summary shows, in column order.
COLUMNS = ("Caduceus-PS", "Caduceus-Ph", "HyenaDNA", "NT-v2", "DNABERT-2")


@dataclass(frozen=True)
class Published:
    """One published figure: ``model`` reached ``value`` (``spread``: +- as printed) on ``metric``."""

    model: str
    metric: str
    value: float
    source: str
    protocol: str  # "finetune", "probe" or "svm"
    spread: float | None = None


@dataclass(frozen=True)
class Task:
    """One labeled task of a suite."""

    suite: str
    name: str
    metric: str  # the paper's metric for this task
    classes: tuple  # labels as they appear in the data (ints), or class folder names
    length: int | None = None  # bp, where the source states one
    path: str | None = None  # where the task lives inside the source's own layout
    published: tuple[Published, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Suite:
    """A named set of tasks with the paper's protocol defaults."""

    name: str
    description: str
    kind: str  # "sequences", "variants" or "speed"
    tasks: dict[str, Task] = field(default_factory=dict)
    finetune_epochs: int = 10
    finetune_seeds: int = 5
    cv_folds: int = 5  # stratified K-fold CV for tasks that only have a test split


def _figures(source: str, protocol: str, metric: str, **values) -> tuple[Published, ...]:
    """Published figures of one source, keyed by model name (underscored): value or (value, spread)."""
    out = []
    for key, v in values.items():
        model = key.replace("_", "-")
        value, spread = v if isinstance(v, tuple) else (v, None)
        out.append(Published(model, metric, value, source, protocol, spread))
    return tuple(out)


# -- Nucleotide Transformer downstream tasks (original release) ---------------------------------
_NT_TABLE2 = {  # task: (metric, Enformer, DNABERT-2, NT-v2, HyenaDNA, Caduceus-Ph, Caduceus-PS)
    "H3": ("mcc", .719, .785, .784, .779, .815, .799),
    "H3K14ac": ("mcc", .288, .516, .551, .612, .631, .541),
    "H3K36me3": ("mcc", .344, .591, .625, .613, .601, .609),
    "H3K4me1": ("mcc", .291, .511, .550, .512, .523, .488),
    "H3K4me2": ("mcc", .211, .336, .319, .455, .487, .388),
    "H3K4me3": ("mcc", .158, .352, .410, .549, .544, .440),
    "H3K79me3": ("mcc", .496, .613, .626, .672, .697, .676),
    "H3K9ac": ("mcc", .420, .542, .562, .581, .622, .604),
    "H4": ("mcc", .732, .796, .799, .763, .811, .789),
    "H4ac": ("mcc", .273, .463, .495, .564, .621, .525),
    "enhancers": ("mcc", .451, .516, .548, .517, .546, .491),
    "enhancers_types": ("mcc", .309, .423, .424, .386, .439, .416),
    "promoter_all": ("f1", .954, .971, .976, .960, .970, .967),
    "promoter_no_tata": ("f1", .955, .972, .976, .959, .969, .968),
    "promoter_tata": ("f1", .960, .955, .966, .944, .953, .957),
    "splice_sites_all": ("accuracy", .848, .939, .983, .956, .940, .927),
    "splice_sites_acceptors": ("f1", .914, .975, .981, .958, .937, .936),
    "splice_sites_donors": ("f1", .906, .963, .985, .949, .948, .874),
}
_NT_PROBE_AUROC = {"H3": .929, "H3K14ac": .730, "H3K36me3": .766, "H3K4me1": .707, "H3K4me2": .690}
_NT_THREE_CLASS = ("enhancers_types", "splice_sites_all")
_NT_HISTONE = ("H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac")


def _nt_task(name: str) -> Task:
    metric, enformer, dnabert2, ntv2, hyena, ph, ps = _NT_TABLE2[name]
    published = _figures("caduceus-t2", "finetune", metric, Enformer=enformer, DNABERT_2=dnabert2, NT_v2=ntv2,
                         HyenaDNA=hyena, Caduceus_Ph=ph, Caduceus_PS=ps)
    if name in _NT_PROBE_AUROC:
        published += _figures("natcomm-2025", "probe", "auroc", Caduceus_Ph=_NT_PROBE_AUROC[name])
    classes = (0, 1, 2) if name in _NT_THREE_CLASS else (0, 1)
    return Task("nt-suite", name, metric, classes, 500 if name in _NT_HISTONE else None, name, published)


# -- Genomic Benchmarks -------------------------------------------------------------------------
_GB_TABLE1 = {  # task: (classes, CNN, HyenaDNA, Mamba, Caduceus w/o equiv, Caduceus-Ph, Caduceus-PS), (value, +-)
    "dummy_mouse_enhancers_ensembl": (("negative", "positive"), (.715, .087), (.780, .025), (.743, .054),
                                      (.770, .058), (.754, .074), (.793, .058)),
    "demo_coding_vs_intergenomic_seqs": (("coding_seqs", "intergenomic_seqs"), (.892, .008), (.904, .005),
                                         (.904, .004), (.908, .003), (.915, .003), (.910, .003)),
    "demo_human_or_worm": (("human", "worm"), (.942, .002), (.964, .002), (.967, .002), (.970, .003),
                           (.973, .001), (.968, .002)),
    "human_enhancers_cohn": (("negative", "positive"), (.702, .021), (.729, .014), (.732, .029), (.741, .008),
                             (.747, .004), (.745, .007)),
    "human_enhancers_ensembl": (("negative", "positive"), (.744, .122), (.849, .006), (.862, .008), (.883, .002),
                                (.893, .008), (.900, .006)),
    "human_ensembl_regulatory": (("enhancer", "ocr", "promoter"), (.872, .005), (.869, .012), (.814, .211),
                                 (.871, .007), (.872, .011), (.873, .007)),
    "human_ocr_ensembl": (("negative", "positive"), (.698, .013), (.783, .007), (.815, .002), (.818, .003),
                          (.828, .006), (.818, .006)),
    "human_nontata_promoters": (("negative", "positive"), (.861, .009), (.944, .002), (.933, .007), (.933, .006),
                                (.946, .007), (.945, .010)),
}


def _gb_task(name: str) -> Task:
    classes, cnn, hyena, mamba, plain, ph, ps = _GB_TABLE1[name]
    published = _figures("caduceus-t1", "finetune", "accuracy", CNN=cnn, HyenaDNA=hyena, Mamba=mamba,
                         Caduceus_w_o_equiv=plain, Caduceus_Ph=ph, Caduceus_PS=ps)
    return Task("genomic-benchmarks", name, "accuracy", classes, None, name, published)


# -- GUE (DNABERT-2) ----------------------------------------------------------------------------
_GUE_PROBE_AUROC = {"prom_core_all": .875, "prom_core_notata": .896, "prom_core_tata": .810, "tf_0": .880,
                    "tf_1": .869, "mouse_0": .684, "mouse_2": .947}


def _gue_tasks() -> dict[str, Task]:
    """The 28 GUE data sets; ``path`` is the folder inside the GUE archive."""
    entries = [(f"emp_{mark}", f"EMP/{mark}", 500, 2) for mark in _NT_HISTONE]
    entries += [(f"mouse_{i}", f"mouse/{i}", 101, 2) for i in range(5)]
    entries += [(f"prom_{size}_{kind}", f"prom/prom_{size}_{kind}", 300 if size == "300" else 70, 2)
                for size in ("300", "core") for kind in ("all", "notata", "tata")]
    entries += [("splice_reconstructed", "splice/reconstructed", 400, 3)]
    entries += [(f"tf_{i}", f"tf/{i}", 101, 2) for i in range(5)]
    entries += [("virus_covid", "virus/covid", 1000, 9)]
    tasks = {}
    for name, path, length, n_classes in entries:
        published = _figures("natcomm-2025", "probe", "auroc", Caduceus_Ph=_GUE_PROBE_AUROC[name]) \
            if name in _GUE_PROBE_AUROC else ()
        tasks[name] = Task("gue", name, "mcc", tuple(range(n_classes)), length, path, published)
    return tasks


# -- causal eQTL variant effect prediction ------------------------------------------------------
EQTL_BUCKETS = ("0-30kbp", "30-100kbp", ">100kbp")  # the SVM engine's distance-to-TSS buckets
_EQTL_REPRO = {"Caduceus-PS": (.673, .588, .572), "Caduceus-Ph": (.673, .633, .563), "HyenaDNA": (.673, .602, .604)}


def _eqtl_tasks() -> dict[str, Task]:
    tasks = {}
    for k, bucket in enumerate(EQTL_BUCKETS):
        published = tuple(Published(model, "auroc", values[k], "vep-repro", "svm") for model, values in _EQTL_REPRO.items())
        tasks[f"eqtl_{bucket}"] = Task("vep-eqtl", f"eqtl_{bucket}", "auroc", (0, 1), None,
                                       "variant_effect_causal_eqtl", published)
    return tasks


# -- speed --------------------------------------------------------------------------------------
SPEED_MEASURES = ("forward", "train", "embed", "score-variants")
# Official implementation on the H200 (gpu-readme): (variant, d_model, n_layer, length) -> tokens/s
OFFICIAL_FORWARD = {("ps", 256, 16, 1536): 0.63e6, ("ps", 256, 16, 131072): 0.97e6,
                    ("ph", 256, 16, 1536): 1.34e6, ("ph", 256, 16, 131072): 2.14e6}
# masked-LM training, 4 layers, d_model 128, 1,024 bp, batch 256, bf16: tokens/s and peak GB
OFFICIAL_TRAIN = {("ps", 128, 4, 1024): (1.54e6, 11.4), ("ph", 128, 4, 1024): (3.32e6, 6.2)}
# The batch (windows) of those official figures, by length: a row beside one runs the same batch
OFFICIAL_BATCH = {1536: 256, 131072: 2, 1024: 256}


def _suites() -> dict[str, Suite]:
    nt = Suite("nt-suite", "Nucleotide Transformer downstream tasks, original release "
               "(HF dataset InstaDeepAI/nucleotide_transformer_downstream_tasks)", "sequences",
               {name: _nt_task(name) for name in _NT_TABLE2}, finetune_epochs=20, finetune_seeds=10, cv_folds=10)
    gb = Suite("genomic-benchmarks", "Genomic Benchmarks (Gresova et al. 2023), the 8 tasks of the Caduceus paper",
               "sequences", {name: _gb_task(name) for name in _GB_TABLE1}, finetune_epochs=10, finetune_seeds=5)
    gue = Suite("gue", "GUE, the Genome Understanding Evaluation of DNABERT-2 (CSV sequence,label)", "sequences",
                _gue_tasks(), finetune_epochs=10, finetune_seeds=5)
    vep = Suite("vep-eqtl", "causal eQTL variant effect prediction (HF dataset InstaDeepAI/genomics-long-range-"
                "benchmark, variant_effect_causal_eqtl): SVM per distance-to-TSS bucket", "variants", _eqtl_tasks(),
                finetune_seeds=5)
    speed = Suite("speed", "tokens/s and peak memory of the forward pass and of training, embed regions/s, "
                  "score-variants variants/s on this machine", "speed",
                  {m: Task("speed", m, "tokens_per_s", ()) for m in SPEED_MEASURES})
    return {s.name: s for s in (nt, gb, gue, vep, speed)}


SUITES: dict[str, Suite] = _suites()


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise CaduceusError(f"unknown benchmark suite {name!r}; choose one of {', '.join(SUITES)}")
    return SUITES[name]


def select_tasks(suite: Suite, names: str | list[str] | None) -> list[Task] | None:
    """The tasks named in ``names`` (comma-separated or a list), in the order given; None for all."""
    if names is None:
        return None
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in suite.tasks]
    if unknown or not names:
        raise CaduceusError(f"--tasks: {', '.join(unknown) or '(none given)'} is not a task of {suite.name}; "
                            f"its tasks are {', '.join(suite.tasks)}")
    return [suite.tasks[n] for n in dict.fromkeys(names)]
