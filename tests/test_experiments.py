"""`sweep` and `compare` on synthetic data with two epochs: the grid, resumption, shared runs, the manifest,
energy through a stand-in codecarbon, and the command-line errors."""

import json
import sys
import types
from dataclasses import replace

import pytest

from earlyprune.cli import main
from earlyprune.experiments import compare, plan_comparison, sweep, sweep_specs
from earlyprune.experiments.runner import ensure_run, state
from earlyprune.reports import load_comparison, load_run
from earlyprune.training import TrainConfig, train

# a width-4 model: widths not rounded to 8, no channels_last (whose floor of 8 channels on AVX2 CPUs would bind)
TINY = dict(model="small_cnn", model_args={"width": 4}, dataset="synthetic:32", image_size=8, epochs=2,
            batch_size=16, eval_batch_size=64, steps=2, progress="none", target="channels", round_to=1,
            channels_last="off")
FLAGS = ["--model", "small_cnn", "--model-arg", "width=4", "--dataset", "synthetic:32", "--image-size", "8",
         "--epochs", "2", "--batch-size", "16", "--steps", "2", "--progress", "none", "--target", "channels",
         "--round-to", "1", "--channels-last", "off"]


def base(tmp_path, **kw):
    return TrainConfig(**{**TINY, "out_dir": str(tmp_path), **kw})


def test_sweep_trains_the_grid_once_and_refuses_another_recipe(tmp_path):
    logs = []
    dirs = sweep(base(tmp_path, name="g"), [1, 0], ratios=[0.3, 0.5], log=logs.append)
    assert [d.name for d in dirs] == ["magnitude-r0.3-epoch0", "magnitude-r0.3-epoch1", "magnitude-r0.5-epoch0",
                                      "magnitude-r0.5-epoch1"]
    runs = [load_run(d) for d in dirs]
    assert all(r.complete and r.epochs_planned == 2 for r in runs)
    assert [r.prune_epoch for r in runs] == [0, 1, 0, 1] and [r.ratio for r in runs] == [0.3, 0.3, 0.5, 0.5]
    assert "4 trained" in logs[-1]
    logs.clear()
    sweep(base(tmp_path, name="g", progress="log"), [0, 1], ratios=[0.3, 0.5], log=logs.append)  # runtime option
    assert "4 already complete" in logs[-1]
    with pytest.raises(ValueError, match="--lr 0.1, not 0.05"):
        sweep(base(tmp_path, name="g", lr=0.05), [0], ratios=[0.3])


def test_an_interrupted_run_is_resumed(tmp_path):
    (spec,) = sweep_specs(base(tmp_path), [1], root=tmp_path / "s")
    assert state(spec) == "new"
    train(replace(spec.config, stop_after=1))
    assert state(spec) == "partial"
    assert ensure_run(spec) == "resumed" and state(spec) == "complete" and ensure_run(spec) == "skipped"
    assert load_run(spec.path).prune_epoch == 1


def test_compare_shares_runs_and_writes_tables_and_manifest(tmp_path, monkeypatch):
    calls = []

    class Tracker:  # a stand-in for codecarbon's offline tracker
        def __init__(self, **kw):
            calls.append(kw)
            self.final_emissions_data = types.SimpleNamespace(energy_consumed=0.002)

        def start(self):
            pass

        def stop(self):
            return 0.001

    monkeypatch.setitem(sys.modules, "codecarbon", types.SimpleNamespace(OfflineEmissionsTracker=Tracker,
                                                                         __version__="fake"))
    policies = ["init", "epoch:1", "random:0-1", "epi:r=1,cap=1", "before@snip"]
    plan = compare(base(tmp_path, name="c"), policies=policies, ratios=[0.5], repeats=3, oracle_epochs=[0, 1],
                   energy=True, plots=False, log=lambda _: None)
    # dense + grid (2) + epi + before: init, epoch:1 and every random draw reuse the grid
    assert sorted(s.name for s in plan.specs) == ["magnitude-dense", "magnitude-r0.5-epi-r=1-cap=1",
                                                  "magnitude-r0.5-epoch0", "magnitude-r0.5-epoch1",
                                                  "snip-r0.5-before"]
    assert len(calls) == 5 and calls[0]["country_iso_code"] == "USA"
    root = tmp_path / "c"
    manifest = json.loads((root / "compare.json").read_text())
    random_cell = next(c for c in manifest["cells"] if c["label"] == "random:0-1")
    assert len(random_cell["draws"]) == 3 and all(d in (0, 1) for d in random_cell["draws"])
    assert load_run(root / "snip-r0.5-before").config["policy"] == "before:2"

    comparison = load_comparison(root)
    assert not comparison.problems()
    oracle = comparison.oracle("magnitude", 0.5)
    grid = {e: load_run(root / f"magnitude-r0.5-epoch{e}").final_accuracy for e in (0, 1)}
    assert oracle[0] == max(grid.values())
    md = (root / "compare.md").read_text()
    init_text = f"{100 * grid[0]:.2f} (0)"
    assert init_text in md and "| automatic | no | yes | no | no | yes | yes |" in md
    assert "energy (Wh)" in md and "CO₂ (g)" in md and "| 2.00 | 1.00 |" in md
    assert json.loads((root / "magnitude-dense" / "energy.json").read_text())["invocations"] == 1


def test_compare_defaults_scale_with_the_epochs(tmp_path):
    plan = plan_comparison(base(tmp_path, epochs=90, name="d"), criteria=["magnitude", "taylor"], repeats=2)
    assert plan.manifest["labels"] == ["init", "epoch:30", "random:0-30", "epi", "earlycrop", "earlybird"]
    assert plan.manifest["oracle_epochs"] == [0, 1, 2, 4, 8, 16, 30]


def test_sweep_command_runs_each_training_in_its_own_process(tmp_path, capsys):
    argv = ["sweep", *FLAGS, "--out-dir", str(tmp_path), "--name", "cli", "--prune-epochs", "1", "--energy", "off"]
    assert main(argv) == 0
    run = load_run(tmp_path / "cli" / "magnitude-r0.5-epoch1")
    assert run.complete and run.config["policy"] == "epoch:1"
    assert main(argv + ["--in-process"]) == 0 and "1 already complete" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--prune-epochs", "0", "--ratios", "1.5"], "--ratios must be fractions in (0, 1)"),
    (["--prune-epochs", "2"], "epoch 2 is outside 0…1"),
    (["--prune-epochs", "x"], "--prune-epochs must be whole numbers"),
    (["--prune-epochs", "0", "--criteria", "nope"], "unknown criterion"),
])
def test_sweep_errors_are_one_line(tmp_path, capsys, extra, message):
    assert main(["sweep", *FLAGS, "--out-dir", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, message", [
    (["--policies", "sometimes"], "unknown policy"),
    (["--policies", "epoch:5"], "--policies epoch:5: epoch 5 is outside"),
    (["--policies", "@snip"], "write POLICY or POLICY@CRITERION"),
    (["--oracle-epochs", "3"], "--oracle-epochs: epoch 3 is outside"),
    (["--energy", "on"], "--energy on needs codecarbon"),
])
def test_compare_errors_are_one_line(tmp_path, capsys, extra, message, monkeypatch):
    monkeypatch.setattr("earlyprune.experiments.energy.available", lambda: False)
    assert main(["compare", *FLAGS, "--out-dir", str(tmp_path), "--dry-run", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_compare_dry_run_lists_the_plan(tmp_path, capsys):
    assert main(["compare", *FLAGS, "--out-dir", str(tmp_path), "--dry-run", "--ratios", "0.3,0.7",
                 "--criteria", "magnitude", "taylor"]) == 0
    out = capsys.readouterr().out
    assert "runs planned" in out and "taylor-r0.7-epoch0" in out and not (tmp_path / "compare").exists()
