"""The full configuration of a training run: one dataclass, validated, resolved, stored as ``config.json``.

Every field is a flag of ``earlyprune train`` (``model_args`` → ``--model-arg``) and a key of a ``--config``
YAML/JSON file; precedence is defaults < config file < flags. :meth:`TrainConfig.resolved` fills the "auto"
values (warm-up epochs, milestones, policy), so ``config.json`` says exactly what ran. Defaults follow the PaT
paper's recipe (90 epochs, linear warm-up for 8 then cosine decay, SGD, batch 128) with CIFAR's usual
learning rate and weight decay.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import Field, asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.validation import (
    BOOLEAN,
    GRANULARITY,
    GROUP_RATIO,
    MIN_CHANNELS,
    PATH,
    RATIO,
    ROUND_TO,
    STEPS,
    TARGET,
    TARGETS,  # noqa: F401  (re-exported: earlyprune.training.config.TARGETS)
    Boolean,
    Each,
    InstanceOf,
    Interval,
    Options,
    Rule,
    rule,
)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("pat", "cosine", "step", "onecycle", "constant")
PRECISIONS = ("auto", "measure", "fp32", "bf16", "fp16")
SWITCHES = ("auto", "on", "off")
LAYOUTS = ("auto", "measure", "on", "off")
AUGMENTS = ("auto", "standard", "none")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS = ("auto", "bar", "log", "none")

#: fields that may differ when a run is resumed: they change where things are or how they are shown, not what
#: is computed
RUNTIME_FIELDS = frozenset({"name", "out_dir", "data_dir", "data_cache", "download", "progress", "threads",
                            "stop_after", "eval_every", "log", "speed_profile"})


WHOLE_1 = rule(Interval(Integral, 1, None))
POSITIVE = rule(Interval(Real, 0, None, closed="neither"))
NON_NEGATIVE = rule(Interval(Real, 0, None))
TEXT = rule(InstanceOf(str, "a text"))
MAPPING = rule(InstanceOf(dict, "a mapping of argument names to values (KEY=VALUE)"))


def _meta(help: str, group: str, rule: Rule = TEXT, **extra: Any) -> dict[str, Any]:
    """A field's flag help, its ``--help`` group and its :class:`~earlyprune.core.validation.Rule` (None is accepted
    as well where the field's type allows it); ``bare=VALUE``: the flag given without a value means VALUE."""
    return {"help": help, "group": group, "rule": rule, **extra}


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
        "train on a random subset of N images (quick profiles; folder datasets decode only those)", "data", WHOLE_1))
    test_subset: int | None = field(default=None, metadata=_meta(
        "evaluate on a random subset of N test images (folder datasets decode only those)", "data", WHOLE_1))
    augment: str = field(default="auto", metadata=_meta(
        "training augmentation: standard (pad-4 random crop + horizontal flip), none, or auto (standard for "
        "cifar and folder datasets)", "data", rule(Options(AUGMENTS))))
    # -- optimisation ------------------------------------------------------------------------------------------
    epochs: int = field(default=90, metadata=_meta("training epochs", "optimisation", WHOLE_1))
    batch_size: int = field(default=128, metadata=_meta("training batch size (per process under torchrun: the global batch is this × processes)", "optimisation", WHOLE_1))
    eval_batch_size: int = field(default=500, metadata=_meta("test batch size", "optimisation", WHOLE_1))
    eval_every: int = field(default=1, metadata=_meta(
        "evaluate on the test images every N epochs; the last epoch and the last dense one (before pruning) are "
        "always evaluated", "optimisation", WHOLE_1))
    optimizer: str = field(default="sgd", metadata=_meta("optimizer", "optimisation", rule(Options(OPTIMIZERS))))
    lr: float = field(default=0.1, metadata=_meta("peak learning rate", "optimisation", POSITIVE))
    momentum: float = field(default=0.9, metadata=_meta("SGD momentum, in [0, 1) (1 or more makes the steps grow "
                                                        "without bound)", "optimisation",
                                                        rule(Interval(Real, 0, 1, closed="left"))))
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
    precision: str = field(default="auto", metadata=_meta(
        "fp32, bf16 (autocast; CPU and CUDA), fp16 (CUDA, with a gradient scaler), auto (from the hardware, nothing "
        "timed: bf16 where the device has bf16 matrix units — CUDA 8.0+, AMX-BF16 or AVX512-BF16 CPUs — else fp16 on "
        "CUDA 7.x, else fp32) or measure (a few training steps of each at the start of the run; recorded in "
        "speed.json and summary.json)", "optimisation", rule(Options(PRECISIONS))))
    channels_last: str | bool = field(default="auto", metadata=_meta(
        "channels_last memory format: on, off, auto (on for models with 2-D convolutions) or measure (on where "
        "measured faster, with the precision)", "optimisation", rule(Options(LAYOUTS), Boolean()), bare="on"))
    compile: str = field(default="off", metadata=_meta(
        "torch.compile the pruned model once the pruning epoch is over: off, on, or auto (only when the remaining "
        "training is long enough to pay back a compile, kept only if measured faster; recorded in summary.json). "
        "Off by default: a measured choice would make the run's numerics depend on the machine's load",
        "optimisation", rule(Options(SWITCHES))))
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
        "when to prune, e.g. epi or epoch:K (default: epi with its cap at a third of the epochs — PaT's "
        "pre-defined epoch, 30 of 90); 'never' trains dense", "pruning"))
    ratio: float = field(default=0.5, metadata=_meta("fraction of the target to remove, in (0, 1)", "pruning", RATIO))
    target: str = field(default="channels", metadata=_meta(
        "what --ratio counts: channels (PaT's definition; the default), flops, params or latency (the "
        "training-step time measured on this device: the structure then depends on the measurement)", "pruning",
        TARGET))
    steps: int = field(default=8, metadata=_meta("pruning steps within the pruning epoch", "pruning", STEPS))
    min_channels: int = field(default=1, metadata=_meta("channels every group keeps at least", "pruning", MIN_CHANNELS))
    round_to: int | str = field(default=8, metadata=_meta(
        "round kept widths to multiples of this (default 8: the SIMD width of fp32 AVX2 and of tensor-core tiles), "
        "or auto: the multiple measured fastest for the pruned model on this device, batch size and precision at "
        "the first pruning step (recorded in summary.json)", "pruning", ROUND_TO))
    max_group_ratio: float = field(default=0.8, metadata=_meta(
        "largest fraction of any one group's channels that may be removed (1: no limit)", "pruning", GROUP_RATIO))
    time_budget: float | None = field(default=None, metadata=_meta(
        "the whole run should take this fraction of the dense run's time: when the policy triggers, --ratio is "
        "replaced by the step-time fraction that fits (use with --target latency)", "pruning",
        rule(Interval(Real, 0, 1, closed="neither"))))
    granularity: str = field(default="channels", metadata=_meta(
        "what is pruned: channels (removed: a smaller, faster model), weights (masked: --ratio is the weight sparsity; "
        "a smaller file, not a faster model), or both (channels, then weights to --weight-ratio)", "pruning",
        GRANULARITY))
    weight_ratio: float | None = field(default=None, metadata=_meta(
        "with --granularity both: the final weight sparsity, relative to the dense model's prunable weights", "pruning",
        RATIO))
    lottery_rounds: int = field(default=0, metadata=_meta(
        "Lottery Ticket Rewinding: train --epochs, then this many rounds of global magnitude pruning (to --ratio of "
        "the weights in the last) each rewound to --lottery-rewind and retrained; 0: off. Prunes weights by itself "
        "(--policy never)", "pruning", rule(Interval(Integral, 0, None))))
    lottery_rewind: int = field(default=1, metadata=_meta(
        "the epoch whose end state LTR rewinds to (0: the initialisation)", "pruning",
        rule(Interval(Integral, 0, None))))
    speed_profile: str | None = field(default=None, metadata=_meta(
        "a JSON file of the measurements that decide the model (--target latency's step-time predictor, --round-to "
        "auto, --precision/--channels-last measure, --time-budget's costs): written by the first run given it, "
        "re-used by every later one, so that a re-run gives the same model", "pruning", PATH))
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
    log: list[str] = field(default_factory=list, metadata=_meta(
        "also log to these trackers: tensorboard (pip install 'earlyprune[tensorboard]') or a logger registered in "
        "earlyprune.training.loggers.LOGGERS; metrics.jsonl is always written", "run",
        rule(Each(InstanceOf(str, "a logger name"), nonempty=False))))

    # ---------------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        normalised = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normalised) - names)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {source}; see `earlyprune train --help`")
        return cls(**normalised)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> "TrainConfig":
        """Check every value; raise ValueError naming the option and the fix."""
        for f in fields(self):  # each field by its rule, in flag words (earlyprune.core.validation)
            field_rule(f).check("--" + f.name.replace("_", "-"), getattr(self, f.name), flag=True)
        if self.warmup_epochs is not None and self.schedule == "pat" and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"--warmup-epochs ({self.warmup_epochs}) must be below --epochs ({self.epochs})")
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError("--precision fp16 needs a CUDA device; on a CPU use --precision bf16")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ConfigError(f"--name must be a plain directory name, got {self.name!r}")
        if self.granularity == "weights" and self.target != "channels":   # channels: the default
            raise ConfigError(f"--target {self.target} shapes channel pruning; it does not apply to --granularity "
                              f"weights (--ratio is the weight sparsity): leave --target out")
        if self.time_budget is not None and self.policy == "never" and not self.lottery_rounds:
            raise ConfigError(f"--time-budget {self.time_budget:g} sets the ratio when the policy prunes, but --policy "
                              f"never trains dense: the budget would be ignored; choose a policy (e.g. epi) or drop "
                              f"--time-budget")
        if self.time_budget is not None and self.granularity == "weights":
            raise ConfigError(f"--time-budget {self.time_budget:g} needs a faster model, but --granularity weights "
                              f"masks weights and every step runs on the same dense kernels (docs/unstructured.md): "
                              f"prune channels (--granularity channels) or drop --time-budget")
        if (self.granularity == "both") != (self.weight_ratio is not None):
            raise ConfigError("--weight-ratio goes with --granularity both (the final weight sparsity after the "
                              "channels are removed), and --granularity both needs it")
        if self.lottery_rounds:
            if self.policy not in (None, "never"):
                raise ConfigError(f"--lottery-rounds prunes by itself, between whole trainings: use --policy never "
                                  f"(got --policy {self.policy})")
            if self.granularity == "both":
                raise ConfigError("--lottery-rounds prunes weights: use --granularity weights")
            if self.lottery_rewind >= self.epochs:
                raise ConfigError(f"--lottery-rewind ({self.lottery_rewind}) must be below --epochs ({self.epochs}): "
                                  f"each round retrains epochs rewind … epochs−1")
        _check_specs(self, explicit_policy=self.policy is not None and not getattr(self, "_default_policy", False))
        return self

    def resolved(self) -> "TrainConfig":
        """A copy with every automatic value filled in (what actually runs)."""
        from ..policies import POLICIES

        cfg = replace(self, model_args=dict(self.model_args), pruner_args=dict(self.pruner_args), log=list(self.log))
        if cfg.warmup_epochs is None:
            cfg.warmup_epochs = round(cfg.epochs * 8 / 90) if cfg.schedule == "pat" else 0
        if cfg.schedule == "step" and cfg.milestones is None:
            cfg.milestones = sorted({max(1, cfg.epochs // 2), max(1, cfg.epochs * 3 // 4)})
        if cfg.lottery_rounds:  # LTR prunes weights by magnitude between its trainings; the pruner stays dense
            cfg.policy, cfg.granularity, cfg.criterion = "never", "weights", "magnitude"
        if cfg.policy is None:
            cfg.policy = (f"epi:cap={max(1, cfg.epochs // 3)}" if "epi" in POLICIES
                          else f"epoch:{max(1, round(cfg.epochs * 0.1))}")
            object.__setattr__(cfg, "_default_policy", True)  # not the user's choice: no warning about its cap
        return cfg.validate()


def ratio_text(config: Any, ratio: float | None = None) -> str:
    """What a run's ratio prunes, in words: ``"0.5 of channels"``, ``"0.9 of the weights"``, ``"0.5 of channels
    then 0.95 of the weights"`` or Lottery Ticket Rewinding's — from a :class:`TrainConfig` or its ``config.json``
    mapping; ``ratio`` replaces the configured one (a time budget chooses it when pruning starts)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    target, granularity = get("target", "channels"), get("granularity", "channels")
    ratio = get("ratio") if ratio is None else ratio
    if get("lottery_rounds", 0):
        return (f"{ratio:g} of the weights by Lottery Ticket Rewinding ({get('lottery_rounds')} rounds, rewound to "
                f"epoch {get('lottery_rewind', 1)})")
    if granularity == "weights":
        return f"{ratio:g} of the weights"
    if granularity == "both":
        return f"{ratio:g} of {target} then {get('weight_ratio'):g} of the weights"
    return f"{ratio:g} of {target}"


def _check_specs(cfg: TrainConfig, explicit_policy: bool = True) -> None:
    from ..criteria import CRITERIA
    from ..policies import POLICIES
    from .loggers import LOGGERS

    for name in cfg.log:
        if name != "none":
            LOGGERS.get(name)  # raises "unknown logger …; available: …"

    CRITERIA.get(cfg.criterion.partition(":")[0].strip())  # raises "unknown criterion …; available: …"
    if cfg.policy is not None:
        policy = POLICIES.build(cfg.policy)  # building also checks the ':' argument
        if explicit_policy:
            _check_prune_epoch(cfg, policy)


def _check_prune_epoch(cfg: TrainConfig, policy: Any) -> None:
    """A policy whose pruning epoch lies after the run's last epoch would train dense without a word: refused
    when its schedule fixes that epoch, a warning when only a signal policy's cap lies beyond the run."""
    error, warning = policy.run_length_problem(cfg.epochs, cfg.policy, flags=True)
    if error:
        raise ConfigError(error)
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=2)


def check_file_values(values: dict[str, Any], source: str) -> None:
    """Check the values of a ``--config`` file by their keys' rules, naming the key and the file (a YAML
    ``channels_last: 'false'`` is text, not a boolean)."""
    rules = {f.name: field_rule(f) for f in fields(TrainConfig)}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in rules and not rules[name].accepts(value):
            hint = " (write true or false without quotes)" if isinstance(value, str) and \
                value.strip().lower() in ("true", "false", "yes", "no", "on", "off") else ""
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{source}: key {key!r}: {rules[name].message(flag, value, flag=True)}{hint}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml is a dependency
            raise ConfigError(f"reading {path} needs PyYAML: pip install pyyaml (or write the config as JSON)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}); YAML files need a .yaml or .yml suffix") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values, got {type(data).__name__}")
    if "resume" in data:
        raise ConfigError(f"{path}: 'resume' is not a run option — a config file starts a new run; continue a run "
                          f"with `earlyprune train --resume RUN_DIR` (without --config)")
    return data
