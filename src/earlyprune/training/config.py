"""The full configuration of a training run: one dataclass, validated, resolved, stored as ``config.json``.

Every field is a flag of ``earlyprune train`` (``model_args`` → ``--model-arg``) and a key of a ``--config``
YAML/JSON file; precedence is defaults < config file < flags. :meth:`TrainConfig.resolved` fills the "auto"
values (warm-up epochs, milestones, policy), so ``config.json`` says exactly what ran. Defaults follow the PaT
paper's recipe (90 epochs, linear warm-up for 8 then cosine decay, SGD, batch 128) with CIFAR's usual
learning rate and weight decay.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("pat", "cosine", "step", "onecycle", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTS = ("auto", "standard", "none")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS = ("auto", "bar", "log", "none")
TARGETS = ("channels", "flops", "params")

#: fields that may differ when a run is resumed: they change where things are or how they are shown, not what
#: is computed
RUNTIME_FIELDS = frozenset({"name", "out_dir", "data_dir", "data_cache", "download", "progress", "threads",
                            "stop_after"})


def _meta(help: str, group: str, **kw: Any) -> dict[str, Any]:
    return {"help": help, "group": group, **kw}


@dataclass
class TrainConfig:
    # -- model -------------------------------------------------------------------------------------------------
    model: str = field(default="resnet20", metadata=_meta(
        "model name from `earlyprune models`, or tv:<name> / timm:<name>", "model"))
    model_args: dict[str, Any] = field(default_factory=dict, metadata=_meta(
        "extra model constructor argument KEY=VALUE, repeatable (e.g. width_mult=0.5)", "model"))
    # -- data --------------------------------------------------------------------------------------------------
    dataset: str = field(default="cifar10", metadata=_meta(
        "cifar10, cifar100, digits, synthetic, or folder:<dir or .zip> (train/<class>/*, test/ or val/)", "data"))
    data_dir: str = field(default="data", metadata=_meta(
        "where cifar10/cifar100 live (or are downloaded to)", "data"))
    download: bool = field(default=True, metadata=_meta(
        "download cifar10/cifar100 if missing (checksum-verified)", "data"))
    data_cache: str = field(default="auto", metadata=_meta(
        "cache file (.npz) for decoded folder datasets: a path, 'auto' (~/.cache/earlyprune) or 'none'", "data"))
    image_size: int | None = field(default=None, metadata=_meta(
        "resize folder images to SIZE x SIZE (needed when their sizes differ)", "data", min=1))
    train_subset: int | None = field(default=None, metadata=_meta(
        "train on a random subset of N images (quick profiles)", "data", min=1))
    augment: str = field(default="auto", metadata=_meta(
        "training augmentation: standard (pad-4 random crop + horizontal flip), none, or auto (standard for "
        "cifar and folder datasets)", "data", choices=AUGMENTS))
    # -- optimisation ------------------------------------------------------------------------------------------
    epochs: int = field(default=90, metadata=_meta("training epochs", "optimisation", min=1))
    batch_size: int = field(default=128, metadata=_meta("training batch size", "optimisation", min=1))
    eval_batch_size: int = field(default=500, metadata=_meta("test batch size", "optimisation", min=1))
    optimizer: str = field(default="sgd", metadata=_meta("optimizer", "optimisation", choices=OPTIMIZERS))
    lr: float = field(default=0.1, metadata=_meta("peak learning rate", "optimisation", positive=True))
    momentum: float = field(default=0.9, metadata=_meta("SGD momentum", "optimisation", min=0.0))
    nesterov: bool = field(default=False, metadata=_meta("Nesterov momentum (SGD)", "optimisation"))
    weight_decay: float = field(default=5e-4, metadata=_meta("weight decay", "optimisation", min=0.0))
    schedule: str = field(default="pat", metadata=_meta(
        "learning-rate schedule: pat (linear warm-up, then cosine), cosine, step, onecycle, constant",
        "optimisation", choices=SCHEDULES))
    warmup_epochs: int | None = field(default=None, metadata=_meta(
        "warm-up epochs of the pat schedule (default: 8/90 of the epochs, as in PaT)", "optimisation", min=0))
    milestones: list[int] | None = field(default=None, metadata=_meta(
        "epochs at which the step schedule multiplies the LR by --gamma (default: 50%% and 75%% of the epochs)",
        "optimisation"))
    gamma: float = field(default=0.1, metadata=_meta("LR factor of the step schedule", "optimisation",
                                                      positive=True))
    label_smoothing: float = field(default=0.0, metadata=_meta("label smoothing in [0, 1)", "optimisation",
                                                               min=0.0))
    precision: str = field(default="fp32", metadata=_meta(
        "fp32, bf16 (autocast; CPU and CUDA) or fp16 (CUDA, with a gradient scaler)", "optimisation",
        choices=PRECISIONS))
    channels_last: bool = field(default=False, metadata=_meta("channels_last memory format", "optimisation"))
    device: str = field(default="auto", metadata=_meta("auto (cuda if available), cpu or cuda", "optimisation",
                                                       choices=DEVICES))
    seed: int = field(default=0, metadata=_meta("random seed (runs on CPU are deterministic)", "optimisation"))
    threads: int | None = field(default=None, metadata=_meta("CPU threads for torch (default: torch's)",
                                                             "optimisation", min=1))
    # -- pruning -----------------------------------------------------------------------------------------------
    criterion: str = field(default="magnitude", metadata=_meta("importance criterion (EarlyPruner criterion=)",
                                                               "pruning"))
    policy: str | None = field(default=None, metadata=_meta(
        "when to prune, e.g. epi or epoch:K (default: epi if available, else epoch:<10%% of the epochs>); "
        "'never' trains dense", "pruning"))
    ratio: float = field(default=0.5, metadata=_meta("fraction of the target to remove, in (0, 1)", "pruning"))
    target: str = field(default="channels", metadata=_meta("what --ratio counts", "pruning", choices=TARGETS))
    steps: int = field(default=8, metadata=_meta("pruning steps within the pruning epoch", "pruning", min=1))
    min_channels: int = field(default=1, metadata=_meta("channels every group keeps at least", "pruning", min=1))
    round_to: int | str = field(default="auto", metadata=_meta(
        "round kept widths to multiples of this, or auto: the multiple measured fastest for the pruned model on this "
        "device, batch size and precision at the first pruning step (recorded in summary.json)", "pruning"))
    pruner_args: dict[str, Any] = field(default_factory=dict, metadata=_meta(
        "extra EarlyPruner keyword argument KEY=VALUE, repeatable (e.g. compute_aware=0.1)", "pruning"))
    # -- run ---------------------------------------------------------------------------------------------------
    name: str | None = field(default=None, metadata=_meta(
        "run name: files go to OUT_DIR/NAME (default: model-dataset-policy, numbered if taken)", "run"))
    out_dir: str = field(default="runs", metadata=_meta("parent directory of run directories", "run"))
    progress: str = field(default="auto", metadata=_meta(
        "progress display: a bar on a terminal, plain log lines otherwise (auto), or bar, log, none", "run",
        choices=PROGRESS))
    stop_after: int | None = field(default=None, metadata=_meta(
        "stop after N epochs of this invocation (continue later with --resume)", "run", min=1))

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
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            flag = "--" + f.name.replace("_", "-")
            if value is None:
                continue
            if "choices" in meta and value not in meta["choices"]:
                raise ValueError(f"{flag} must be one of {', '.join(meta['choices'])}, got {value!r}")
            kind = int if f.type in ("int", "int | None") else float if f.type == "float" else None
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{flag} must be a whole number, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{flag} must be a number, got {value!r}")
            if "min" in meta and value < meta["min"]:
                raise ValueError(f"{flag} must be ≥ {meta['min']}, got {value!r}")
            if meta.get("positive") and not value > 0:
                raise ValueError(f"{flag} must be > 0, got {value!r}")
        if self.round_to != "auto" and (isinstance(self.round_to, bool) or not isinstance(self.round_to, int)
                                        or self.round_to < 1):
            raise ValueError(f"--round-to must be a whole number ≥ 1 or auto, got {self.round_to!r}")
        if not 0.0 < float(self.ratio) < 1.0:
            raise ValueError(f"--ratio must be in (0, 1) — the fraction of {self.target} to remove — got {self.ratio}")
        if not self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        for key in ("model_args", "pruner_args"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must map argument names to values (--{key[:-1].replace('_', '-')} "
                                 f"KEY=VALUE)")
        if self.milestones is not None and (not isinstance(self.milestones, list)
                                            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1
                                                   for m in self.milestones)):
            raise ValueError(f"--milestones must be whole epoch numbers ≥ 1, got {self.milestones!r}")
        if self.warmup_epochs is not None and self.schedule == "pat" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("--precision fp16 needs a CUDA device; on a CPU use --precision bf16")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ValueError(f"--name must be a plain directory name, got {self.name!r}")
        if not isinstance(self.criterion, str) or not isinstance(self.model, str) or not isinstance(self.dataset, str):
            raise ValueError("model, dataset and criterion must be names (strings)")
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
