"""Run loggers: an epoch row becomes named scalars; TensorBoard event files hold them; a tracker of your own is
one small class."""

import pytest

from earlyprune.training.loggers import LOGGERS, RunLogger, RunStart, build_loggers, epoch_scalars, flat_config

ROW = {"epoch": 3, "phase": "pruning", "lr": 0.05, "train_loss": 1.25, "train_accuracy": 0.5, "seconds": 8.0,
       "pruner_seconds": 2.0, "batches": 40, "images_per_second": 640.0, "test_loss": 1.5, "test_accuracy": 0.45,
       "eval_seconds": 1.0, "params": 1000, "macs": 20000, "node_sparsity": 0.5, "weight_sparsity": 0.7,
       "pruner": {"epoch": 3, "trigger": False, "policy_signal": None, "epi": {"0.5": 0.97, "0.3": None},
                  "kendall_tau": 0.8, "channels": 12.0, "structure": [4, 8]},
       "events": [{"removed": 5, "epoch": 3, "step": 1}, {"removed": 3, "epoch": 3, "step": 2}]}


def test_an_epoch_row_becomes_named_scalars():
    s = epoch_scalars(ROW)
    assert s["train/loss"] == 1.25 and s["test/accuracy"] == 0.45 and s["lr"] == 0.05
    assert s["time/epoch_seconds"] == 10.0 and s["time/step_seconds"] == 0.2  # 8 s of training over 40 batches
    assert s["model/params"] == 1000.0 and s["model/macs"] == 20000.0 and s["model/weight_sparsity"] == 0.7
    assert s["pruning/phase"] == 1.0 and s["pruning/channels_removed"] == 8.0 and s["pruning/steps"] == 2.0
    assert s["signals/epi@0.5"] == 0.97 and s["signals/kendall_tau"] == 0.8 and s["pruning/trigger"] == 0.0
    assert "signals/epi@0.3" not in s and "signals/policy_signal" not in s  # undefined values are left out
    unevaluated = epoch_scalars({**ROW, "test_accuracy": None, "test_loss": None})
    assert "test/accuracy" not in unevaluated


def test_tensorboard_writes_the_scalars_and_pruning_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (logger,) = build_loggers(["tensorboard"])
    logger.start(RunStart("r", tmp_path, {"model": "m", "model_args": {"width": 8}}))
    for epoch in range(3):
        for event in ROW["events"] if epoch == 1 else []:
            logger.log_event({**event, "epoch": 1})
        logger.log_epoch({**ROW, "epoch": epoch, "train_loss": 2.0 - epoch})
    logger.finish({"epochs": 3, "pruned": True, "final_test_accuracy": 0.5})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("train/loss")] == [2.0, 1.0, 0.0]
    assert [e.step for e in events.Scalars("signals/epi@0.5")] == [0, 1, 2]
    assert {"pruning/events", "run/config", "run/summary"} <= {t.rsplit("/text_summary", 1)[0]
                                                              for t in events.Tags()["tensors"]}


def test_a_tracker_of_your_own_is_one_small_class():
    seen = []

    @LOGGERS.register("test-memory")
    class Memory(RunLogger):
        def log_scalars(self, step, scalars):
            seen.append((step, scalars["train/loss"]))

    (logger,) = build_loggers(["test-memory"])
    logger.start(RunStart("r", None, {}))
    logger.log_epoch(ROW)
    assert seen == [(3, 1.25)]
    assert build_loggers(["none"]) == []
    with pytest.raises(ValueError, match="unknown logger 'mlflow'; available: .*tensorboard"):
        build_loggers(["mlflow"])
    assert flat_config({"a": {"b": 1}, "c": [1, 2]}) == {"a.b": "1", "c": "[1, 2]"}


def test_the_mlflow_and_wandb_loggers_of_docs_logging_plug_in(monkeypatch):
    """The two classes of docs/logging.md run as written (against stand-ins for mlflow and wandb)."""
    import re
    import sys
    import types
    from pathlib import Path

    calls = []
    mlflow = types.SimpleNamespace(start_run=lambda **kw: calls.append(("start", kw)),
                                   log_params=lambda p: calls.append(("params", p)),
                                   log_metrics=lambda m, step: calls.append(("metrics", step, m)),
                                   log_dict=lambda d, name: calls.append(("dict", name)),
                                   end_run=lambda: calls.append(("end",)))
    run = types.SimpleNamespace(log=lambda m, step: calls.append(("wandb", step, m)),
                                finish=lambda: calls.append(("wandb-finish",)))
    wandb = types.SimpleNamespace(init=lambda **kw: run)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    text = (Path(__file__).resolve().parents[1] / "docs" / "logging.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    monkeypatch.setattr(LOGGERS, "_classes", dict(LOGGERS._classes))  # the registrations stay in this test
    exec(compile(code, "docs/logging.md", "exec"), {})
    for logger in build_loggers(["mlflow", "wandb"]):
        logger.start(RunStart("r", None, {"model": "m", "model_args": {"width": 8}}))
        logger.log_event(ROW["events"][0])
        logger.log_epoch(ROW)
        logger.finish({"epochs": 4})
        logger.close()
    assert ("params", {"model": "m", "model_args.width": "8"}) in calls and ("end",) in calls
    metrics = next(c for c in calls if c[0] == "metrics")
    assert metrics[1] == 3 and metrics[2]["signals/epi_at_0.5"] == 0.97
    assert ("wandb", 3, {"pruning/step_removed": 5}) in calls and ("wandb-finish",) in calls
