"""--speed-profile: the measurements that decide a model are taken once and re-used, so a re-run gives the same
model; a profile from another setting is refused."""

import json

import pytest

from earlyprune.cli import main

RUN = ["--model", "small_cnn", "--model-arg", "width=16", "--dataset", "synthetic:96", "--batch-size", "32",
       "--epochs", "3", "--policy", "epoch:1", "--steps", "2", "--progress", "none", "--threads", "1",
       "--target", "latency", "--round-to", "auto", "--precision", "measure", "--channels-last", "measure"]


def _train(tmp_path, name, *extra):
    return main(["train", *RUN, "--out-dir", str(tmp_path), "--name", name, *extra])


def test_a_profile_is_written_once_then_read_and_nothing_is_measured_again(tmp_path, monkeypatch):
    profile = tmp_path / "profile.json"
    assert _train(tmp_path, "first", "--speed-profile", str(profile)) == 0
    data = json.loads(profile.read_text())
    assert data["format"] == "earlyprune.speed-profile" and data["setting"]["batch_size"] == 32
    assert data["speed"]["measured"] and data["round_to"]["value"] >= 1 and data["predictor"]["names"]

    def measured(*args, **kwargs):
        raise AssertionError("a run with a speed profile measured again")
    monkeypatch.setattr("earlyprune.training.speedup.choose_settings", measured)
    monkeypatch.setattr("earlyprune.speed.steptime.StepTime.measure", measured)
    monkeypatch.setattr("earlyprune.planning.rounding.AutoRoundTo.choose", measured)
    assert _train(tmp_path, "second", "--speed-profile", str(profile)) == 0
    first, second = (json.loads((tmp_path / n / "structure.json").read_text()) for n in ("first", "second"))
    assert first == second
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["speed_profile"] == {"path": str(profile), "read": True, "written": False}
    assert summary["speed_settings"] == data["speed"]


def test_a_profile_from_another_setting_or_not_a_profile_is_refused(tmp_path, capsys):
    profile = tmp_path / "profile.json"
    assert _train(tmp_path, "first", "--speed-profile", str(profile)) == 0
    assert _train(tmp_path, "other", "--speed-profile", str(profile), "--batch-size", "16") == 2
    err = capsys.readouterr().err
    assert "measured in another setting" in err and "batch_size: profile 32, run 16" in err
    (tmp_path / "junk.json").write_text('{"a": 1}')
    assert _train(tmp_path, "junk", "--speed-profile", str(tmp_path / "junk.json")) == 2
    assert "is not a speed profile" in capsys.readouterr().err
