"""Weight-level (unstructured) pruning: EarlyCroP-U, CroPit-U, SNIP-U, GraSP-U, random and magnitude pruning,
Lottery Ticket Rewinding, and the cost metrics of sparse models.

* :mod:`.masks` — a binary mask per prunable weight through ``torch.nn.utils.parametrize`` (:class:`MaskedWeights`);
* :mod:`.criteria` — the weight-level criteria, registered in :data:`~earlyprune.criteria.CRITERIA` as
  ``crop-u``, ``snip-u``, ``grasp-u``, ``magnitude-u``, ``random-u`` (imported by ``earlyprune`` itself);
* :mod:`.selection` — one global ranking → masks at a target weight sparsity;
* :mod:`.storage` — disk size in CSR (EarlyCroP appendix D); :mod:`.sparse_io` — the sparse file encoding;
* :mod:`.lottery` — Lottery Ticket Rewinding (imported on use).

This ``__init__`` imports only the leaf modules (torch, numpy), so that :mod:`earlyprune.graph.metrics` and
:mod:`earlyprune.graph.structure` can read masks without an import cycle.
"""

from ..graph.masks import (
           MaskedWeights,
           WeightMask,
           WeightTensor,
           masked_counts,
           parameters_in_plain_order,
           plain_state_dict,
)
from .selection import MaskPlan, mask_distance, select_weights, subnetwork_counts
from .storage import csr_bytes, dense_bytes, reference_disk_size

__all__ = ["MaskPlan", "MaskedWeights", "WeightMask", "WeightTensor", "csr_bytes", "dense_bytes", "mask_distance",
           "masked_counts", "parameters_in_plain_order", "plain_state_dict", "reference_disk_size", "select_weights",
           "subnetwork_counts"]
