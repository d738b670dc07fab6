"""Run ``clusterfunk view`` in this process."""

from __future__ import annotations

import contextlib
import io

from clusterfunk.cli import main as cli_main


def view_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = cli_main(["view", *args])
    return rc, out.getvalue()
