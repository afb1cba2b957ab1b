"""The full configuration of a training run: one dataclass, validated, resolved, stored as ``config.json``.

Every field is a flag of ``earlyprune train`` (``model_args`` → ``--model-arg``) and a key of a ``--config``
YAML/JSON file; precedence is defaults < config file < flags. :meth:`TrainConfig.resolved` fills the "auto"
values (warm-up epochs, milestones, policy), so ``config.json`` says exactly what ran. Defaults follow the PaT
paper's recipe (90 epochs, linear warm-up for 8 then cosine decay, SGD, batch 128) with CIFAR's usual
learning rate and weight decay.
"""

from __future__ import annotations

import json
from dataclasses import Field, asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from ..validation import (BOOLEAN, MIN_CHANNELS, PATH, RATIO, ROUND_TO, STEPS, TARGET, Each, InstanceOf, Interval,
                          Options, Rule, rule)
from ..validation import TARGETS  # noqa: F401  (re-exported: earlyprune.training.config.TARGETS)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("pat", "cosine", "step", "onecycle", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTS = ("auto", "standard", "none")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS = ("auto", "bar", "log", "none")

#: fields that may differ when a run is resumed: they change where things are or how they are shown, not what
#: is computed
RUNTIME_FIELDS = frozenset({"name", "out_dir", "data_dir", "data_cache", "download", "progress", "threads",
                            "stop_after"})


WHOLE_1 = rule(Interval(Integral, 1, None))
POSITIVE = rule(Interval(Real, 0, None, closed="neither"))
NON_NEGATIVE = rule(Interval(Real, 0, None))
TEXT = rule(InstanceOf(str, "a text"))
MAPPING = rule(InstanceOf(dict, "a mapping of argument names to values (KEY=VALUE)"))


def _meta(help: str, group: str, rule: Rule = TEXT) -> dict[str, Any]:
    """A field's flag help, its ``--help`` group and its :class:`~earlyprune.validation.Rule` (None is accepted
    as well where the field's type allows it)."""
    return {"help": help, "group": group, "rule": rule}


def field_rule(f: Field) -> Rule:
    """The rule of a :class:`TrainConfig` field, None included when its type says ``| None``."""
    r: Rule = f.metadata["rule"]
    if "None" in str(f.type) and not r.accepts(None):
        r = Rule(r.constraints + rule(None).constraints, r.hint)
    return r


@dataclass
class TrainConfig:
    # -- model -------------------------------------------------------------------------------------------------
    model: str = field(default="resnet20", metadata=_meta(
        "model name from `earlyprune models`, or tv:<name> / timm:<name>", "model"))
    model_args: dict[str, Any] = field(default_factory=dict, metadata=_meta(
        "extra model constructor argument KEY=VALUE, repeatable (e.g. width_mult=0.5)", "model", MAPPING))
    # -- data --------------------------------------------------------------------------------------------------
    dataset: str = field(default="cifar10", metadata=_meta(
        "cifar10, cifar100, digits, synthetic, or folder:<dir or .zip> (train/<class>/*, test/ or val/)", "data"))
    data_dir: str = field(default="data", metadata=_meta(
        "where cifar10/cifar100 live (or are downloaded to)", "data", PATH))
    download: bool = field(default=True, metadata=_meta(
        "download cifar10/cifar100 if missing (checksum-verified)", "data", BOOLEAN))
    data_cache: str = field(default="auto", metadata=_meta(
        "cache file (.npz) for decoded folder datasets: a path, 'auto' (~/.cache/earlyprune) or 'none'", "data",
        PATH))
    image_size: int | None = field(default=None, metadata=_meta(
        "resize folder images to SIZE x SIZE (needed when their sizes differ)", "data", WHOLE_1))
    train_subset: int | None = field(default=None, metadata=_meta(
        "train on a random subset of N images (quick profiles)", "data", WHOLE_1))
    augment: str = field(default="auto", metadata=_meta(
        "training augmentation: standard (pad-4 random crop + horizontal flip), none, or auto (standard for "
        "cifar and folder datasets)", "data", rule(Options(AUGMENTS))))
    # -- optimisation ------------------------------------------------------------------------------------------
    epochs: int = field(default=90, metadata=_meta("training epochs", "optimisation", WHOLE_1))
    batch_size: int = field(default=128, metadata=_meta("training batch size (per process under torchrun: the global batch is this × processes)", "optimisation", WHOLE_1))
    eval_batch_size: int = field(default=500, metadata=_meta("test batch size", "optimisation", WHOLE_1))
    optimizer: str = field(default="sgd", metadata=_meta("optimizer", "optimisation", rule(Options(OPTIMIZERS))))
    lr: float = field(default=0.1, metadata=_meta("peak learning rate", "optimisation", POSITIVE))
    momentum: float = field(default=0.9, metadata=_meta("SGD momentum", "optimisation", NON_NEGATIVE))
    nesterov: bool = field(default=False, metadata=_meta("Nesterov momentum (SGD)", "optimisation", BOOLEAN))
    weight_decay: float = field(default=5e-4, metadata=_meta("weight decay", "optimisation", NON_NEGATIVE))
    schedule: str = field(default="pat", metadata=_meta(
        "learning-rate schedule: pat (linear warm-up, then cosine), cosine, step, onecycle, constant",
        "optimisation", rule(Options(SCHEDULES))))
    warmup_epochs: int | None = field(default=None, metadata=_meta(
        "warm-up epochs of the pat schedule (default: 8/90 of the epochs, as in PaT)", "optimisation",
        rule(Interval(Integral, 0, None))))
    milestones: list[int] | None = field(default=None, metadata=_meta(
        "epochs at which the step schedule multiplies the LR by --gamma (default: 50%% and 75%% of the epochs)",
        "optimisation", rule(Each(Interval(Integral, 1, None), nonempty=False))))
    gamma: float = field(default=0.1, metadata=_meta("LR factor of the step schedule", "optimisation", POSITIVE))
    label_smoothing: float = field(default=0.0, metadata=_meta("label smoothing in [0, 1)", "optimisation",
                                                               rule(Interval(Real, 0, 1, closed="left"))))
    precision: str = field(default="fp32", metadata=_meta(
        "fp32, bf16 (autocast; CPU and CUDA) or fp16 (CUDA, with a gradient scaler)", "optimisation",
        rule(Options(PRECISIONS))))
    channels_last: bool = field(default=False, metadata=_meta("channels_last memory format", "optimisation", BOOLEAN))
    device: str = field(default="auto", metadata=_meta("auto (cuda if available), cpu or cuda", "optimisation",
                                                       rule(Options(DEVICES))))
    seed: int = field(default=0, metadata=_meta("random seed (runs on CPU are deterministic)", "optimisation",
                                                rule(Interval(Integral, None, None))))
    threads: int | None = field(default=None, metadata=_meta("CPU threads for torch (default: torch's)",
                                                             "optimisation", WHOLE_1))
    # -- pruning -----------------------------------------------------------------------------------------------
    criterion: str = field(default="magnitude", metadata=_meta("importance criterion (EarlyPruner criterion=)",
                                                               "pruning"))
    policy: str | None = field(default=None, metadata=_meta(
        "when to prune, e.g. epi or epoch:K (default: epi if available, else epoch:<10%% of the epochs>); "
        "'never' trains dense", "pruning"))
    ratio: float = field(default=0.5, metadata=_meta("fraction of the target to remove, in (0, 1)", "pruning", RATIO))
    target: str = field(default="channels", metadata=_meta("what --ratio counts", "pruning", TARGET))
    steps: int = field(default=8, metadata=_meta("pruning steps within the pruning epoch", "pruning", STEPS))
    min_channels: int = field(default=1, metadata=_meta("channels every group keeps at least", "pruning", MIN_CHANNELS))
    round_to: int | str = field(default="auto", metadata=_meta(
        "round kept widths to multiples of this, or auto: the multiple measured fastest for the pruned model on this "
        "device, batch size and precision at the first pruning step (recorded in summary.json)", "pruning", ROUND_TO))
    pruner_args: dict[str, Any] = field(default_factory=dict, metadata=_meta(
        "extra EarlyPruner keyword argument KEY=VALUE, repeatable (e.g. compute_aware=0.1)", "pruning", MAPPING))
    # -- run ---------------------------------------------------------------------------------------------------
    name: str | None = field(default=None, metadata=_meta(
        "run name: files go to OUT_DIR/NAME (default: model-dataset-policy, numbered if taken)", "run"))
    out_dir: str = field(default="runs", metadata=_meta("parent directory of run directories", "run", PATH))
    progress: str = field(default="auto", metadata=_meta(
        "progress display: a bar on a terminal, plain log lines otherwise (auto), or bar, log, none", "run",
        rule(Options(PROGRESS))))
    stop_after: int | None = field(default=None, metadata=_meta(
        "stop after N epochs of this invocation (continue later with --resume)", "run", WHOLE_1))

    # ---------------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        normalised = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normalised) - names)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} in {source}; see `earlyprune train --help`")
        return cls(**normalised)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "TrainConfig":
        """Check every value; raise ValueError naming the option and the fix."""
        for f in fields(self):  # each field by its rule, in flag words (earlyprune.validation)
            field_rule(f).check("--" + f.name.replace("_", "-"), getattr(self, f.name), flag=True)
        if self.warmup_epochs is not None and self.schedule == "pat" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("--precision fp16 needs a CUDA device; on a CPU use --precision bf16")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ValueError(f"--name must be a plain directory name, got {self.name!r}")
        _check_specs(self)
        return self

    def resolved(self) -> "TrainConfig":
        """A copy with every automatic value filled in (what actually runs)."""
        from ..policies import POLICIES

        cfg = replace(self, model_args=dict(self.model_args), pruner_args=dict(self.pruner_args))
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = round(cfg.epochs * 8 / 90) if cfg.schedule == "pat" else 0
        if cfg.schedule == "step" and cfg.milestones is None:
            cfg.milestones = sorted({max(1, cfg.epochs // 2), max(1, cfg.epochs * 3 // 4)})
        if cfg.policy is None:
            cfg.policy = "epi" if "epi" in POLICIES else f"epoch:{max(1, round(cfg.epochs * 0.1))}"
        return cfg.validate()


def _check_specs(cfg: TrainConfig) -> None:
    from ..criteria import CRITERIA
    from ..policies import POLICIES

    CRITERIA.get(cfg.criterion.partition(":")[0].strip())  # raises "unknown criterion …; available: …"
    if cfg.policy is not None:
        POLICIES.build(cfg.policy)  # also checks the ':' argument


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml is a dependency
            raise ValueError(f"reading {path} needs PyYAML: pip install pyyaml (or write the config as JSON)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); YAML files need a .yaml or .yml suffix") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(data).__name__}")
    data.pop("resume", None)
    return data
