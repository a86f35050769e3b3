"""Every reference to a section of the project's docs points at a section that exists.

A reference is ``docs/NAME.md §N`` (or ``NAME.md §N``, a Markdown link
``[NAME.md](NAME.md) §N``, and lists such as ``§2, §4 and §4.2``), anywhere in the
source, tests, examples, scripts and docs; inside ``docs/*.md`` a bare ``§N`` refers to
the same page. A section exists when the page has a heading numbered ``N``
(``## 5. Title`` or ``### 5.1 Title``). ``DR-N`` must be a decision record of
``docs/architecture.md``. References to the background notes that are not in the
repository (a physics, device-models or estimators "doc" with a section number, a bare
"doc 8.7", the notes' old path) are dangling and fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg"}
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".mypy_cache",
             ".ruff_cache", ".pytest_cache", "node_modules"}

NUM = r"\d+(?:\.\d+)*"
SECTION_CHAIN = rf"§\s?{NUM}(?:\s*(?:,|/|\band\b|\bor\b)\s*§\s?{NUM})*"
FILE_REF = re.compile(
    rf"(?P<path>(?:docs/)?[\w-]+\.md)[`\])]*(?:\([\w./-]*\))?[ \t]*(?:\n[ \t]*#?[ \t]*)?"
    rf"(?P<chain>{SECTION_CHAIN})"
)
SECTION = re.compile(rf"§\s?({NUM})")
HEADING = re.compile(rf"^#{{1,6}}\s+({NUM})\.?\s", re.MULTILINE)
RECORD = re.compile(r"^\*\*DR-(\d+):", re.MULTILINE)
DR_REF = re.compile(r"\bDR-(\d+)\b")
DANGLING = re.compile(
    r"\b(?:physics|device-models|devices|estimators|uncertainty|lab-control(?:-patterns)?"
    rf"|datasets)[ -]doc(?:'s)?(?:\s+(?:sections?\s+)?{NUM})?"
    r"|\bdoc(?:'s)?\s+(?:sections?\s+)?\d"
    r"|shared/docs/",
    re.IGNORECASE,
)
"""Old-style references to the background notes (one match per reference)."""


def source_files(root: Path) -> list[Path]:
    """Text files below ``root`` that may hold references (this test excluded)."""
    out = []
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if any(d in SKIP_DIRS or d.endswith(".egg-info") for d in parts[:-1]):
            continue
        if p.is_file() and p.suffix in SUFFIXES and p.resolve() != Path(__file__).resolve():
            out.append(p)
    return out


def sections(page: Path) -> set[str]:
    """Numbers of the numbered headings of a Markdown page."""
    return set(HEADING.findall(page.read_text(encoding="utf-8")))


def problems(root: Path) -> list[str]:
    """Every reference below ``root`` that points nowhere, as ``file:line: message``."""
    docs = root / "docs"
    cache: dict[Path, set[str]] = {}

    def has(page: Path, num: str) -> bool:
        if page not in cache:
            cache[page] = sections(page) if page.is_file() else set()
        return num in cache[page]

    arch = docs / "architecture.md"
    records = set(RECORD.findall(arch.read_text(encoding="utf-8"))) if arch.is_file() else set()
    out: list[str] = []
    for f in source_files(root):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        rel = f.relative_to(root)

        def where(pos: int, rel: Path = rel, text: str = text) -> str:
            return f"{rel}:{text.count(chr(10), 0, pos) + 1}"

        covered: list[tuple[int, int]] = []
        for m in FILE_REF.finditer(text):
            name = m.group("path")
            page = root / name if name.startswith("docs/") else docs / name
            if not page.is_file() and (f.parent / name).is_file():
                page = f.parent / name
            covered.append(m.span("chain"))
            if not page.is_file():
                out.append(f"{where(m.start())}: {name} does not exist")
                continue
            for num in SECTION.findall(m.group("chain")):
                if not has(page, num):
                    out.append(f"{where(m.start())}: {name} has no section {num}")
        if f.suffix == ".md" and f.parent == docs:
            for m in SECTION.finditer(text):
                if any(a <= m.start() < b for a, b in covered):
                    continue
                if not has(f, m.group(1)):
                    out.append(f"{where(m.start())}: this page has no section {m.group(1)}")
        for m in DR_REF.finditer(text):
            if m.group(1) not in records:
                out.append(f"{where(m.start())}: DR-{m.group(1)} is not a decision record")
        for m in DANGLING.finditer(text):
            out.append(f"{where(m.start())}: {m.group(0)!r} points outside the repository")
    return out


def test_every_docs_reference_in_the_tree_resolves() -> None:
    found = problems(ROOT)
    assert not found, "dangling references:\n" + "\n".join(found)


def test_the_three_science_pages_exist_with_numbered_sections() -> None:
    for name, needed in (("physics", {"2.2", "3.3", "5.1", "5.2", "6.4", "7.1"}),
                         ("devices", {"1.2", "2.1", "4", "5.2", "6"}),
                         ("estimators", {"2.1", "3.2", "4.2", "5", "6", "7"})):
        assert needed <= sections(ROOT / "docs" / f"{name}.md"), name


def _tree(tmp_path: Path, code: str) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text("**DR-1: A record.**\n", encoding="utf-8")
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## 1. One\n\n### 1.2 Sub\n\nSee §1.2 and [page.md](page.md) §1.\n",
        encoding="utf-8",
    )
    (tmp_path / "m.py").write_text(code, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ('"""See docs/page.md §1.2 and DR-1."""\n', None),
        ("# docs/page.md §1, §1.2 and §1.2\n", None),
        ('"""Wrapped (docs/page.md\n§1.2): fine."""\n', None),
        ('"""See docs/page.md §3."""\n', "has no section 3"),
        ('"""See docs/page.md §1 and §2.5."""\n', "has no section 2.5"),
        ('"""See docs/other.md §1."""\n', "docs/other.md does not exist"),
        ('"""Per DR-7."""\n', "DR-7 is not a decision record"),
        # split so that the rewriting script leaves the examples alone
        ('"""As the physics ' 'doc 5.1 says."""\n', "points outside the repository"),
        ('"""Estimators ' 'doc section 8.7."""\n', "points outside the repository"),
        ('"""Clamped probes (doc 8.7)."""\n', "points outside the repository"),
        ('"""See ../shared/docs/notes.md."""\n', "points outside the repository"),
    ],
)
def test_the_checker_finds_what_it_should(tmp_path: Path, code: str, message: str | None) -> None:
    found = problems(_tree(tmp_path, code))
    if message is None:
        assert found == []
    else:
        assert len(found) == 1 and message in found[0] and found[0].startswith("m.py:1"), found


def test_a_bare_section_inside_a_page_must_exist_in_that_page(tmp_path: Path) -> None:
    root = _tree(tmp_path, "x = 1\n")
    (root / "docs" / "page.md").write_text("## 1. One\n\nSee §4.\n", encoding="utf-8")
    assert problems(root) == ["docs/page.md:3: this page has no section 4"]
