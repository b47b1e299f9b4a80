"""MkDocs hook: before each build, write the pages that are made from other files, so the site
never drifts from them: the home page from README.md (its links made relative to docs/), and the
service's OpenAPI schema, which the API reference page renders (neoteroi.mkdocsoad), and the
training config's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_if_changed(path: Path, text: str) -> None:
    # Rewriting an unchanged file would make `mkdocs serve` rebuild forever.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def training_config_table() -> str:
    """The training config's fields, defaults and descriptions, from the pydantic model the API
    validates with: the table in the docs is the code's."""
    from app.training.config import TrainingConfig

    defaults = TrainingConfig().model_dump(mode="json")
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for name, field in TrainingConfig.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | `{json.dumps(defaults[name])}` | {meaning} |")
    return "\n".join(rows) + "\n"


def settings_table() -> str:
    """Every environment variable the service reads, with its default, from `Settings`."""
    from app.config import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        env = field.validation_alias if isinstance(field.validation_alias, str) else None
        env = env or f"{prefix}{name}".upper()
        if field.default_factory is not None:
            default = "per-user data dir" if name == "data_dir" else "computed"
        else:
            default = "unset" if field.default is None else json.dumps(field.default, default=str)
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{env}` | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"


def on_pre_build(config: Any) -> None:
    from app.config import Settings
    from app.main import create_app

    docs = Path(config["docs_dir"])
    readme = (docs.parent / "README.md").read_text()
    write_if_changed(docs / "index.md", readme.replace("](docs/", "]("))
    # The schema needs no database: the app is built, never started.
    schema = create_app(Settings(database_url="postgresql://docs-build/unused")).openapi()
    (docs / "generated").mkdir(exist_ok=True)
    write_if_changed(docs / "generated" / "training-config.md", training_config_table())
    write_if_changed(docs / "generated" / "settings.md", settings_table())
    write_if_changed(docs / "openapi.json", json.dumps(schema, indent=1, sort_keys=True) + "\n")
