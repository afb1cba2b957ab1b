"""Building, the phase that makes a run from its configuration: threads, device, data and loaders
(:func:`setup`); then the model, loss, speed settings, optimizer, LR schedule and pruner (:func:`build`).

A resumed run is built in the same order as a new one, its model replaying the stored pruned structure, so that
:func:`.restore.restore` can put every state back and continue exactly.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.distributed import broadcast_object
from ..core.errors import ConfigError, EarlyPruneError
from ..core.validation import InvalidParameterError
from ..criteria import LatencyTable
from ..criteria.latency import default_cache_path
from ..graph.masks import parameters_in_plain_order
from ..graph.metrics import ModelStats, measure
from ..models.registry import model_builder
from ..planning.rounding import AutoRoundTo
from ..pruner import EarlyPruner
from ..speed.steptime import StepTime
from ..unstructured.lottery import LotteryTicketRewinding
from . import speedup
from .budget import fit_budget
from .checkpoint import has_checkpoint, load_checkpoint, recover_pointer
from .config import TrainConfig
from .data import BatchLoader, ImageData, load_dataset
from .environment import load_average
from .optim import build_optimizer, build_scheduler
from .parallel import DataParallel
from .precision import Precision, resolve_device
from .progress import Progress
from .run import Run


def build_model(cfg: TrainConfig, data: ImageData) -> nn.Module:
    """The model of ``cfg`` for ``data``'s classes and channels; a bad ``--model-arg`` is refused naming it (the
    zoo's models check their arguments' rules), and the model must run on the dataset's images."""
    clash = sorted({"num_classes", "in_channels"} & set(cfg.model_args))
    if clash:
        raise ConfigError(f"--model-arg {clash[0]}=… is set by the dataset ({data.name}); drop it")
    given = " ".join(f"--model-arg {k}={v!r}" for k, v in cfg.model_args.items()) or "no --model-arg"
    # the name first (an unknown model, a missing package: refused as they are), so that whatever the constructor
    # then refuses is about the arguments the run gives it
    builder = model_builder(cfg.model, in_channels=data.in_channels)
    try:
        model = builder(num_classes=data.num_classes, in_channels=data.in_channels, **cfg.model_args)
    except InvalidParameterError as exc:
        raise ConfigError(f"model {cfg.model!r}: {exc}; check --model-arg") from None
    except TypeError as exc:
        raise ConfigError(f"model {cfg.model!r} does not accept these arguments ({given}: {exc}); check "
                          f"--model-arg") from None
    except EarlyPruneError:  # a refusal of the model's own, already said
        raise
    except Exception as exc:  # noqa: BLE001 - external constructors fail in many ways; said with the arguments
        raise ConfigError(f"model {cfg.model!r} could not be built with {given} ({type(exc).__name__}: {exc})") \
            from None
    return model


def _dense_stats(cfg: TrainConfig, model: nn.Module, example: torch.Tensor, data: ImageData) -> ModelStats:
    """The dense model's size, measured with one forward — which also refuses a model that cannot run on the
    dataset's images (a bad ``--model-arg``, a wrong ``--image-size``) before anything else is built."""
    try:
        return measure(model, example)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on the data must not start a run
        given = " ".join(f"--model-arg {k}={v!r}" for k, v in cfg.model_args.items()) or "no --model-arg"
        shape = "x".join(map(str, data.image_shape))
        raise ConfigError(f"model {cfg.model!r} ({given}) cannot run on {data.name}'s {shape} images "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); check --model-arg and "
                          f"--image-size") from None


def _say_if_the_wait_outlasts_the_cap(run: Run) -> None:
    """A signal policy whose ``min_steps`` outlasts its cap on this dataset prunes at the cap: said at the start,
    in the run's terms, rather than only as the cap's warning epochs later."""
    policy = run.pruner.policy
    min_steps, cap = getattr(policy, "min_steps", 0), getattr(policy, "cap", None)
    per_epoch = len(run.train_loader)
    if cap is None or not min_steps or cap * per_epoch >= min_steps or cap >= run.cfg.epochs:
        return
    spec = run.cfg.policy or ""
    spec += ("," if ":" in spec else ":") + f"min_steps={max(1, cap * per_epoch // 2)}"
    run.progress.log(f"{policy!r} waits for {min_steps:,} optimizer steps before its rule may fire, but this run "
                     f"takes {per_epoch:,} per epoch: {cap * per_epoch:,} before its cap, so it will prune at the "
                     f"cap, in epoch {cap} (a shorter wait: min_steps=N in the policy, e.g. {spec})")


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform says, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)



def setup(cfg: TrainConfig, run_dir: Path | None, write: bool, progress: Progress,
          parallel: DataParallel | None = None) -> Run:
    """Threads, device, precision, seeds; the data on the device and its loaders (this rank's shards)."""
    parallel = parallel or DataParallel("cpu")
    _set_threads(cfg, progress)
    device = parallel.device(resolve_device(cfg.device))
    precision = Precision("fp32", device)   # "auto" is resolved by build(), on the model
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # reproducible kernel choice
        torch.cuda.reset_peak_memory_stats(device)

    data = parallel.in_turn(lambda: load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                                                 cache=cfg.data_cache, image_size=cfg.image_size, seed=cfg.seed,
                                                 train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                                                 log=progress.log))
    if cfg.batch_size > len(data.train_x):   # one batch of everything: nothing is timed or allocated beyond it
        progress.log(f"--batch-size {cfg.batch_size} is larger than the {len(data.train_x):,} training images: "
                     f"batches of {len(data.train_x):,}")
        cfg.batch_size = len(data.train_x)
    augment = (data.augment if cfg.augment == "auto" else cfg.augment) == "standard"
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)  # uint8 on the device: augmented there
    test_x, test_y = parallel.shard(data.test_x).to(device), parallel.shard(data.test_y).to(device)
    train_loader = BatchLoader(train_x, train_y, cfg.batch_size, data.mean, data.std, augment=augment, shuffle=True,
                               seed=cfg.seed, rank=parallel.rank, world_size=parallel.world_size)
    test_loader = BatchLoader(test_x, test_y, cfg.eval_batch_size, data.mean, data.std)
    return Run(cfg, run_dir, write, progress, device, precision, data, train_loader, test_loader, parallel)


def _set_threads(cfg: TrainConfig, progress: Progress) -> None:
    """--threads, refused beyond the usable CPUs; a hint when a busy machine would make several threads slower."""
    usable = _usable_cpus()
    if cfg.threads is not None:
        if cfg.threads > usable and os.environ.get("EARLYPRUNE_ALLOW_THREADS") != "1":
            # before any thread exists: 10,000 threads stalled a 2-core machine for minutes
            raise ConfigError(f"--threads {cfg.threads} is more than the {usable} CPU(s) this process may use; more "
                              f"threads than CPUs only slow a step down. Use --threads {usable} or fewer (set "
                              f"EARLYPRUNE_ALLOW_THREADS=1 to force it)")
        torch.set_num_threads(cfg.threads)
    load = load_average()
    threads = torch.get_num_threads()
    if load is not None and threads > 1 and load > usable:
        progress.log(f"the machine is busy (load {load:.1f} on {usable} CPU(s)) and this run uses {threads} threads: "
                     f"on a shared machine one thread per process ran steps 5-16x faster (docs/speed.md); try "
                     f"--threads 1")


def build(run: Run) -> dict[str, Any] | None:
    """The model (original architecture, measured on the CPU; a resumed run replays its pruned structure on it),
    optimizer, LR schedule, loss and pruner — in the same order for a new and a resumed run, so that restoring
    their states continues exactly. Returns the checkpoint's state when resuming."""
    cfg = run.cfg
    model = build_model(cfg, run.data)
    cpu_example = run.train_loader.normalise(run.data.train_x[:2]).contiguous()
    run.dense_stats = _dense_stats(cfg, model, cpu_example, run.data)
    model, state = _stored(run, model)
    run.model = model.to(run.device)
    run.model.train()
    run.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    speedup.resolve_speed(run)
    run.example = run.train_loader.normalise(run.train_loader.x[:2])

    # masks (a resumed sparse run) move weights behind their module's other parameters: keep the original order,
    # which the checkpoint's optimizer state is indexed by
    run.optimizer = build_optimizer(parameters_in_plain_order(run.model), cfg)
    run.scheduler = build_scheduler(run.optimizer, cfg, len(run.train_loader))
    # a resumed run was checked when it started (and its model may be pruned already): no construction checks
    run.pruner = _build_pruner(run, checks=state is None)
    if state is None:
        _say_if_the_wait_outlasts_the_cap(run)
        speedup.apply_profile(run)
    if cfg.lottery_rounds:
        run.lottery = LotteryTicketRewinding(run.model, run.optimizer, cfg.ratio, epochs=cfg.epochs,
                                             rounds=cfg.lottery_rounds, rewind_epoch=cfg.lottery_rewind,
                                             scheduler=run.scheduler)
    run.relayout()
    if state is None and run.pruner.phase == "pruning":   # the policy prunes from epoch 0 (init)
        fit_budget(run)
    return state


def _stored(run: Run, model: nn.Module) -> tuple[nn.Module, dict[str, Any] | None]:
    """The model with the stored run's structure and weights, and its checkpoint's states (None: a new run, or
    one stopped before its first checkpoint); ``run.start_epoch`` set."""
    if run.run_dir is None:
        return model, None
    # a lost pointer: the newest complete checkpoint, never a restart over it
    recovered = broadcast_object(recover_pointer(run.run_dir) if run.parallel.is_main else None)
    if recovered:
        run.progress.log(f"{run.run_dir}/checkpoint.json was missing: continuing from {recovered}, the newest "
                         f"complete checkpoint (its files verified)")
    if not has_checkpoint(run.run_dir):
        return model, None
    run.start_epoch, model, state = load_checkpoint(run.run_dir, model)
    run.parallel.check_resume(state, run.run_dir)
    return model, state


def _build_pruner(run: Run, checks: bool) -> EarlyPruner:
    """The configuration's pruner for this run's model, optimizer and epoch length."""
    cfg, steps_per_epoch = run.cfg, len(run.train_loader)
    reserved = {"criterion", "policy", "optimizer", "target", "steps", "steps_per_epoch", "min_channels", "round_to",
                "loss_fn", "ratio", "granularity", "weight_ratio", "max_group_ratio"}
    clash = sorted(reserved & set(cfg.pruner_args))
    if clash:
        raise ConfigError(f"--pruner-arg {clash[0]}=… duplicates a flag of its own: use "
                          f"--{clash[0].replace('_', '-')}")
    round_to, target, max_group_ratio, extra = _timed_arguments(run)
    measured = [what for what, on in (("the step-time predictor (--target latency)", target == "latency"),
                                      ("--round-to auto", isinstance(round_to, AutoRoundTo))) if on]
    if measured:   # seconds to minutes the first time on a machine: said before, not only after
        run.progress.log(f"{' and '.join(measured)}: layer times are measured on this device when pruning starts "
                         f"(seconds to minutes the first time; cached for later runs)")
    # the random baseline draws from its own generator: seed it with the run's --seed unless given random:SEED
    criterion = f"random:{cfg.seed}" if cfg.criterion.strip() == "random" else cfg.criterion
    levels = 2 if cfg.granularity == "both" else 1  # channel steps, then as many weight steps
    steps = min(cfg.steps, max(1, steps_per_epoch // levels))  # at most one pruning step per batch (said in the log)
    if steps < cfg.steps:
        run.progress.log(f"--steps {cfg.steps}{' per level' if levels > 1 else ''} is more than the "
                         f"{steps_per_epoch} batches of an epoch allow: the pruning epoch prunes in {steps} "
                         f"steps{' per level' if levels > 1 else ''}, one per batch")
    try:
        return EarlyPruner(run.model, run.example, cfg.ratio, criterion=criterion, policy=cfg.policy,
                           optimizer=run.optimizer, target=target, steps=steps, steps_per_epoch=steps_per_epoch,
                           min_channels=run.min_channels or cfg.min_channels, round_to=round_to,
                           loss_fn=run.loss_fn, granularity=cfg.granularity, weight_ratio=cfg.weight_ratio,
                           max_group_ratio=max_group_ratio, **{**extra, **({} if checks else {"checks": False})})
    except TypeError as exc:
        if cfg.pruner_args and "unexpected keyword" in str(exc):
            raise ConfigError(f"EarlyPruner does not accept {exc}; check --pruner-arg") from None
        raise


def _timed_arguments(run: Run) -> tuple[int | AutoRoundTo, str, float, dict[str, Any]]:
    """``round_to``, ``target``, ``max_group_ratio`` and the extra pruner arguments: as configured, except that
    weight masks keep every width, and that "auto" rounding and the latency target time this run's steps."""
    cfg, dtype, channels_last = run.cfg, run.precision.dtype, run.channels_last
    round_to: int | AutoRoundTo = cfg.round_to  # type: ignore[assignment]
    target, max_group_ratio = cfg.target, cfg.max_group_ratio
    cache = default_cache_path()   # one layer-timing file for the rounding choice and the step-time predictor
    if cfg.granularity == "weights":   # masks keep every width, and the step time (dense kernels) does not change
        round_to, target, max_group_ratio = 1, "channels", 1.0
    elif cfg.round_to == "auto":  # time the layers as this run trains: its batch size, precision and memory format
        round_to = AutoRoundTo(table=LatencyTable(repeats=3, warmup=1, batch_size=cfg.batch_size,
                                                  autocast=dtype, channels_last=channels_last,
                                                  cache_path=cache, clock="auto"))
    extra = dict(cfg.pruner_args)
    if target == "latency":   # the step it predicts is this run's: batch size, precision, memory format
        extra.setdefault("step_time", StepTime(batch_size=cfg.batch_size, autocast=dtype,
                                               channels_last=channels_last, cache_path=cache))
    return round_to, target, max_group_ratio, extra
