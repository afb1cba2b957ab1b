"""The bad-input catalogue (tests/bad_inputs.py): every case fails with its error type (or exit status 2 on the
command line) and a message that names the offending value; docs/errors.md is the catalogue rendered, current."""

import pytest

import bad_inputs
from bad_inputs import CASES, EXIT_2, KINDS

_RESULTS: dict[int, tuple[str, str]] = {}


def test_the_catalogue_covers_every_kind_with_at_least_60_cases():
    counts = {k: sum(c.kind == k for c in CASES) for k in KINDS}
    assert len(CASES) >= 60 and all(n >= 5 for n in counts.values()), counts


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c.kind}: {c.given}"[:90] for c in CASES])
def test_bad_input_gets_its_error_naming_the_value(index, tmp_path):
    c = CASES[index]
    raised, message, cls = bad_inputs.outcome(c, tmp_path)
    _RESULTS[index] = (raised, message)
    if c.error == EXIT_2:
        assert raised == EXIT_2, f"{c.given}: {raised}: {message}"
        assert message.startswith("earlyprune ") and ": error: " in message
    else:
        assert cls is not None and issubclass(cls, c.error), f"{c.given}: {raised}: {message}"
    assert c.names in message, f"{c.given}: the message does not name {c.names!r}: {message}"
    assert "Traceback" not in message and "\n" not in message


def test_docs_errors_md_is_the_catalogue_rendered(tmp_path):
    results = []
    for i, c in enumerate(CASES):
        if i not in _RESULTS:  # run alone: compute what the parametrized test would have
            scratch = tmp_path / f"case{i:03d}"
            scratch.mkdir()
            _RESULTS[i] = bad_inputs.outcome(c, scratch)[:2]
        results.append((c, *_RESULTS[i]))
    assert bad_inputs.DOC.read_text(encoding="utf-8") == bad_inputs.render(results) + "\n", \
        "docs/errors.md is out of date: run `python tests/bad_inputs.py`"
