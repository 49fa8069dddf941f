"""The README's quickstart runs as written."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_readme_quickstart_runs(capsys) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python quickstart"
    assert len(blocks[0].splitlines()) <= 15
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "PASS" in capsys.readouterr().out
