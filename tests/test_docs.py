"""The prose renders: every Markdown file of the README, docs/, examples/ and benchmarks/ closes its code fences,
and every relative link (with its #anchor, for Markdown targets) points at something that exists — the README
once held an Architecture block cut mid-sentence with the quick start pasted into it (issue 22)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/*.md"),
                *ROOT.glob("benchmarks/*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (links in code are code)."""
    return "".join(part for i, part in enumerate(re.split(r"^```.*$", text, flags=re.M)) if i % 2 == 0)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in _prose(page.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fences_are_closed(page):
    fences = [n for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1) if line.startswith("```")]
    assert len(fences) % 2 == 0, f"{page.name}: a code fence opened at line {fences[-1]} is never closed"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_what_exists(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target) or target.startswith("mailto:"):
            continue   # a web address
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_checker_sees_a_broken_link_and_an_open_fence(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n[a](missing.md) [b](#title) [c](#nope)\n```\ncode\n")
    with pytest.raises(AssertionError, match=r"missing.md \(no such file\); #nope \(no heading #nope in p.md\)"):
        _check(page)
    with pytest.raises(AssertionError, match="never closed"):
        test_code_fences_are_closed(page)


def _check(page):
    """The link test on a page outside the repository (ROOT only names pages in its messages)."""
    global ROOT
    saved, ROOT = ROOT, page.parent
    try:
        test_relative_links_point_at_what_exists(page)
    finally:
        ROOT = saved
