"""The project's exceptions: one base, :class:`EarlyPruneError`, so that ``except earlyprune.EarlyPruneError``
catches every refusal earlyprune makes on purpose (a bad argument, an unreachable target, a damaged file, a run
whose loss diverged) and nothing else.

Each subclass also keeps the built-in base it had before the base class existed (``ValueError`` for bad values,
``TypeError`` too for a bad argument), so code written as ``except ValueError`` keeps working. A leaf module:
it imports nothing from the package.
"""

from __future__ import annotations


class EarlyPruneError(Exception):
    """Base of every error earlyprune raises on purpose; the message says what was wrong and how to fix it."""


class StructureMismatchError(EarlyPruneError, ValueError):
    """A saved model does not fit: not saved from this architecture, not an earlyprune file, or malformed."""


class DamagedFileError(StructureMismatchError):
    """A file is truncated, altered or malformed: its checksum does not match, or its header asks for what it
    cannot hold. (A :class:`StructureMismatchError`, which code that loads models already catches.)"""


class InfeasibleTargetError(EarlyPruneError, ValueError):
    """The pruning target cannot be reached under ``min_channels`` / ``round_to`` (or what the layers require):
    the message names the groups that limit it and the largest fraction that can be removed."""


class UnprunableGroupsError(EarlyPruneError, ValueError):
    """Some channel groups cannot be narrowed without breaking the model's forward (a width fixed in its code):
    the message names them and the ``ignored_layers=`` that keeps them whole."""


class PrunedModelBrokenError(UnprunableGroupsError, RuntimeError):
    """A pruning step left a model that no longer runs on its example inputs (a width fixed in its forward): the
    step was rolled back, and the message names the groups and the ``ignored_layers=`` that keeps them whole. (An
    :class:`UnprunableGroupsError`, and a ``RuntimeError`` as before.)"""


class NonFiniteError(EarlyPruneError, ValueError, ArithmeticError):
    """Training produced NaN or infinite values that cannot be pruned or trained on (a learning rate too high,
    reduced precision overflowing): the message names the hyper-parameter to check."""


class ConfigError(EarlyPruneError, ValueError):
    """A run configuration (flags or a ``--config`` file) that cannot run: the message names the option."""


class UsageError(EarlyPruneError, RuntimeError):
    """A call out of order, or in a state that cannot serve it (no batch observed yet, no gradients yet, no rewind
    point recorded): the message says which call must come first."""


class NotSupportedError(EarlyPruneError, NotImplementedError):
    """A setup earlyprune does not support (e.g. the Hugging Face callback under DDP): the message names the
    alternative. (A ``NotImplementedError``, as before.)"""


class UnknownNameError(EarlyPruneError, KeyError):
    """A lookup by name (a channel group, a prunable weight) of a name that does not exist: the message lists the
    known names. (A ``KeyError``, so ``in`` and ``.get()`` behave as for any mapping.)"""

    def __str__(self) -> str:  # the message as written, not quoted as KeyError quotes a key
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class MissingFileError(EarlyPruneError, FileNotFoundError):
    """A file to read does not exist: the message names the path and how to make the file."""


class RunFailedError(EarlyPruneError, ValueError):
    """A training run that ``earlyprune compare`` / ``sweep`` started in a subprocess failed: its own output says
    why, and rerunning the same command continues it. (A ``ValueError``, as before.)"""


class MissingDependencyError(EarlyPruneError, ImportError, ValueError):
    """An optional package that the asked-for feature needs is not installed: the message names the ``pip install``.
    (An ``ImportError``, as an import guard expects, and a ``ValueError``, as before for a model name or a flag value
    that needs the package.)"""


__all__ = ["ConfigError", "DamagedFileError", "EarlyPruneError", "InfeasibleTargetError", "MissingDependencyError",
           "MissingFileError", "NonFiniteError", "NotSupportedError", "PrunedModelBrokenError", "RunFailedError", "StructureMismatchError", "UnknownNameError", "UnprunableGroupsError",
           "UsageError"]
