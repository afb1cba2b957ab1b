import pytest
import torch

from earlyprune.cli import main
from earlyprune.criteria import CRITERIA, Criterion, Magnitude
from earlyprune.core.registry import Registry
from nets import MLP


def test_registry_builds_by_name_or_instance_and_explains_mistakes():
    reg = Registry("thing", Criterion)

    @reg.register("mine")
    class Mine(Criterion):
        pass

    assert isinstance(reg.build("mine"), Mine)
    inst = Mine()
    assert reg.build(inst) is inst
    with pytest.raises(ValueError, match="only apply when"):
        reg.build(inst, foo=1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("mine")(type("Other", (Criterion,), {}))
    with pytest.raises(TypeError, match="must subclass Criterion"):
        reg.register("bad")(int)
    with pytest.raises(ValueError, match="takes no ':' argument"):
        reg.build("mine:3")


def test_magnitude_is_pat_equation_2():
    """‖W_n‖₂/√P per output neuron, P = weights per filter."""
    from earlyprune.graph.groups import ChannelGroups

    model = MLP()
    with torch.no_grad():
        model.net[0].weight.copy_(torch.arange(32 * 20, dtype=torch.float32).reshape(32, 20) / 100)
    groups = ChannelGroups(model, torch.randn(2, 20))
    scores = CRITERIA.build("magnitude").scores(groups)
    w = model.net[0].weight
    expected = w.norm(dim=1) / 20 ** 0.5
    torch.testing.assert_close(scores["net.0"], expected)
    assert isinstance(CRITERIA.build("magnitude"), Magnitude)


def test_demo_runs_and_prints_a_summary(capsys):
    assert main(["demo", "--epochs", "3", "--prune-epoch", "1", "--width", "8", "--steps", "2", "--quiet",
                 "--target", "channels"]) == 0   # a time target may keep an 8-wide net whole
    out = capsys.readouterr().out
    for needle in ("test accuracy", "parameters", "MACs per image", "seconds per epoch", "Pruned during epoch 1"):
        assert needle in out


@pytest.mark.parametrize("argv,message", [
    (["demo", "--ratio", "1.5"], "ratio must be in (0, 1)"),
    (["demo", "--epochs", "0"], "whole number ≥ 1"),
])
def test_cli_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_semantic_errors_exit_2_with_one_line(capsys):
    assert main(["demo", "--epochs", "3", "--prune-epoch", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("earlyprune demo: error:") and "\n" not in err
    assert main(["demo", "--criterion", "nope"]) == 2
    assert "unknown criterion 'nope'" in capsys.readouterr().err
