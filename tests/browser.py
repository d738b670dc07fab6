"""Headless Chromium (Debian's ``chromium``) for the tests of web pages.

``chromium(tmp, *args)`` runs one headless browser with a fresh profile under ``tmp``
and ``--virtual-time-budget`` (the page's timers run that many virtual milliseconds;
virtual time waits while a network request is in flight), e.g. with
``--dump-dom URL`` (the DOM after the page's JavaScript ran, on stdout) or
``--screenshot=PATH URL``.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)",
)


def chromium_command(tmp: pathlib.Path, *args: str, budget_ms: int = 10000) -> list[str]:
    """The command line (for a test that runs it itself, e.g. with trio.run_process)."""
    assert CHROMIUM is not None
    return [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'profile'}",
        f"--virtual-time-budget={budget_ms}", *args,
    ]


def chromium(tmp: pathlib.Path, *args: str,
             budget_ms: int = 10000) -> subprocess.CompletedProcess[str]:
    cmd = chromium_command(tmp, *args, budget_ms=budget_ms)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
