"""The Markdown's Python runs as written: every ```python block of README.md and docs/*.md,
each file's blocks in order in one namespace (later blocks use earlier ones' names), in a
temporary folder, offline. A block fenced ```python no-run is only compiled (it needs a
language model or data the tests do not have); any other info string on a python fence is
an error, so a typo cannot quietly turn a block off."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line, info, code) of each fenced block whose info string starts with 'python'."""
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).strip()
        if info.split(" ")[0] == "python":
            out.append((text.count("\n", 0, m.start()) + 1, info, m.group(2)))
    return out


def test_the_fence_parser_finds_run_and_no_run_blocks():
    text = "x\n```\nzspace train\n```\n```python\na = 1\n```\n\n```python no-run\nlm()\n```\n"
    assert python_blocks(text) == [(5, "python", "a = 1\n"), (9, "python no-run", "lm()\n")]


def test_the_readme_has_runnable_python():
    assert any(info == "python" for _, info, _ in python_blocks((ROOT / "README.md").read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_markdown_python_runs_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # runs/... and report.html land here
    namespace = {"__name__": f"doc:{page.name}"}
    for line, info, code in python_blocks(page.read_text(encoding="utf-8")):
        where = f"{page.name}:{line}"
        compiled = compile(code, where, "exec")
        assert info in ("python", "python no-run"), f"{where}: unknown fence '{info}' (python or python no-run)"
        if info == "python":
            exec(compiled, namespace)
