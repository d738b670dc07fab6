"""The README's sharded service ("## A sharded service"): extracted from README.md
and run as it is, in its own process, so the two cannot drift apart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## A sharded service\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds exactly one python block"
    return blocks[0]


def test_the_example_is_under_50_lines_and_uses_the_api() -> None:
    code = example()
    assert len(code.splitlines()) < 50
    for name in ("def handle", "def release", "def acquire", "Cluster(", "open_client("):
        assert name in code


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example(), encoding="utf-8")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    # both nodes serve half the shards, after every counter moved with its shard
    assert p.stdout.strip().splitlines()[-1] == "a serves 32 shards, b serves 32"
