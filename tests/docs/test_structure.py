"""The site keeps up with the package: an API page per module, every notebook in the navigation.

Adding a module means adding `docs/api/<module>.md` (the single line `::: flowlearn.<module>`)
and one nav line in `mkdocs.yml`; adding a notebook means one nav line. These tests fail with
the exact line to add when either is forgotten. Run by `.ci/docs.sh` (see conftest.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "flowlearn"
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"


def _nav_paths(node: object) -> Iterator[str]:
    """Every page path in a mkdocs nav tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_paths(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_paths(value)


def _nav() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return list(_nav_paths(config["nav"]))


def _public_modules() -> list[str]:
    """Dotted names of the package's modules, without private ones and `__main__`."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts == ["flowlearn"] or any(p.startswith("_") for p in parts):
            continue
        names.append(".".join(parts))
    return names


def _api_page(module: str) -> str:
    """`flowlearn.irn.model` -> `api/irn/model.md`; a package gets `index.md`."""
    parts = module.split(".")[1:]
    if (PACKAGE.joinpath(*parts) / "__init__.py").is_file():
        return "/".join(["api", *parts, "index.md"])
    return "/".join(["api", *parts]) + ".md"


@pytest.mark.parametrize("module", _public_modules())
def test_docs_every_module_has_an_api_page(module: str) -> None:
    page = _api_page(module)
    path = DOCS / page
    assert path.is_file(), f"create {path.relative_to(ROOT)} holding the line `::: {module}`"
    assert f"::: {module}" in path.read_text(), f"{page} must document `::: {module}`"
    assert page in _nav(), f"add to mkdocs.yml under 'API reference': - {module}: {page}"


def test_docs_nav_pages_exist() -> None:
    missing = [p for p in _nav() if not (DOCS / p).exists()]
    assert not missing, f"mkdocs.yml nav lists missing pages: {missing}"


def test_docs_every_notebook_in_nav() -> None:
    nav = _nav()
    notebooks = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    absent = [f"notebooks/{n}" for n in notebooks if f"notebooks/{n}" not in nav]
    assert not absent, "add to mkdocs.yml under 'Tutorials': " + ", ".join(f"- {a}" for a in absent)
    listed = [p for p in nav if p.startswith("notebooks/")]
    assert listed == sorted(listed), "notebooks must be listed in their numbered order"


@pytest.mark.parametrize("notebook", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_docs_notebook_has_no_error_output(notebook: str) -> None:
    # The site renders the stored outputs; a stored traceback would be published as content.
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    errors = [
        i
        for i, cell in enumerate(cells)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{notebook}: cells {errors} hold error outputs"


def test_docs_quickstart_matches_readme() -> None:
    def first_python_block(text: str) -> str:
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        assert blocks, "no python block"
        return blocks[0]

    readme = first_python_block((ROOT / "README.md").read_text())
    home = first_python_block((DOCS / "index.md").read_text())
    assert home == readme, "docs/index.md quickstart differs from README.md: copy it over"


def test_docs_docstrings_hold_no_escaped_control_characters() -> None:
    # A TeX command in a docstring that is not raw turns into a control character: "\text" into
    # a tab and "ext", "\bigl" into a backspace and "igl"; MathJax then fails on the page.
    import ast

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                bad = sorted({repr(c) for c in doc or "" if c in "\t\a\b\f\v"})
                if bad:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(bad)}")
    assert not found, "docstrings with control characters (make them r-strings):\n" + "\n".join(
        found
    )
