"""File imports: every tool's export format into votes, for `softlabels import` and
`POST /v1/projects/{p}/imports/{format}`. Stored with source "import".

- `label-studio`: Label Studio JSON or JSON_MIN export (label_studio.parse_export).
- `argilla`: Argilla's exported records (argilla.parse_records).
- `prodigy`: Prodigy JSONL (`prodigy db-out`): worker `_annotator_id` (else `_session_id`),
  item `_input_hash` or a chosen field; choice tasks give `accept: [label]`, binary tasks
  `label` with `answer == "accept"`; `ignore` (and a rejected binary label) is not a vote. On a
  multi-label project a choice task's `accept` is the set ticked (`choice_style: multiple`),
  an accepted empty one a vote that ticked nothing.
- `crowdkit`: crowd-kit's long CSV `task, worker, label` (header required; `item` accepted for
  `task`). The label cell is read by the project's task type (app/connectors/cells.py): on a
  multi-label project a JSON list or names joined by `;`, on an ordinal one a level's name,
  index or value.
- `peerannot`: peerannot's `answers.json`, `{task: {worker: label}}` (labels are class indices,
  as peerannot writes them, or class names; on a multi-label project a list of them).

The parsers read the project's task type, classes and scale from `Options`: what a label is
depends on them, and a file says nothing about it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any, Literal

from app.connectors import argilla, label_studio
from app.connectors.cells import CellError, label_cell
from app.connectors.common import Parsed, ToolVote, external_id, problem
from app.db.models import Project
from app.votes.records import index_text

FileFormat = Literal["label-studio", "argilla", "prodigy", "crowdkit", "peerannot"]
FORMATS: tuple[str, ...] = ("label-studio", "argilla", "prodigy", "crowdkit", "peerannot")


@dataclass(frozen=True)
class Options:
    from_name: str | None = None  # label-studio: the <Choices> control
    item_field: str | None = None  # label-studio: task data field; prodigy: id field
    question: str | None = None  # argilla: the label question
    # label-studio: task data field of the item's content; argilla: record field
    content_field: str | None = None
    # The project's: what a label is (crowdkit cells, prodigy choices, peerannot lists)
    task_type: str = "single"
    classes: tuple[str, ...] = ()
    level_values: tuple[float, ...] | None = None

    def for_project(self, project: Project) -> Options:
        """These options with the project's task type, classes and scale."""
        values = project.level_values
        return dataclasses.replace(
            self,
            task_type=project.task_type,
            classes=tuple(project.classes),
            level_values=None if values is None else tuple(values),
        )


def _json(data: bytes) -> tuple[Any, list[dict[str, Any]]]:
    try:
        return json.loads(data), []
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [problem("$", f"not valid JSON: {exc}")]


def parse_prodigy(data: bytes, id_field: str | None, task_type: str = "single") -> Parsed:
    out = Parsed()
    multi = task_type == "multi_label"
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        path = f"line {n}"
        try:
            row = json.loads(line)
        except ValueError:
            out.errors.append(problem(path, "not valid JSON"))
            continue
        if not isinstance(row, dict):
            out.errors.append(problem(path, "must be a JSON object"))
            continue
        out.rows += 1
        answer = row.get("answer")
        if answer == "ignore":
            out.skipped += 1
            continue
        key = id_field or "_input_hash"
        item = external_id(row.get(key), f"{path}.{key}", out.errors)
        who = row.get("_annotator_id", row.get("_session_id"))
        worker = external_id(who, f"{path}._annotator_id", out.errors)
        if isinstance(row.get("accept"), list) and "options" in row:  # choice task
            chosen = row["accept"]
            if multi and answer == "accept":  # the set ticked, maybe empty: none apply
                if any(isinstance(c, bool) or not isinstance(c, (str, int)) for c in chosen):
                    out.errors.append(problem(f"{path}.accept", "must list option ids"))
                    continue
                out.votes.append(ToolVote(item, worker, list(chosen), f"{path}.accept"))
                continue
            if answer != "accept" or not chosen:
                out.skipped += 1
                continue
            if len(chosen) != 1:
                out.errors.append(problem(f"{path}.accept", "a vote is one class (single choice)"))
                continue
            label, lpath = chosen[0], f"{path}.accept[0]"
        elif "label" in row:  # binary: the label was accepted or not
            if answer != "accept":
                out.skipped += 1
                continue
            label, lpath = row["label"], f"{path}.label"
        else:
            out.errors.append(problem(path, "neither `accept` (choice) nor `label` (binary)"))
            continue
        if not isinstance(label, (str, int)) or isinstance(label, bool):
            out.errors.append(problem(lpath, "must be a label"))
            continue
        out.votes.append(ToolVote(item=item, worker=worker, label=label, path=lpath))
    return out


def parse_crowdkit(data: bytes, opts: Options | None = None) -> Parsed:
    opts = opts or Options()
    out = Parsed()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.errors.append(problem("$", "not UTF-8"))
        return out
    reader = csv.DictReader(io.StringIO(text))
    fields = set(reader.fieldnames or ())
    task_col = "task" if "task" in fields else "item"
    missing = {task_col, "worker", "label"} - fields
    if missing:
        out.errors.append(problem("header", f"missing column(s) {sorted(missing)}"))
        return out
    for n, row in enumerate(reader, start=2):
        out.rows += 1
        path = f"line {n}"
        item = external_id(row[task_col], f"{path}.{task_col}", out.errors)
        worker = external_id(row["worker"], f"{path}.worker", out.errors)
        cell = row["label"]
        if cell is None:  # a short row
            out.errors.append(problem(f"{path}.label", "missing"))
            continue
        try:
            label = label_cell(cell, opts.task_type, opts.classes, opts.level_values)
        except CellError as exc:
            out.errors.append(problem(f"{path}.label", str(exc)))
            continue
        out.votes.append(ToolVote(item=item, worker=worker, label=label, path=f"{path}.label"))
    return out


def parse_peerannot(data: bytes) -> Parsed:
    out = Parsed()
    doc, out.errors = _json(data)
    if doc is None:
        return out
    if not isinstance(doc, dict):
        out.errors.append(problem("$", "must be {task: {worker: label}}"))
        return out
    for task, answers in doc.items():
        if not isinstance(answers, dict):
            out.errors.append(problem(f"{task}", "must be {worker: label}"))
            continue
        for worker, label in answers.items():
            out.rows += 1
            path = f"{task}.{worker}"
            if isinstance(label, list):  # a multi-label answer: the classes ticked
                label = [_peerannot_ref(x) for x in label]
                if any(x is None for x in label):
                    out.errors.append(problem(path, "must list class indices or names"))
                    continue
            else:
                label = _peerannot_ref(label)
                if label is None:
                    out.errors.append(problem(path, "must be a class index or name"))
                    continue
            out.votes.append(
                ToolVote(
                    item=external_id(task, path, out.errors),
                    worker=external_id(worker, path, out.errors),
                    label=label,
                    path=path,
                )
            )
    return out


def _peerannot_ref(label: Any) -> str | int | None:
    """A class index (an int, or one written as text, as peerannot writes them) or a name;
    None for anything else."""
    if isinstance(label, str) and index_text(label.removeprefix("-")) is not None:
        return int(label)
    if not isinstance(label, (str, int)) or isinstance(label, bool):
        return None
    return label


def parse_file(fmt: str, data: bytes, opts: Options) -> Parsed:
    if fmt == "prodigy":
        return parse_prodigy(data, opts.item_field, opts.task_type)
    if fmt == "crowdkit":
        return parse_crowdkit(data, opts)
    if fmt == "peerannot":
        return parse_peerannot(data)
    doc, errors = _json(data)
    if errors:
        out = Parsed()
        out.errors = errors
        return out
    if fmt == "label-studio":
        if not opts.from_name:
            return _needs("from_name", "the name of the <Choices> control")
        return label_studio.parse_export(
            doc, label_studio.Mapping(opts.from_name, opts.item_field, opts.content_field)
        )
    if fmt == "argilla":
        if not opts.question:
            return _needs("question", "the name of the label question")
        return argilla.parse_records(
            doc, opts.question, opts.item_field or "external_id", opts.content_field
        )
    return _needs("format", f"one of {FORMATS}")


def _needs(option: str, what: str) -> Parsed:
    out = Parsed()
    out.errors.append(problem(option, f"required: {what}"))
    return out
