"""When fit starts, the callbacks check the trainer's length against the policy: a policy that cannot prune
within the run would otherwise end it unpruned without a word. A warning, not the refusal ``earlyprune train``
gives: a fit with fewer epochs is also how a Lightning or Hugging Face run is trained in parts and resumed."""

from __future__ import annotations

import warnings

from ..policies import Policy


def check_run_length(policy: Policy, epochs: int, spec: str | None = None) -> None:
    """Warn when ``policy`` cannot prune within ``epochs`` epochs: by definition, or if its signal does not fire
    before its cap."""
    error, warning = policy.run_length_problem(epochs, spec)
    if error or warning:
        warnings.warn(f"{error or warning} (the trainer's epochs, checked when fit starts; a fit trained in parts "
                      f"can ignore this)", UserWarning, stacklevel=3)


__all__ = ["check_run_length"]
