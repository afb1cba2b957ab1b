"""The examples in the docstrings of registered criteria and policies run as written (doctest)."""

import doctest

import pytest

from earlyprune.criteria import CRITERIA
from earlyprune.criteria.modifiers import ComputeAware
from earlyprune.policies import POLICIES

CLASSES = sorted({POLICIES.get(n) for n in POLICIES.names()} | {CRITERIA.get(n) for n in CRITERIA.names()}
                 | {ComputeAware}, key=lambda c: c.__qualname__)
WITH_EXAMPLES = [c for c in CLASSES if ">>>" in (c.__doc__ or "")]


def test_the_signal_policies_and_3sp_have_examples():
    names = {c.__name__ for c in WITH_EXAMPLES}
    assert {"EPI", "EarlyCroP", "ComputeAware"} <= names


@pytest.mark.parametrize("cls", WITH_EXAMPLES, ids=lambda c: c.__name__)
def test_docstring_example_runs(cls):
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(cls, cls.__name__, globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0
