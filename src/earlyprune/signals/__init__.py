"""Per-epoch signals for deciding when to prune, computed from what the pruner already has (no extra data pass).

Two parts: :mod:`.measures` — the pure functions (PaT's Ψ and EPI, sub-network structures ``N_t``, EarlyCroP's
weight change, Early-Bird's BatchNorm masks and their distance, Kendall's τ and Spearman's ρ); :mod:`.recorder` —
:class:`SignalRecorder`, the stateful part that keeps ``θ_0`` and the previous epochs and writes one record of
``pruner.history`` per epoch. Everything is re-exported here (``from earlyprune.signals import …``).
"""

from .measures import (_count_inversions, batchnorm_scales, bn_mask, early_pruning_indicator, kendall_tau,
                       mask_distance, spearman_rho, structure_similarity, subnetwork_structures, weight_change_score,
                       weight_distance)
from .recorder import (DEFAULT_QUEUE, DEFAULT_RATIOS, DEFAULT_WINDOW, SIGNAL_KEYS, SIGNALS, EpochSignals,
                       SignalRecorder, empty_record, ratio_key)

__all__ = ["DEFAULT_QUEUE", "DEFAULT_RATIOS", "DEFAULT_WINDOW", "SIGNALS", "SIGNAL_KEYS", "EpochSignals",
           "SignalRecorder", "_count_inversions", "batchnorm_scales", "bn_mask", "early_pruning_indicator",
           "empty_record", "kendall_tau", "mask_distance", "ratio_key", "spearman_rho", "structure_similarity",
           "subnetwork_structures", "weight_change_score", "weight_distance"]
