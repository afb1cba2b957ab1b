"""Lottery Ticket Rewinding: the round schedule, magnitude pruning per round, and the rewind of weights,
optimizer state and LR schedule to the rewind point."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import earlyprune as ep
from earlyprune.unstructured.lottery import LotteryTicketRewinding


def _setup(rewind_epoch=1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ltr = LotteryTicketRewinding(model, opt, 0.75, epochs=3, rounds=2, rewind_epoch=rewind_epoch, scheduler=sched)
    return model, opt, sched, ltr


def _epoch(model, opt, sched, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(8, 6, generator=g)), torch.randint(0, 3, (8,), generator=g)).backward()
        opt.step()
    sched.step()


def test_schedule_maps_global_epochs_to_rounds():
    *_, ltr = _setup()
    assert ltr.total_epochs == 3 + 2 * 2
    assert [(ltr.locate(i).round, ltr.locate(i).epoch) for i in range(7)] == [
        (0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert ltr.sparsity(1) == pytest.approx(0.5) and ltr.sparsity(2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="epoch must be in"):
        ltr.locate(7)


def test_rounds_prune_by_magnitude_and_rewind_everything():
    model, opt, sched, ltr = _setup()
    rewind = None
    for i in ltr.schedule():
        pruned = ltr.epoch_start(i)
        if pruned:
            where = ltr.locate(i)
            w = ltr.weights
            assert w.sparsity() == pytest.approx(ltr.sparsity(where.round), abs=2 / w.baseline)
            for t in w:  # kept weights are back at their rewind values, pruned ones exactly zero
                kept = t.mask
                assert torch.equal(t.value.detach()[kept], rewind["model"][t.name][kept])
                assert torch.count_nonzero(t.value.detach()[~kept]) == 0
                buf = opt.state[t.parameter]["momentum_buffer"]
                assert torch.count_nonzero(buf[~kept]) == 0
            assert opt.param_groups[0]["lr"] == pytest.approx(rewind["scheduler"]["_last_lr"][0])
        _epoch(model, opt, sched, seed=i)
        ltr.epoch_end(i)
        if i == 0:
            rewind = {"model": {n: p.detach().clone() for n, p in model.named_parameters()},
                      "scheduler": dict(sched.state_dict())}
    assert [h["round"] for h in ltr.history] == [1, 2]
    assert ltr.weights.sparsity() == pytest.approx(0.75, abs=2 / ltr.weights.baseline)


def test_magnitude_chooses_the_largest_trained_weights():
    model, opt, sched, ltr = _setup(rewind_epoch=0)
    for i in range(3):
        _epoch(model, opt, sched, seed=i)
        ltr.epoch_end(i)
    trained = {t.name: t.value.detach().abs().clone() for t in ltr.weights}
    ltr.epoch_start(3)
    everything = torch.cat([v.flatten() for v in trained.values()])
    threshold = everything.sort(descending=True).values[int(0.5 * everything.numel()) - 1]
    for t in ltr.weights:
        assert bool((trained[t.name][t.mask] >= threshold).all())


def test_bad_arguments():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="rewind_epoch"):
        LotteryTicketRewinding(model, None, 0.5, epochs=2, rounds=1, rewind_epoch=2)
    with pytest.raises(ValueError, match="ratio"):
        LotteryTicketRewinding(model, None, 1.0, epochs=2, rounds=1)
    with pytest.raises(ValueError, match="rounds"):
        LotteryTicketRewinding(model, None, 0.5, epochs=2, rounds=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": True}, "ratio must be a number in (0, 1), got True"),
    ({"optimizer": "sgd"}, "optimizer must be a torch.optim.Optimizer or None, got 'sgd'"),
    ({"rounds": 1.5}, "rounds must be an integer ≥ 1, got 1.5"),
    ({"rewind_epoch": -1}, "rewind_epoch must be an integer ≥ 0, got -1"),
])
def test_bad_arguments_follow_the_declared_rules(kwargs, message):
    """One shape of refusal, an EarlyPruneError, as everywhere else in the package (not a plain ValueError)."""
    args = {"model": nn.Linear(2, 2), "optimizer": None, "ratio": 0.5, "epochs": 2, "rounds": 1, **kwargs}
    with pytest.raises(ep.InvalidParameterError) as err:
        LotteryTicketRewinding(args.pop("model"), args.pop("optimizer"), args.pop("ratio"), **args)
    assert str(err.value).startswith(message)


def test_weight_storage_and_ranking_refuse_bad_numbers_by_rule():
    from earlyprune.graph.masks import MaskedWeights
    from earlyprune.unstructured.selection import rank_weights
    from earlyprune.unstructured.storage import csr_bytes

    model = nn.Linear(2, 2)
    with pytest.raises(ep.InvalidParameterError, match="value_bits must be an integer ≥ 1, got 0"):
        csr_bytes(model, value_bits=0)
    with pytest.raises(ep.InvalidParameterError, match="min_weights must be an integer ≥ 0, got -1"):
        rank_weights(MaskedWeights(model), {}, min_weights=-1)
    with pytest.raises(ep.InvalidParameterError, match="scores are missing weight"):
        rank_weights(MaskedWeights(model), {})
