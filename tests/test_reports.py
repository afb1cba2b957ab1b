"""Reports on small fake run directories: the tables show the runs' numbers, missing runs are reported, the
figures are written, and `earlyprune report` works end to end."""

import json

import pytest

from earlyprune.cli import main
from earlyprune.reports import build_report, collect, infer_comparisons, load_comparison, tables
from earlyprune.reports.comparison import write_manifest

BASE = {"model": "resnet20", "dataset": "cifar10", "epochs": 6, "target": "channels", "seed": 0, "lr": 0.1}


def fake_run(root, name, *, criterion="magnitude", ratio=0.5, policy="epoch:2", acc=0.7, prune_epoch=2, epochs=6,
             complete=True, epi=None, seconds=10.0, seed=0, outcome=None):
    """A run directory as `earlyprune train` writes it, with chosen numbers (``outcome``: the summary's
    ``pruning`` record; None writes a summary of the format before it existed)."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**BASE, "epochs": epochs, "criterion": criterion, "seed": seed,
                                                  "ratio": ratio, "policy": policy, "name": name}))
    rows = []
    done = epochs if complete else epochs // 2
    for e in range(done):
        phase = "dense" if prune_epoch is None or e < prune_epoch else "pruning" if e == prune_epoch else "sparse"
        curve = {k: (v[e] if e < len(v) else None) for k, v in (epi or {}).items()}
        rows.append({"epoch": e, "phase": phase, "test_accuracy": acc - 0.01 * (done - 1 - e), "seconds": seconds,
                     "pruner_seconds": 0.0, "macs": 1000 if phase == "dense" else 500,
                     "events": [{"seconds": 0.25}] if phase == "pruning" else [],
                     "pruner": {"epi": curve, "kendall_tau": 0.5 + 0.05 * e if phase == "dense" else None,
                                "spearman_rho": 0.6 + 0.05 * e if phase == "dense" else None}})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if complete:
        (path / "summary.json").write_text(json.dumps({
            "complete": True, "epochs": epochs, "final_test_accuracy": acc, "best_test_accuracy": acc,
            "prune_epoch": prune_epoch, "train_seconds": seconds * epochs, "speedup": 1.5,
            "params": {"dense": 2000, "final": 1000}, "macs": {"dense": 1000, "final": 500},
            "node_sparsity": 0.5, "weight_sparsity": 0.75, "peak_memory": {"bytes": 3 * 2**20},
            "model_bytes": 4096,
            **({"pruned": outcome["pruned"], "pruning": outcome} if outcome is not None else {})}))
    return path


@pytest.fixture
def grid(tmp_path):
    """Oracle grid (epochs 0, 2, 4) at two ratios, an epi run, two random draws and a dense run."""
    accs = {0.3: {0: 0.7012, 2: 0.7345, 4: 0.7301}, 0.5: {0: 0.6523, 2: 0.6810, 4: 0.6899}}
    for ratio, by_epoch in accs.items():
        for e, acc in by_epoch.items():
            fake_run(tmp_path, f"m-r{ratio}-e{e}", ratio=ratio, policy=f"epoch:{e}", acc=acc, prune_epoch=e)
    fake_run(tmp_path, "m-r0.3-epi", ratio=0.3, policy="epi", acc=0.7333, prune_epoch=3,
             epi={"0.3": [None, 0.9, 0.95, 0.99], "0.5": [None, 0.85, 0.9, 0.97]})
    fake_run(tmp_path, "m-r0.5-epi", ratio=0.5, policy="epi", acc=0.6701, prune_epoch=4)
    fake_run(tmp_path, "m-r0.5-rand0", ratio=0.5, policy="random:0-4,seed=0", acc=0.60, prune_epoch=1)
    fake_run(tmp_path, "m-r0.5-rand1", ratio=0.5, policy="random:0-4,seed=1", acc=0.64, prune_epoch=3)
    fake_run(tmp_path, "m-dense", ratio=0.3, policy="never", acc=0.75, prune_epoch=None, seconds=20.0,
             epi={"0.3": [None, 0.9, 0.95, 0.99, 0.995, 0.996], "0.5": [None, 0.85, 0.9, 0.97, 0.98, 0.99]})
    return tmp_path


def test_tables_show_exactly_the_runs_numbers(grid):
    found = collect([grid])
    assert len(found.runs) == 11 and not found.missing
    (comparison,) = infer_comparisons(found.runs)
    assert comparison.labels == ["epi", "random:0-4"] and comparison.oracle_epochs == [0, 2, 4]
    assert comparison.oracle("magnitude", 0.3) == (0.7345, 2) and comparison.oracle("magnitude", 0.5) == (0.6899, 4)

    grid_md = tables.oracle_table(comparison, "magnitude")
    for text in ("70.12", "**73.45**", "73.01", "65.23", "68.10", "**68.99**"):
        assert text in grid_md
    policy_md = tables.policy_table(comparison, "magnitude")
    assert "73.33 (3)" in policy_md and "67.01 (4)" in policy_md
    assert "62.00 ± 2.83 (1, 3; n=2)" in policy_md          # random: mean ± sd of its two declared draws
    assert "73.45 (2)" in policy_md and "68.99 (4)" in policy_md  # the oracle with its epoch
    # gaps: epi (73.45 − 73.33 + 68.99 − 67.01) / 2 = 1.05; random over one ratio: 68.99 − 62.00
    assert "| avg gap to oracle (points) | – | 1.05 | 6.99 (1 of 2 ratios) |" in policy_md
    assert "| automatic | no | yes | no |" in policy_md
    assert "75.00" in policy_md  # the dense reference
    summary_md = tables.summary_table(comparison)
    assert "| magnitude |" in summary_md and "6.99" in summary_md

    cost_md = tables.cost_table(comparison)
    epi_row = next(line for line in cost_md.splitlines() if "| epi |" in line and "| 30% |" in line)
    cells = [c.strip() for c in epi_row.strip("|").split("|")]
    # n, top-1, Δ vs oracle, epoch, auto, train s, speedup over the dense run (120 s / 60 s), MACs-ideal 6000/4500
    assert cells[3:11] == ["1", "73.33", "-0.12", "3", "yes", "60.0", "2.00", "1.33"]
    assert cells[11:] == ["0.00", "1.0", "50.0%", "75.0%", "3", "4", "–"]  # no CSR size recorded


def test_a_missing_or_unfinished_run_is_reported_not_dropped(grid):
    fake_run(grid, "m-r0.3-half", ratio=0.3, policy="earlycrop", complete=False, prune_epoch=None)
    manifest = {"title": "t", "criteria": ["magnitude"], "ratios": [0.3, 0.5], "labels": ["epi", "earlycrop"],
                "cells": [{"kind": "oracle", "label": "epoch:0", "criterion": "magnitude", "ratio": 0.3, "epoch": 0,
                           "runs": ["m-r0.3-e0"]},
                          {"kind": "oracle", "label": "epoch:2", "criterion": "magnitude", "ratio": 0.3, "epoch": 2,
                           "runs": ["gone-r0.3-e2"]},
                          {"kind": "policy", "label": "epi", "criterion": "magnitude", "ratio": 0.3,
                           "automatic": True, "runs": ["m-r0.3-epi"]},
                          {"kind": "policy", "label": "epi", "criterion": "magnitude", "ratio": 0.5,
                           "automatic": True, "runs": ["m-r0.5-nothing"]},
                          {"kind": "policy", "label": "earlycrop", "criterion": "magnitude", "ratio": 0.3,
                           "automatic": True, "runs": ["m-r0.3-half"]}]}
    write_manifest(grid, manifest)
    comparison = load_comparison(grid)
    assert comparison.oracle("magnitude", 0.3) == (0.7012, 0)  # only the point that exists
    problems = {p.name: reason for p, reason in comparison.problems()}
    assert set(problems) == {"gone-r0.3-e2", "m-r0.5-nothing", "m-r0.3-half"}
    assert "no such run directory" in problems["gone-r0.3-e2"] and "3 of 6 epochs" in problems["m-r0.3-half"]

    policy_md = tables.policy_table(comparison, "magnitude")
    assert "| 50% | missing | missing |" in policy_md and "incomplete" in policy_md
    assert "| -3.21 (1 of 2 ratios) |" in policy_md  # epi beat the one grid point left, over one ratio
    grid_md = tables.oracle_table(comparison, "magnitude")
    assert "missing" in grid_md

    report = build_report([grid, grid / "nowhere"], grid / "out", plots=False)
    text = report.markdown.read_text()
    for name in ("gone-r0.3-e2", "m-r0.5-nothing", "m-r0.3-half", "nowhere"):
        assert name in text
    assert "Runs not available" in text and any("nowhere" in m for m in report.missing)


def test_plots_are_written_for_every_figure(grid):
    pytest.importorskip("matplotlib")
    report = build_report([grid], grid / "out")
    names = {p.name for p in report.plots}
    assert names == {"accuracy_vs_prune_epoch.png", "epi_curves.png", "accuracy_vs_time.png",
                     "epi_vs_rank_correlation.png"}
    for p in report.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
        assert f"]({p.name})" in report.markdown.read_text()


def test_epi_threshold_follows_the_criterion_family(grid):
    from earlyprune.reports.plots import epi_threshold

    (comparison,) = infer_comparisons(collect([grid]).runs)
    assert epi_threshold(comparison, "magnitude") == 0.983 and epi_threshold(comparison, "taylor") == 0.944
    comparison.labels.append("epi:tau=0.9,r=2")
    assert epi_threshold(comparison, "magnitude") == 0.9


def test_report_command(grid, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(grid), "--out", str(out), "--no-plots", "--title", "mine"]) == 0
    assert (out / "report.md").read_text().startswith("# mine")
    assert main(["report", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "no run directories found" in capsys.readouterr().err


def test_markdown_table_checks_alignment():
    assert tables.markdown_table(["a", "b"], [[1, None]]) == "| a | b |\n|---|---:|\n| 1 |  |"
    with pytest.raises(ValueError, match="one letter per column"):
        tables.markdown_table(["a", "b"], [], align="l")


def test_automatic_comes_from_the_policy_class():
    from earlyprune.reports.comparison import is_automatic

    assert [is_automatic(p) for p in ("epi", "earlycrop:cap=3", "earlybird", "init", "before@snip")] == [True] * 5
    assert [is_automatic(p) for p in ("epoch:3", "random:0-3", "never")] == [False] * 3
    assert is_automatic("sometimes") is None


LATE = {"pruned": False, "code": "triggered_too_late", "epoch": None, "channels_removed": 0, "steps": 0,
        "triggered_after_epoch": 5, "reason": "policy EPI(...) triggered at the end of epoch 5, the last one"}


def test_a_run_that_removed_nothing_is_marked_not_pruned_with_its_reason(grid):
    # EPI fired after the last epoch: best accuracy of all (dense), but no result of the policy
    fake_run(grid, "m-r0.5-epi-late", ratio=0.5, policy="epi:tau=0.9", acc=0.80, prune_epoch=None, outcome=LATE)
    # the format before the outcome was recorded: prune_epoch set, yet the parameters did not change
    old = fake_run(grid, "m-r0.3-e6", ratio=0.3, policy="epoch:6", acc=0.79, prune_epoch=None)
    summary = json.loads((old / "summary.json").read_text())
    summary.update(prune_epoch=6, params={"dense": 2000, "final": 2000})
    (old / "summary.json").write_text(json.dumps(summary))
    (comparison,) = infer_comparisons(collect([grid]).runs)
    late = comparison.find("policy", "epi:tau=0.9", "magnitude", 0.5)
    assert late.accuracy == 0.80 and not late.pruned and comparison.gap(late) is None
    assert comparison.oracle("magnitude", 0.3) == (0.7345, 2)  # the unpruned grid point (79 %) is no candidate
    policy_md = tables.policy_table(comparison, "magnitude")
    assert "80.00 (not pruned)" in policy_md and "**80.00" not in policy_md and "**67.01 (4)**" in policy_md
    assert "79.00 (not pruned)" in tables.oracle_table(comparison, "magnitude")
    text = build_report([grid], grid / "out", plots=False).markdown.read_text()
    assert "| `" + str(grid / "m-r0.5-epi-late") + "` | magnitude | epi:tau=0.9 | 50% | not pruned |" in text
    assert "triggered at the end of epoch 5, the last one" in text


def test_identical_runs_are_never_averaged_silently(tmp_path):
    # the same configuration twice (a loaded and an idle machine): two points, not one at 54.7 %
    fake_run(tmp_path, "busy", policy="epi", acc=0.6328, prune_epoch=2, seconds=161 / 6)
    fake_run(tmp_path, "idle", policy="epi", acc=0.4609, prune_epoch=3, seconds=5.8 / 6)
    (comparison,) = infer_comparisons(collect([tmp_path]).runs)
    assert comparison.labels == ["epi [busy]", "epi [idle]"]
    policy_md = tables.policy_table(comparison, "magnitude")
    assert "63.28 (2)" in policy_md and "46.09 (3)" in policy_md and "54.7" not in policy_md
    assert any("same configuration" in note and "--aggregate" in note for note in comparison.notes)
    # on request: one cell with its n and spread
    (together,) = infer_comparisons(collect([tmp_path]).runs, aggregate=True)
    cell = together.find("policy", "epi", "magnitude", 0.5)
    assert cell.n == 2 and abs(cell.accuracy - 0.54685) < 1e-9
    assert "54.69 ± 12.16 (2, 3; n=2)" in tables.policy_table(together, "magnitude")


def test_seeds_are_aggregated_only_on_request(tmp_path, capsys):
    for seed, acc in ((0, 0.70), (1, 0.74), (2, 0.72)):
        fake_run(tmp_path, f"s{seed}", policy="epi", acc=acc, seed=seed)
    assert len(infer_comparisons(collect([tmp_path]).runs)) == 3  # each seed its own setting
    (together,) = infer_comparisons(collect([tmp_path]).runs, aggregate=True)
    assert "seeds 0, 1, 2 aggregated" in together.title
    assert "72.00 ± 2.00 (2, 2, 2; n=3)" in tables.policy_table(together, "magnitude")
    out = tmp_path / "rep"
    assert main(["report", str(tmp_path), "--out", str(out), "--no-plots", "--aggregate"]) == 0
    assert "72.00 ± 2.00" in (out / "report.md").read_text()


def test_one_run_gets_its_own_picture_and_no_comparison_of_one(grid):
    pytest.importorskip("matplotlib")
    report = build_report([grid / "m-r0.3-epi"], grid / "one")
    assert [p.name for p in report.plots] == ["run-m-r0.3-epi.png"]  # no PaT figure of a single point
    text = report.markdown.read_text()
    assert "## Run `m-r0.3-epi`" in text and "](run-m-r0.3-epi.png)" in text and "Oracle grid" not in text
    png = report.plots[0].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # named runs get pictures, runs found inside a folder are compared
    both = build_report([grid, grid / "m-dense"], grid / "two")
    assert "run-m-dense.png" in {p.name for p in both.plots} and "accuracy_vs_time.png" in {p.name for p in both.plots}
