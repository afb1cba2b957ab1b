"""The README's extension examples run as written."""

import re
from pathlib import Path

import torch
from torch import nn

import earlyprune as ep
from nets import ResidualNet

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Adding a criterion or a policy", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_readme_criterion_and_policy_examples_plug_into_the_pruner():
    exec(compile(_examples(), str(README), "exec"), {})
    model = ResidualNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 5, (32,))
    pruner = ep.EarlyPruner(model, x[:4], 0.5, criterion="bn_abs", policy="after:2", optimizer=opt, steps=2)
    for _ in range(4):
        for idx in torch.arange(32).split(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            pruner.step()
        pruner.epoch_end()
    assert pruner.prune_epoch == 2 and pruner.done


def test_the_demo_help_and_the_readme_quote_the_same_time():
    from earlyprune.cli import build_parser

    quick = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("```", 2)[1]
    readme = re.search(r"earlyprune demo .*\(~([0-9-]+ s)\)", quick).group(1)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    demo_help = next(c.help for c in sub._choices_actions if c.dest == "demo")
    assert f"~{readme}" in demo_help, (readme, demo_help)
