"""The folders of the package form layers, and imports run down them only (issue 22: layers that import one way).

A module may import its own layer and the layers below; an import that runs back up — at module level or deferred
inside a function — fails here with the two modules named. Top-level modules (``pruner``, ``oneshot``, ``outcome``)
form one layer between the pruning machinery and its clients.
"""

from __future__ import annotations

import pytest

from test_imports import _modules, import_graph

#: lowest first; one entry per layer, several folders may share one
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("graph",),
    ("criteria",),
    ("surgery",),
    ("speed",),
    ("unstructured",),
    ("planning",),
    ("signals",),
    ("policies",),
    ("io",),
    ("<top>",),           # pruner.py, oneshot.py, outcome.py: the conductor and one-shot pruning
    ("models",),
    ("training",),
    ("reports",),
    ("integrations", "experiments"),
    ("cli",),
]
RANK = {folder: i for i, layer in enumerate(LAYERS) for folder in layer}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "<package>"          # __init__ re-exports every layer; __main__ runs the command
    if len(parts) == 2 and parts[1] not in RANK:
        return "<top>"              # a module directly in earlyprune/
    return parts[1]


def test_every_folder_has_a_layer():
    folders = {layer_of(m) for m in _modules()} - {"<package>"}
    assert folders <= set(RANK), f"add these folders to LAYERS: {sorted(folders - set(RANK))}"


def upward_imports() -> list[str]:
    bad = []
    for module, targets in import_graph().items():
        here = layer_of(module)
        if here == "<package>":
            continue
        for target in targets:
            there = layer_of(target)
            if there == "<package>":
                continue   # `from .. import x` of a sibling module is resolved to the module by import_graph
            if RANK[there] > RANK[here]:
                bad.append(f"{module} ({here}) imports {target} ({there}), a layer above it")
    return sorted(bad)


def test_imports_run_down_the_layers():
    bad = upward_imports()
    assert not bad, "\n".join(bad)


def test_the_checker_sees_an_upward_import(monkeypatch):
    import test_imports

    graph = import_graph()
    graph["earlyprune.core.errors"] = graph["earlyprune.core.errors"] | {"earlyprune.training.trainer"}
    monkeypatch.setattr(test_imports, "import_graph", lambda: graph)
    monkeypatch.setitem(globals(), "import_graph", lambda: graph)
    assert upward_imports() == ["earlyprune.core.errors (core) imports earlyprune.training.trainer (training), "
                                "a layer above it"]


@pytest.mark.parametrize("name", ["EarlyPruner", "prune", "save", "load", "measure", "select", "Plan", "StepTime",
                                  "AutoRoundTo", "ChannelGroups", "CRITERIA", "POLICIES", "EarlyPruneError"])
def test_public_names_stay_where_users_import_them(name):
    import earlyprune

    assert hasattr(earlyprune, name)
