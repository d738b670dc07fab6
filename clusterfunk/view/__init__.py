"""Trace viewer: ``clusterfunk view TRACE -o run.html`` (see ``docs/audit.md``).

Turns a trace (``docs/trace.md``) into one self-contained HTML page: inline
CSS, JavaScript and data, no network fetches. :mod:`.model` reduces the records
to what the page draws (and runs the audit for its violations); :mod:`.render`
fills the page template (``template.html``, package data).
"""

from __future__ import annotations

from clusterfunk.view.model import build
from clusterfunk.view.render import render

__all__ = ["build", "render"]
