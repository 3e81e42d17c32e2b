"""The documentation site builds cleanly and every code example in it runs.

* ``mkdocs build --strict``: any warning (a broken link, a page missing from the nav, a docstring
  mkdocstrings cannot render) fails.
* Every fenced ``python`` block of every ``docs/*.md`` page runs: a page's blocks run in order in
  one fresh namespace, in their own process (forked from a process that already imported torch,
  see ``tests/script_zygote.py``), in a temporary working directory, with a timeout. Tracebacks
  point at the page and line. A block may opt out with a ``<!-- skip -->`` line right before it, and
  only if it needs CUDA or Ray (the block must mention one of them).
* The API page is generated from docstrings, so its code is the docstrings' ``>>>`` examples: they
  run as doctests, one test per ``:::`` entry of ``docs/api.md``.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tests"))
from script_zygote import ScriptResult, ScriptRunner  # noqa: E402 - tests/ is not a package

PAGE_TIMEOUT_S = 240
SKIP_MARK = "<!-- skip -->"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the first code line in the page
    code: str
    skipped: bool


def extract_blocks(path: Path) -> list[Block]:
    """The fenced code blocks whose info string starts with ``python`` (``py`` / ``python3`` too)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip().split()
        lang = info[0].lstrip(".{").lower() if info else ""
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang in ("python", "py", "python3"):
            prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            indent = len(m["indent"])
            code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[start:j])
            blocks.append(Block(path.name, start + 1, code, prev == SKIP_MARK))
        i = j + 1
    return blocks


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _driver(page: Path, blocks: list[Block]) -> str:
    """A script that runs the page's blocks in order in one namespace (a fresh ``__main__``).

    Each block is compiled with the page as its file name and padded so line numbers match the page.
    """
    payload = [(b.line, b.code) for b in blocks if not b.skipped]
    return f"""\
import sys, types
blocks = {json.dumps(payload)}
main = types.ModuleType("__main__")
main.__file__ = {str(page)!r}
sys.modules["__main__"] = main  # so classes and functions defined in blocks pickle by reference
for line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, {str(page)!r}, "exec"), main.__dict__)
print("all", len(blocks), "blocks ran")
"""


# ------------------------------------------------------------------------------ the site


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (it is in the test extra)")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**_env(), "NO_MKDOCS_2_WARNING": "1"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log[-8000:]}"
    for page in ("index", "quickstart", "migration", "api", "performance", "reliability", "scale-out"):
        assert (tmp_path / "site" / ("index.html" if page == "index" else f"{page}/index.html")).is_file(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    # The reference is really generated: signatures and docstring examples are on the page.
    for name in ("iter_torch_batches", "map_batches", "read_images", "RayStyleLoader", "ActorPoolStrategy"):
        assert 'id="torchray_loader.' in api and name in api, name


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_nav_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    for page in _pages():
        assert f": {page.name}" in config, f"{page.name} is not in the mkdocs.yml nav"


# ------------------------------------------------------------------------------ code blocks


def test_block_extraction(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "# t\n\n```python\na = 1\n```\n\ntext\n\n<!-- skip -->\n```python\nimport ray\n```\n\n"
        "```bash\nls\n```\n\n!!! note\n    ```python\n    b = a\n    ```\n"
    )
    blocks = extract_blocks(page)
    assert [(b.line, b.code, b.skipped) for b in blocks] == [
        (4, "a = 1", False), (11, "import ray", True), (20, "b = a", False),
    ]


@pytest.fixture(scope="module")
def page_results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[ScriptResult]]]:
    """Starts every page at once (two run at a time); each test waits for its own page."""
    runner = ScriptRunner(parallel=2)
    base = tmp_path_factory.mktemp("docs")
    futures = {}
    for page in _pages():
        blocks = extract_blocks(page)
        if not any(not b.skipped for b in blocks):
            continue
        script = base / f"{page.stem}_blocks.py"
        script.write_text(_driver(page, blocks))
        futures[page.name] = runner.submit(script, base / page.stem, timeout=PAGE_TIMEOUT_S)
    yield futures
    runner.close()


@pytest.mark.parametrize("page", [p.name for p in _pages()])
def test_page_code_blocks_run(page: str, page_results: dict[str, Future[ScriptResult]]) -> None:
    blocks = extract_blocks(DOCS / page)
    for b in blocks:
        if b.skipped:
            assert re.search(r"cuda|\bray\b", b.code, re.IGNORECASE), (
                f"{page}:{b.line}: <!-- skip --> is only for blocks that need CUDA or Ray"
            )
    if page not in page_results:
        pytest.skip(f"{page} has no runnable python blocks")
    result = page_results[page].result()
    assert result.returncode == 0, (
        f"a code block of docs/{page} failed (the traceback names the page line):\n"
        f"{result.stderr[-6000:]}\n--- stdout ---\n{result.stdout[-2000:]}"
    )
    assert "blocks ran" in result.stdout


def test_docs_pages_have_code() -> None:
    # The pages this suite owns teach by example: each has runnable blocks.
    for page in ("index.md", "quickstart.md", "migration.md"):
        assert any(not b.skipped for b in extract_blocks(DOCS / page)), page


# ------------------------------------------------------------------------------ API page doctests


def _api_identifiers() -> list[str]:
    text = (DOCS / "api.md").read_text()
    return re.findall(r"^::: *([\w.]+)", text, re.MULTILINE)


def _resolve(identifier: str) -> tuple[Any, ModuleType]:
    parts = identifier.split(".")
    for i in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        obj: Any = module
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj, inspect.getmodule(obj) or module
    raise ImportError(identifier)


def test_api_page_lists_public_names() -> None:
    import torchray_loader as rd

    listed = set(_api_identifiers())
    short = {i.rsplit(".", 1)[-1] for i in listed}
    undocumented = [n for n in rd.__all__ if n not in short and not n.endswith("Error") and n != "ErrorBudgetExceeded"]
    # Errors are documented as a module (torchray_loader.errors); FileShuffleConfig/Partitioning with the readers.
    undocumented = [n for n in undocumented if n not in ("FileShuffleConfig", "Partitioning")]
    assert not undocumented, f"public names missing from docs/api.md: {undocumented}"


@pytest.mark.parametrize("identifier", _api_identifiers())
def test_api_docstring_examples(identifier: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        obj, module = _resolve(identifier)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"docs/api.md names {identifier}, which does not resolve: {exc}")
    monkeypatch.chdir(tmp_path)  # examples that write relative paths write here
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(obj, identifier, module=module) if t.examples]
    if not tests:
        pytest.skip(f"{identifier} has no docstring examples")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    for test in tests:
        out: list[str] = []
        result = runner.run(test, out=out.append)
        if result.failed:
            failures.append("".join(out))
    assert not failures, "\n".join(failures)[-8000:]


def test_mkdocs_available_for_ci() -> None:
    # CI installs the test extra; it must carry what the site build needs.
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in extras["test"]}
    for requirement in ("mkdocs", "mkdocs-material", "mkdocstrings-python"):
        assert requirement in names, requirement
