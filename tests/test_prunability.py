"""A model that breaks when pruned is found at construction — on a copy, in the first seconds — with the groups
to blame and the ignored_layers= fix; the model itself is never touched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.surgery.prunability import check_prunable, layer_expression, narrowing
from bad_inputs import HardCodedWidth
from nets import ARCHITECTURES, cbr


class Heads(nn.Module):
    """A hand-written attention-like reshape into 4 heads: works at any multiple of 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.proj = cbr(3, 8), nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        h = self.proj(self.stem(x))
        b, c, hh, ww = h.shape
        h = h.reshape(b, 4, c // 4, hh * ww).softmax(-1).reshape(b, c, hh, ww)
        return self.fc(h.mean((2, 3)))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_hard_coded_width_is_named_with_the_fix_and_the_model_is_untouched():
    model = HardCodedWidth()
    before = _state(model)
    with pytest.raises(ep.UnprunableGroupsError) as info:
        ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, optimizer=None)
    message = str(info.value)
    assert "mid.0" in message and "ignored_layers=[model.mid[0]]" in message and "stem.0" not in message
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    pruner = ep.EarlyPruner(model, torch.randn(2, 3, 8, 8), 0.5, optimizer=None, ignored_layers=[model.mid[0]],
                            policy="init", steps_per_epoch=1, steps=1)     # the fix works: it prunes and runs
    pruner.step()
    assert pruner.done and model.mid[0].out_channels == 16 and model.stem[0].out_channels + model.head[0].out_channels < 20
    model(torch.randn(2, 3, 8, 8))


def test_a_width_multiple_is_respected_when_round_to_keeps_it():
    with pytest.raises(ep.UnprunableGroupsError, match="proj"):
        ep.EarlyPruner(Heads(), torch.randn(2, 3, 8, 8), 0.5, optimizer=None)
    ep.EarlyPruner(Heads(), torch.randn(2, 3, 8, 8), 0.5, optimizer=None, round_to=4)   # 12, 8, 4: all fine


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_test_architecture_passes_and_is_not_modified(arch):
    builder, shape = ARCHITECTURES[arch]
    model = builder()
    before = _state(model)
    groups = ep.ChannelGroups(model, torch.randn(*shape))
    check_prunable(groups)
    plan = narrowing(groups)
    assert plan and all(len(idxs) >= 1 for idxs in plan.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].shape == after[k].shape for k in before)
    ep.prune(model, torch.randn(*shape), 0.5)   # the original graph still prunes afterwards
    model.eval()(torch.randn(*shape))


def test_narrowing_follows_the_selection_grid_and_minimum():
    groups = ep.ChannelGroups(ARCHITECTURES["grouped"][0](), torch.randn(2, 3, 8, 8))
    plan = narrowing(groups, min_channels=1, round_to=4)
    for index, idxs in plan.items():
        g = groups[index]
        assert (g.width - len(idxs)) % 4 == 0 and (g.width - len(idxs)) % g.ch_groups == 0
    assert narrowing(groups, min_channels=1000) == {}          # nothing can be narrowed: nothing to check


def test_checks_false_skips_the_check():
    ep.EarlyPruner(HardCodedWidth(), torch.randn(2, 3, 8, 8), 0.5, optimizer=None, checks=False)


def test_layer_expressions():
    assert layer_expression("blocks.0.attn.qkv") == "model.blocks[0].attn.qkv"
    assert layer_expression("fc") == "model.fc"


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] "
                                     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 3145728 bytes")])
def test_a_copy_that_runs_out_of_memory_is_not_blamed_on_the_groups(failure, monkeypatch):
    """ViT-L under a memory limit: the check's copy failed to allocate and every group was named unprunable."""
    import earlyprune.surgery.prunability as prunability

    def no_memory(groups, plan):
        raise failure

    monkeypatch.setattr(prunability, "_narrowed_copy", no_memory)
    with pytest.warns(UserWarning, match="ran out of memory"):
        ep.EarlyPruner(HardCodedWidth(), torch.randn(2, 3, 8, 8), 0.5, optimizer=None)
