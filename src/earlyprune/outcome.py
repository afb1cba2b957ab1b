"""Did a run prune, and if not, why: the one answer that summaries, ``earlyprune info`` and reports print.

A pruner that "pruned during epoch 2" while removing nothing misleads: the policy may have triggered at the end
of the last epoch (the pruning epoch never ran), it may never have triggered (its cap lies after the last
epoch), or every pruning step may have found nothing it was allowed to remove (``min_channels``, ``round_to``,
ignored layers). :func:`pruning_outcome` reads a pruner's public record (``events``, ``phase``, ``history``,
``policy``) and says which, in words a user can act on.

Epochs are numbered from 0, as everywhere in earlyprune (a run of 10 epochs has epochs 0–9).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .policies.base import SignalPolicy

#: ``code`` values: what happened
PRUNED = "pruned"                          #: channels were removed during the pruning epoch
NOT_TRIGGERED = "not_triggered"            #: the policy never fired (and no cap made it fire) within the run
TRIGGERED_TOO_LATE = "triggered_too_late"  #: it fired at the end of the last epoch: no pruning epoch was left
BLOCKED = "blocked"                        #: pruning steps ran but the constraints left nothing to remove
DENSE_BY_DESIGN = "dense_by_design"        #: policy ``never``: a dense reference run
NOT_YET = "not_yet"                        #: the run is not over; the policy has not fired so far


@dataclass(frozen=True)
class PruningOutcome:
    """What the pruner did to the model over a run (JSON-ready with :meth:`to_dict`)."""

    pruned: bool                     #: at least one channel was removed
    code: str                        #: one of the module constants (``"pruned"``, ``"not_triggered"``, …)
    epoch: int | None                #: the pruning epoch (0-based) when channels were removed, else None
    channels_removed: int            #: summed over the pruning steps
    steps: int                       #: pruning steps that ran
    triggered_after_epoch: int | None  #: the dense epoch at whose end the policy fired (None: never / at start)
    reason: str | None               #: why nothing was removed, in words a user can act on (None when pruned)
    weights_masked: int = 0          #: single weights masked (granularity "weights" / "both", LTR)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PruningOutcome":
        return cls(**{k: data.get(k, 0 if k == "weights_masked" else None)  # type: ignore[arg-type]
                      for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One line: ``pruned during epoch 3 (8 steps, 120 channels removed)`` or ``not pruned: <reason>``."""
        if self.pruned:
            what = ", ".join(([f"{self.channels_removed:,} channels removed"] if self.channels_removed else [])
                             + ([f"{self.weights_masked:,} weights masked"] if self.weights_masked else []))
            return f"during epoch {self.epoch} ({self.steps} step{'s' * (self.steps != 1)}, {what})"
        return f"not pruned: {self.reason}"


def pruning_outcome(pruner: Any, epochs: int | None = None) -> PruningOutcome:
    """What ``pruner`` (an :class:`~earlyprune.EarlyPruner`) did, after the epochs trained so far.

    Args:
        pruner: the pruner of the run.
        epochs: the epochs the run was planned for; with it, a run that stopped early is told apart from one
            that ended without pruning.
    """
    events = list(pruner.events)
    masked = sum(int(e.get("removed", 0)) for e in events if e.get("level") == "weights")
    removed = sum(int(e.get("removed", 0)) for e in events if e.get("level") != "weights")
    trained = int(pruner.epoch)  # epoch_end() calls so far
    last = trained - 1
    triggers = [h["epoch"] for h in pruner.history if h.get("trigger")]
    triggered_after = triggers[-1] if triggers else None
    policy = pruner.policy
    if removed > 0 or masked > 0:
        return PruningOutcome(True, PRUNED, pruner.prune_epoch, removed, len(events), triggered_after, None,
                              masked)
    if events:  # steps ran and removed nothing
        rt = getattr(pruner, "round_to", 1)
        rounding = rt if isinstance(rt, int) else "auto"
        if getattr(pruner, "target", None) == "latency":
            reason = (f"{len(events)} pruning step(s) during epoch {pruner.prune_epoch} found no channel whose "
                      f"removal is predicted to save training-step time on this device (with min_channels="
                      f"{pruner.min_channels}, round_to={rounding}, max_group_ratio={pruner.max_group_ratio:g}): "
                      f"the model's layers are too narrow for their width to matter here. Prune a count instead "
                      f"(target='channels' / --target channels), or a model with wider layers{_cache_note(pruner)}")
            return PruningOutcome(False, BLOCKED, None, 0, len(events), triggered_after, reason)
        reason = (f"{len(events)} pruning step(s) during epoch {pruner.prune_epoch} found no channel they may "
                  f"remove: with min_channels={pruner.min_channels} and round_to={rounding} every group already "
                  f"keeps its minimum (ignored and output layers are never pruned). Lower min_channels or "
                  f"round_to, or prune a model with wider layers")
        return PruningOutcome(False, BLOCKED, None, 0, len(events), triggered_after, reason)
    if pruner.phase == "pruning":  # the policy fired, but the pruning epoch was never trained
        if epochs is not None and trained < epochs:
            return PruningOutcome(False, NOT_YET, None, 0, 0, triggered_after,
                                  f"the run stopped after epoch {last}, before its pruning epoch {pruner.prune_epoch}")
        fix = (f"epoch:K with K ≤ {last}" if policy.scheduled_epoch() is not None
               else f"a lower cap, e.g. {_policy_kind(policy)}:cap={max(last, 1)}" if isinstance(policy, SignalPolicy)
               else "a policy that fires earlier")
        reason = (f"{_policy_name(policy)} triggered at the end of epoch {last}, the last one: the pruning epoch "
                  f"({pruner.prune_epoch}) was never trained. Train more epochs, or prune earlier ({fix})")
        return PruningOutcome(False, TRIGGERED_TOO_LATE, None, 0, 0, triggered_after, reason)
    # still dense: the policy never fired
    kind = _policy_kind(policy)
    if kind == "never":
        return PruningOutcome(False, DENSE_BY_DESIGN, None, 0, 0, None, "policy 'never': a dense reference run")
    if epochs is not None and trained < epochs:
        return PruningOutcome(False, NOT_YET, None, 0, 0, None,
                              f"the run stopped after epoch {last}; {_policy_name(policy)} has not fired yet")
    fixed = policy.scheduled_epoch()
    if fixed is not None and kind in ("epoch", "random", "init"):
        reason = (f"{_policy_name(policy)} prunes during epoch {fixed}, but the run ended with epoch {last}. "
                  f"Train at least {fixed + 1} epochs, or choose an epoch ≤ {max(last, 0)}")
        return PruningOutcome(False, NOT_TRIGGERED, None, 0, 0, None, reason)
    cap = policy.cap if isinstance(policy, SignalPolicy) else "none"
    if cap is None:
        reason = (f"{_policy_name(policy)} did not fire within the {trained} epoch(s) (signal "
                  f"{_signal(policy)}) and has no cap. Train longer, or set a cap (e.g. cap={max(trained - 2, 1)})")
    elif isinstance(cap, int):
        reason = (f"{_policy_name(policy)} did not fire within the {trained} epoch(s) (last signal "
                  f"{_signal(policy)}), and its cap — prune during epoch {cap} at the latest — lies after the last "
                  f"epoch ({last}). Lower the cap below the epochs (e.g. {_policy_kind(policy)}:cap="
                  f"{max(min(cap, trained) - 2, 1)}) or train longer")
    else:
        reason = f"{_policy_name(policy)} did not trigger within the {trained} epoch(s)"
    return PruningOutcome(False, NOT_TRIGGERED, None, 0, 0, None, reason)


def _cache_note(pruner: Any) -> str:
    """Where the step-time predictions' layer timings were kept: a stale or foreign file explains a predictor
    that finds nothing worth removing."""
    cache = getattr(pruner.step_time, "cache_path", None) if getattr(pruner, "step_time", None) else None
    return (f"; the layer timings behind the prediction were read from and written to {cache} — delete it to "
            f"measure them again" if cache else "")


def _policy_name(policy: Any) -> str:
    return f"policy {policy!r}"


def _policy_kind(policy: Any) -> str:
    return str(getattr(policy, "name", type(policy).__name__.lower()))


def _signal(policy: Any) -> str:
    value = policy.signal() if hasattr(policy, "signal") else None
    return "n/a" if value is None else f"{value:.4g}"
