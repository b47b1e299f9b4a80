"""MkDocs hook: write the service's OpenAPI schema next to the pages before each build, so the
API reference page (rendered by neoteroi.mkdocsoad) is always the running code's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def on_pre_build(config: Any) -> None:
    from app.main import create_app

    schema = create_app().openapi()
    out = Path(config["docs_dir"]) / "openapi.json"
    text = json.dumps(schema, indent=1, sort_keys=True) + "\n"
    if not out.exists() or out.read_text() != text:  # rewriting it would loop `mkdocs serve`
        out.write_text(text)
