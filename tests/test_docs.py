"""The README and the docs/ pages: every relative link and #anchor resolves, and the README stays
a front page (issue 25: at most 300 lines)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md')) + \
    [ROOT / 'benchmarks' / 'README.md', ROOT / 'benchmarks' / 'PROTOCOL.md']
LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'```.*?```', flags=re.S)


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(page: Path) -> set[str]:
    out, seen = set(), {}
    for line in FENCE.sub('', page.read_text()).splitlines():
        m = re.match(r'#{1,6}\s+(.*)', line)
        if m:
            s = github_slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f'{s}-{n}')
    return out


def broken_links(page: Path) -> list[str]:
    bad = []
    for target in LINK.findall(FENCE.sub('', page.read_text())):
        if re.match(r'[a-z]+:', target):
            continue  # https://, mailto:
        path, _, fragment = target.partition('#')
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f'{target} (no such file)')
        elif fragment and dest.suffix == '.md' and fragment not in anchors(dest):
            bad.append(f'{target} (no heading with that anchor)')
    return bad


def test_github_slug():
    assert github_slug('Safety and failure behaviour') == 'safety-and-failure-behaviour'
    assert github_slug('5. Selection, then the test split once') == \
        '5-selection-then-the-test-split-once'
    assert github_slug('`make train` (≤ 15 min)') == 'make-train--15-min'


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / 'p.md'
    page.write_text('# Top\n[ok](#top) [gone](missing.md) [bad](#nowhere)\n'
                    '```\n[in code](ignored.md)\n```\n')
    assert broken_links(page) == ['missing.md (no such file)',
                                  '#nowhere (no heading with that anchor)']


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    assert broken_links(page) == []


def test_readme_is_a_front_page():
    assert len((ROOT / 'README.md').read_text().splitlines()) <= 300
