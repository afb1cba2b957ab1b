"""No code path in src/ deserialises by executing: no pickle.load / loads / Unpickler, torch.load, eval, exec,
yaml.load (or unsafe_load / full_load), marshal.loads, numpy.load(allow_pickle=True) — except the audited CIFAR
unpickler (training/data/cifar.py), which admits only the classes CIFAR's own files contain."""

from __future__ import annotations

import ast
from pathlib import Path

import earlyprune

SRC = Path(earlyprune.__file__).parent
UNSAFE = {"pickle.load", "pickle.loads", "pickle.Unpickler", "torch.load", "eval", "exec", "yaml.load",
          "yaml.unsafe_load", "yaml.full_load", "yaml.Loader", "yaml.UnsafeLoader", "marshal.loads", "marshal.load",
          "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "torch.jit.load", "compile"}
#: file → the unsafe names it may use, and why
AUDITED = {"training/data/cifar.py": {"pickle.Unpickler"}}  # _DataUnpickler.find_class admits numpy arrays only


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def unsafe_uses(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every unsafe call, base class or reference in ``source``."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    aliases = {k: {"np": "numpy"}.get(v, v) for k, v in aliases.items()}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func, aliases)
            if name in UNSAFE:
                found.append((node.lineno, name))
            if name == "numpy.load" and any(k.arg == "allow_pickle" and not (
                    isinstance(k.value, ast.Constant) and k.value.value is False) for k in node.keywords):
                found.append((node.lineno, "numpy.load(allow_pickle=True)"))
        elif isinstance(node, ast.ClassDef):
            found += [(node.lineno, n) for n in (_dotted(b, aliases) for b in node.bases) if n in UNSAFE]
    return found


def test_no_unsafe_deserialisation_in_src():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, name in unsafe_uses(path.read_text(encoding="utf-8")):
            if name not in AUDITED.get(rel, set()):
                offenders.append(f"{rel}:{line}: {name}")
    assert not offenders, "unsafe deserialisation outside the audited CIFAR unpickler:\n" + "\n".join(offenders)


def test_the_audited_unpickler_is_where_it_is_said_to_be():
    assert ("pickle.Unpickler" in {n for _, n in unsafe_uses((SRC / "training/data/cifar.py").read_text())})


def test_the_scan_finds_each_form():
    source = ("import pickle, torch, yaml\nimport numpy as np\nfrom pickle import loads as L\n"
              "pickle.load(f)\nL(b)\ntorch.load('m.pt')\neval('1')\nexec('x=1')\nyaml.load(s, Loader=yaml.Loader)\n"
              "np.load('a.npy', allow_pickle=True)\nnp.load('a.npy')\nclass U(pickle.Unpickler): pass\n")
    names = [n for _, n in unsafe_uses(source)]
    assert names.count("pickle.load") == 1 and "pickle.loads" in names and "torch.load" in names
    assert {"eval", "exec", "yaml.load", "numpy.load(allow_pickle=True)", "pickle.Unpickler"} <= set(names)
    assert len([n for n in names if n.startswith("numpy")]) == 1
