"""Fill the page template with a run's data (one self-contained HTML file)."""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any


def template() -> str:
    return resources.files("clusterfunk.view").joinpath("template.html").read_text("utf-8")


def render(data: dict[str, Any]) -> str:
    """The page for ``data`` (:func:`clusterfunk.view.model.build`)."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    # Inside <script type="application/json">, only "</" could end the element early.
    blob = blob.replace("</", "<\\/")
    page = template()
    head, _, tail = page.partition("__DATA__")
    return head.replace("__TITLE__", html.escape(data["meta"]["title"])) + blob + tail
