"""Importance criteria: the scores are right (identities, finite differences, predicted vs actual loss change),
the modifiers do what they claim, and every criterion prunes every test architecture."""

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import earlyprune as ep
from earlyprune.criteria import (CRITERIA, Batch, ComputeAware, CroP, GraSP, LatencyAware, LatencyTable, Snip,
                                 Taylor, with_modifiers)
from earlyprune.criteria.gates import gate_gradients, gate_hvp
from earlyprune.criteria.latency import clear_cache
from earlyprune.criteria.modifiers import smoothed_costs
from earlyprune.graph.groups import ChannelGroups
from earlyprune.models.small_cnn import SmallCNN
from nets import ARCHITECTURES, MLP, randomize_

CE = nn.functional.cross_entropy
ALL = ["bn_scale", "crop", "grasp", "l1", "magnitude", "random", "snip", "taylor"]


def setup(arch, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    build, shape = ARCHITECTURES[arch]
    model = randomize_(build()).to(dtype)
    x = torch.randn(shape, dtype=dtype)
    y = torch.randint(0, 5, (shape[0],))
    return model, x, y


def spearman(a, b):
    def rank(v):
        r = torch.empty(len(v), dtype=torch.float64)
        r[v.argsort()] = torch.arange(len(v), dtype=torch.float64)
        return r - r.mean()
    ra, rb = rank(a), rank(b)
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def test_registry_names_and_families():
    assert set(ALL) <= set(CRITERIA.names())
    families = {n: CRITERIA.build(n).family for n in ALL}
    assert {n for n, f in families.items() if f == "gradient"} == {"taylor", "snip", "crop", "grasp"}
    assert {n for n, f in families.items() if f == "magnitude"} == {"magnitude", "bn_scale", "l1", "random"}
    assert CRITERIA.build("crop:mixed").product == "mixed" and CRITERIA.build("taylor:batch").per_batch
    assert CRITERIA.build("random:3").seed == 3
    for bad in ("crop:hessian", "taylor:l2", "random:x"):
        with pytest.raises(ValueError):
            CRITERIA.build(bad)


# -- the scores are right ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_identity_gamma_beta_equals_gate_gradient(mode):
    """γ·∂L/∂γ + β·∂L/∂β = Σ y·∂L/∂y at the BN output (measured with retain_grad, independently of our gates),
    and the Taylor criterion (from .grad) equals the gate gradient of snip on every architecture."""
    model, x, y = setup("residual", torch.float64)
    model.train(mode == "train")
    outputs = {}

    def keep(name):
        def hook(module, inputs, out):
            out.retain_grad()
            outputs[name] = out
        return hook

    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    handles = [m.register_forward_hook(keep(n)) for n, m in bns.items()]
    CE(model(x), y).backward()
    for h in handles:
        h.remove()
    for name, bn in bns.items():
        lhs = bn.weight * bn.weight.grad + bn.bias * bn.bias.grad
        rhs = (outputs[name] * outputs[name].grad).sum((0, 2, 3))
        torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-12)

    for arch in ARCHITECTURES:
        model, x, y = setup(arch, torch.float64)
        model.train(mode == "train")
        groups = ChannelGroups(model, x)
        batch = Batch(x, y, CE)
        model.zero_grad()
        batch.loss(model).backward()
        taylor = Taylor().compute(groups)
        gate = gate_gradients(groups, batch)
        for g in groups:
            assert taylor[g.name].abs().max() > 0
            torch.testing.assert_close(taylor[g.name].double(), gate[g.name], rtol=1e-5, atol=1e-9)


def test_hessian_vector_products_equal_finite_differences():
    """(H·g)_c by double backprop = (g_c(θ+εv) − g_c(θ−εv)) / 2ε: v = (g_c on the gates) for the pure gate
    product, v = (g_w on the weights) for the mixed one; "full" is their sum."""
    model, x, y = setup("residual", torch.float64)
    groups = ChannelGroups(model, x)
    batch = Batch(x, y, CE)
    eps = 1e-6
    g0 = gate_gradients(groups, batch)
    hv = gate_hvp(groups, batch, "gate")
    plus = gate_gradients(groups, batch, values={k: 1 + eps * v for k, v in g0.items()})
    minus = gate_gradients(groups, batch, values={k: 1 - eps * v for k, v in g0.items()})
    for name in g0:
        torch.testing.assert_close(hv[name], (plus[name] - minus[name]) / (2 * eps), rtol=1e-5, atol=1e-8)

    params = [p for p in model.parameters()]
    gw = torch.autograd.grad(CE(model(x), y), params)
    mixed = gate_hvp(groups, batch, "mixed")

    def shifted(sign):
        with torch.no_grad():
            for p, g in zip(params, gw):
                p.add_(sign * eps * g)
        out = gate_gradients(groups, batch)
        with torch.no_grad():
            for p, g in zip(params, gw):
                p.sub_(sign * eps * g)
        return out

    plus, minus = shifted(1.0), shifted(-1.0)
    full = gate_hvp(groups, batch, "full")
    for name in g0:
        torch.testing.assert_close(mixed[name], (plus[name] - minus[name]) / (2 * eps), rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(full[name], hv[name] + mixed[name], rtol=1e-8, atol=1e-10)
        assert not torch.allclose(hv[name], mixed[name])  # the two products really differ

    # crop scores |H·g|, grasp keeps GraSP's order: importance −S = +M·H·g (GraSP removes the largest S = −M·H·g)
    crop, grasp = CroP(), GraSP()
    crop.observe(groups, batch)
    grasp.observe(groups, batch)
    for name in g0:
        torch.testing.assert_close(crop.scores(groups)[name].double(), hv[name].abs(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grasp.scores(groups)[name].double(), hv[name], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def trained_cnn():
    """A small CNN trained briefly on a learnable 8×8 image task (noisy class templates), and the actual loss
    change of removing each channel alone on held-out data (3SP Figure 2), by zeroing its output parameters in
    eval mode — independent of the criteria's gates."""
    g = torch.Generator().manual_seed(0)
    templates = nn.functional.avg_pool2d(nn.functional.pad(torch.randn(10, 1, 8, 8, generator=g), (1, 1, 1, 1),
                                                           mode="circular"), 3, 1)
    y = torch.randint(0, 10, (1700,), generator=g)
    x = templates[y] + torch.randn(1700, 1, 8, 8, generator=g)
    torch.manual_seed(0)
    model = SmallCNN(width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        for idx in torch.arange(1400).split(64):
            opt.zero_grad()
            CE(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    groups = ChannelGroups(model, x[:8])
    batch = Batch(x[1400:1700], y[1400:1700], CE)
    with torch.no_grad():
        base = float(batch.loss(model))
        actual = []
        for group in groups:
            for c in range(group.width):
                with group.masked([c]):
                    actual.append(float(batch.loss(model)) - base)
    return model, groups, batch, torch.tensor(actual)


def _scores(criterion, model, groups, batch):
    crit = CRITERIA.build(criterion)
    model.zero_grad()
    batch.loss(model).backward()  # the user's backward, for criteria reading .grad
    crit.observe(groups, batch)
    model.zero_grad(set_to_none=True)
    return torch.cat([crit.scores(groups)[g.name] for g in groups])


def test_taylor_and_snip_rank_the_actual_loss_change_of_removing_each_channel(trained_cnn):
    model, groups, batch, actual = trained_cnn
    assert actual.abs().max() > 0.05                      # removals matter on this network
    for name in ("taylor", "snip"):
        rho = spearman(_scores(name, model, groups, batch), actual.abs())
        assert rho > 0.5, f"{name}: rank correlation {rho:.2f} with the actual loss change"
    random_rhos = [spearman(_scores(f"random:{s}", model, groups, batch), actual.abs()) for s in range(5)]
    assert abs(np.mean(random_rhos)) < 0.15 and max(abs(r) for r in random_rhos) < 0.4


def test_taylor_accumulates_signed_values_and_takes_the_absolute_mean():
    model, x, y = setup("mlp")
    groups = ChannelGroups(model, x)
    plain, per_batch = Taylor(), Taylor(per_batch=True)
    values = []
    for idx in (slice(0, 2), slice(2, 4)):
        model.zero_grad()
        CE(model(x[idx]), y[idx]).backward()
        values.append(Taylor().compute(groups))
        plain.observe(groups)
        per_batch.observe(groups)
    for g in groups:
        a, b = values[0][g.name], values[1][g.name]
        torch.testing.assert_close(plain.scores(groups)[g.name], (a + b).abs() / 2)
        torch.testing.assert_close(per_batch.scores(groups)[g.name], (a.abs() + b.abs()) / 2)
    model.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="after loss.backward"):
        Taylor().compute(groups)


def test_scoring_passes_leave_the_model_unchanged():
    model, x, y = setup("depthwise")
    model.train()
    groups = ChannelGroups(model, x)
    state = copy.deepcopy(model.state_dict())
    for crit in (Snip(), CroP("full"), GraSP()):
        crit.attach(groups)
        crit.observe(groups, Batch(x, y, CE))
        crit.detach()
    assert no_hooks(model)
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k                 # BatchNorm running statistics restored

    def broken_loss(out, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Snip().compute(groups, Batch(x, y, broken_loss))
    assert no_hooks(model)                                 # gates removed even when the pass fails


# -- modifiers ----------------------------------------------------------------------------------------------
def test_smoothed_costs_follow_3sp_eq3():
    c = np.array([1.0, 3.0, 6.0])
    torch.testing.assert_close(torch.tensor(smoothed_costs(c, 0.0)), torch.tensor(c / 6.0))
    lam = 0.05
    cbar = c / c.sum()
    expected = (cbar + lam) / (1 + lam)
    torch.testing.assert_close(torch.tensor(smoothed_costs(c, lam)), torch.tensor(expected / expected.max()))
    assert np.ptp(smoothed_costs(c, 1e6)) < 1e-5             # λ → ∞: the plain criterion's ranking


def test_compute_aware_removes_more_macs_at_the_same_channel_ratio():
    results = {}
    for variant in ("plain", "ca", "ca-filter", "ca-smooth"):
        model, x, y = setup("residual")
        crit = {"plain": "snip", "ca": ComputeAware("snip", 0.0), "ca-filter": ComputeAware("snip", 0.0, "filter"),
                "ca-smooth": ComputeAware("snip", 1e6)}[variant]
        res = ep.prune(model, x, 0.5, criterion=crit, batches=[(x, y)], loss_fn=CE)
        results[variant] = res.after
        channels = results.setdefault("channels", sum(res.structure))
        assert abs(sum(res.structure) - channels) <= 1          # the same channel ratio
    assert results["ca"].macs < 0.75 * results["plain"].macs
    assert results["ca-filter"].macs < 0.75 * results["plain"].macs
    assert results["ca-smooth"].macs == pytest.approx(results["plain"].macs, rel=0.02)  # huge λ: plain ranking

    model, x, y = setup("residual")
    res = ep.prune(model, x, 0.5, criterion="snip", compute_aware=0.0, batches=[(x, y)], loss_fn=CE)
    assert res.after.macs == pytest.approx(results["ca"].macs)  # the keyword builds the same wrapper


def test_modifiers_delegate_and_validate():
    crit = with_modifiers("snip", compute_aware=0.05, latency_aware=True)
    assert isinstance(crit, LatencyAware) and isinstance(crit.inner, ComputeAware)
    assert crit.name == "snip" and crit.family == "gradient" and crit.needs_batches and not crit.uses_gradients
    assert with_modifiers("taylor", compute_aware=0).uses_gradients
    for bad in (-1, True, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="Laplace"):
            with_modifiers("snip", compute_aware=bad)
    with pytest.raises(TypeError, match="latency_aware"):
        with_modifiers("snip", latency_aware=0.1)
    with pytest.raises(ValueError, match="cost"):
        ComputeAware("snip", 0.1, cost="flops")
    model, x, y = setup("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = ep.EarlyPruner(model, x, 0.5, criterion="magnitude", policy="epoch:1", optimizer=opt, compute_aware=0.1)
    assert isinstance(pruner.criterion, ComputeAware) and pruner.criterion.inner.name == "magnitude"
    res = ep.prune(MLP(), x, 0.5, criterion="l1", latency_aware=True)   # measured on this machine, then pruned
    assert res.after.macs < res.before.macs


def test_latency_table_is_measured_once_per_layer_and_penalises_slow_channels():
    clear_cache()
    calls = []

    def fake_timer(run):  # a clock that counts: every timing is a new number, so a cache hit is visible
        calls.append(run)
        run()
        return 1e-6 * len(calls)

    model, x, y = setup("residual")
    groups = ChannelGroups(model, x)
    table = LatencyTable(repeats=1, warmup=0, timer=fake_timer)
    first = table.table(groups)
    n = table.measured
    assert n > 0 and all(len(points) >= 2 for points in first.values())
    assert table.table(groups) == first and table.measured == n        # cached: nothing re-timed
    for bad in ({"fractions": (0.0,)}, {"repeats": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            LatencyTable(**bad)
    # real clock, forward only, on the MLP: savings are finite and non-negative
    model, x, y = setup("mlp")
    groups = ChannelGroups(model, x)
    real = LatencyTable(repeats=1, warmup=0, backward=False, batch_size=8)
    savings = real.savings(groups)
    assert set(savings) == set(groups.names) and all(v >= 0 and np.isfinite(v) for v in savings.values())

    class Table:  # scores are divided by the smoothed, normalised savings
        def savings(self, groups):
            return {g.name: float(i + 1) for i, g in enumerate(groups)}

    crit = LatencyAware("magnitude", lam=0.0, table=Table())
    plain = CRITERIA.build("magnitude").scores(groups)
    wrapped = crit.scores(groups)
    factors = smoothed_costs(np.arange(1.0, len(groups) + 1), 0.0)
    for g, f in zip(groups, factors):
        torch.testing.assert_close(wrapped[g.name], plain[g.name] / f)
    clear_cache()


def test_layer_timings_persist_in_a_cache_file_that_a_damaged_copy_cannot_break(tmp_path):
    model, x, y = setup("mlp")
    groups = ChannelGroups(model, x)
    path = tmp_path / "cache" / "latency.json"
    counter = iter(range(1, 10**6))
    timer = lambda run: 1e-6 * next(counter)
    clear_cache()
    first = LatencyTable(repeats=1, warmup=0, timer=timer, cache_path=path)
    table = first.table(groups)
    assert first.measured > 0 and path.exists()
    clear_cache()                                              # a new process: reads the file, times nothing
    second = LatencyTable(repeats=1, warmup=0, timer=timer, cache_path=path)
    assert second.table(groups) == table and second.measured == 0
    for damage in ("{not json", "[1, 2]"):                     # torn or foreign: measured again and rewritten
        path.write_text(damage)
        clear_cache()
        again = LatencyTable(repeats=1, warmup=0, timer=timer, cache_path=path)
        with pytest.warns(UserWarning, match="unreadable"):
            again.table(groups)
        assert again.measured == first.measured and isinstance(json.loads(path.read_text()), dict)
    blocked = tmp_path / "file"
    blocked.write_text("")                                     # its "directory" is a file: cannot be written
    clear_cache()
    stuck = LatencyTable(repeats=1, warmup=0, timer=timer, cache_path=blocked / "latency.json")
    with pytest.warns(UserWarning, match="cannot write"):
        assert set(stuck.table(groups)) == set(table)
    clear_cache()


@pytest.mark.parametrize("bad", [1e300, -1.0, 0.0, "0.001", True, None])
def test_a_cached_layer_time_that_is_not_a_time_is_measured_again_and_the_file_named(tmp_path, bad):
    """An edited or foreign cache entry (huge, negative, zero, not a number) would make every removal look free or
    ruinous; it is dropped with a warning that names the file, measured again and rewritten."""
    from earlyprune.criteria import latency

    model, x, y = setup("mlp")
    groups = ChannelGroups(model, x)
    path = tmp_path / "latency.json"
    timer = lambda run: 1e-3
    clear_cache()
    table = LatencyTable(repeats=1, warmup=0, timer=timer, cache_path=path).table(groups)
    entries = json.loads(path.read_text())
    victim = sorted(entries)[0]
    entries[victim] = bad
    path.write_text(json.dumps(entries))
    clear_cache()
    latency._WARNED.discard(path)
    again = LatencyTable(repeats=1, warmup=0, timer=timer, cache_path=path)
    with pytest.warns(UserWarning, match=f"layer-timing cache {path}: 1 of {len(entries)} entries are not a layer time"):
        assert again.table(groups) == table
    assert again.measured == 1 and json.loads(path.read_text())[victim] == 1e-3
    clear_cache()


def test_the_default_cache_file_is_one_per_machine_and_the_environment_can_move_or_disable_it(tmp_path,
                                                                                              monkeypatch):
    from earlyprune.criteria.latency import CACHE_ENV, default_cache_path, machine_key
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    key = machine_key()
    assert default_cache_path() == tmp_path / "earlyprune" / "latency" / f"{key}.json" and len(key) == 16
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)                         # timings with another thread count: another file
    try:
        assert machine_key() != key
    finally:
        torch.set_num_threads(threads)
    for off in ("off", "", "none"):
        monkeypatch.setenv(CACHE_ENV, off)
        assert default_cache_path() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine.json"))
    assert default_cache_path() == tmp_path / "mine.json"


# -- every criterion on every architecture --------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("criterion", ALL)
def test_every_criterion_prunes_every_architecture(criterion, arch):
    model, x, y = setup(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bn_scale on the MLP: no BatchNorm to score
        res = ep.prune(model, x, 0.4, criterion=criterion, steps=2, batches=[(x[:2], y[:2]), (x[2:], y[2:])],
                       loss_fn=CE)
    removed = sum(len(v) for step in res.removed for v in step.values())
    assert removed >= 0.4 * (removed + sum(res.structure)) - 1
    assert model(x).shape == (x.shape[0], 5)
    assert all(p.grad is None for p in model.parameters()) and no_hooks(model)
    CE(model(x), y).backward()                                  # and it trains
