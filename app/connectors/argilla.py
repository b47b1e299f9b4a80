"""Argilla (v2): webhook events and exported records.

Webhook bodies are Standard Webhooks envelopes `{type, version, timestamp, data}` signed with
the webhook's secret (checked in app/api/connectors.py with app/webhooks/signing.py). For
`response.created` / `response.updated` / `response.deleted`, `data` is the response: `id`,
`status` (only "submitted" counts; "discarded" or "draft" removes a stored vote), `values`
(`{<question>: {"value": ...}}`), `record` (`id`, `external_id`) and `user` (`id`, `username`).
The response id is the key (tool_ref): a redelivered event changes nothing. `record.deleted`
(`data` the record) removes the votes of the record's responses (tool_task = record id).

An answer is read by what Argilla's question types send: a `label_selection` answer is one
option's value (a string), a `multi_label_selection` answer a list of them, a `rating` answer
a whole number (the option's value, e.g. 1-5: a level of an ordinal project, never an index).
A submitted response without the mapped question answered is "none apply" on a multi-label
project and a problem on the others. The record's `fields` give the item's content (a text
field, or an image field's URL or data URI) for training on content.
"""

from __future__ import annotations

from typing import Any

from app.connectors.common import (
    Answer,
    NoAnswer,
    Parsed,
    Rating,
    ToolVote,
    external_id,
    problem,
)
from app.votes.content import ContentIn
from app.votes.records import image_bytes

SOURCE = "argilla"
BAD_ANSWER = "must be an option's value, a list of them, or a rating"
EVENTS = {"response.created", "response.updated", "response.deleted", "record.deleted"}


def _item(record: Any, item_field: str, path: str, errors: list[dict[str, Any]]) -> str:
    if not isinstance(record, dict):
        errors.append(problem(path, "must be a record object"))
        return ""
    if item_field == "external_id" and record.get("external_id") not in (None, ""):
        return external_id(record["external_id"], f"{path}.external_id", errors)
    return external_id(record.get("id"), f"{path}.id", errors)


# Record fields read as the item's content when the connector names none: the names Argilla's
# own examples use for a text and an image field.
CONTENT_FIELDS = ("text", "image")


def read_content(out: Parsed, item: str, fields: Any, content_field: str | None) -> None:
    """The item's content from the record's `fields` into `out.contents` (nothing if it has
    none). An Argilla image field holds a URL or a `data:image/...;base64,` URI; a data URI is
    stored as the image itself, a URL fetched by the worker (Argilla serves no media of its
    own, so no credentials go with it)."""
    if not item or not isinstance(fields, dict):
        return
    name = content_field
    if name is None:
        name = next((f for f in CONTENT_FIELDS if f in fields), "")
    value = fields.get(name) if name else None
    if not isinstance(value, str) or not value or "\x00" in value:
        return
    if value.startswith("data:image/"):
        image = _data_uri_image(value)
        if image is not None:
            out.contents[item] = ContentIn(item, image=image, source=SOURCE)
        return
    if name != "text" and value.startswith(("http://", "https://")):
        out.contents[item] = ContentIn(item, image_url=value, source=SOURCE)
    else:
        out.contents[item] = ContentIn(item, text=value, source=SOURCE)


def _data_uri_image(value: str) -> bytes | None:
    """The image file a base64 data URI holds, checked as an uploaded image is; None when it is
    not one (the vote still counts; the item just has no image to train on)."""
    head, _, payload = value.partition(",")
    if not head.endswith(";base64"):
        return None
    try:
        return image_bytes(payload)
    except ValueError:
        return None


def _answer(value: Any) -> Answer | None:
    """An answer as the common checks take it (None: not a shape any question type sends)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Rating(value)  # only a rating question answers with a number
    if isinstance(value, str | list):
        return value
    return None


def question_type(record: Any, question: str) -> str | None:
    """The mapped question's type as the event's dataset lists it (newer Argilla servers send
    the questions with the record's dataset), or None."""
    dataset = record.get("dataset") if isinstance(record, dict) else None
    questions = dataset.get("questions") if isinstance(dataset, dict) else None
    for q in questions if isinstance(questions, list) else []:
        if isinstance(q, dict) and q.get("name") == question:
            settings = q.get("settings")
            return settings.get("type") if isinstance(settings, dict) else None
    return None


def parse_event(
    body: dict[str, Any],
    question: str,
    item_field: str,
    worker_field: str,
    content_field: str | None = None,
) -> Parsed | None:
    kind = body.get("type")
    if kind not in EVENTS:
        return None
    out = Parsed()
    data = body.get("data")
    if not isinstance(data, dict):
        out.errors.append(problem("data", "must be an object"))
        return out
    if kind == "record.deleted":  # the record's responses go with it, without response events
        out.remove_tasks.append(external_id(data.get("id"), "data.id", out.errors))
        return out
    ref = external_id(data.get("id"), "data.id", out.errors)
    if kind == "response.deleted" or data.get("status") != "submitted":
        out.remove_refs.append(ref)
        out.skipped += kind != "response.deleted"
        return out
    values = data.get("values")
    if not isinstance(values, dict):
        values = {}
    answer = values.get(question)
    path = f"data.values.{question}"
    label: Answer | None
    if answer is None:
        missing = f"missing: no answer to the mapped question {question!r}"
        # Blank is an answer ("none apply" to a multi-label question) only where the event's
        # dataset lists the question: otherwise the mapping may name one the dataset lacks.
        if question_type(data.get("record"), question) is None:
            out.errors.append(problem(path, missing))
            return out
        label = NoAnswer(missing)
    elif not isinstance(answer, dict) or "value" not in answer:
        out.errors.append(problem(path, 'must be {"value": ...}'))
        return out
    else:
        path += ".value"
        label = _answer(answer["value"])
        if label is None:
            out.errors.append(problem(path, BAD_ANSWER))
            return out
    item = _item(data.get("record"), item_field, "data.record", out.errors)
    user = data.get("user")
    if isinstance(user, dict):
        worker = external_id(user.get(worker_field), f"data.user.{worker_field}", out.errors)
    else:
        worker = external_id(data.get("user_id"), "data.user_id", out.errors)
    record = data.get("record")
    out.votes.append(
        ToolVote(
            item=item,
            worker=worker,
            label=label,
            path=path,
            ref=ref,
            task=str(record.get("id")) if isinstance(record, dict) else None,
        )
    )
    if isinstance(record, dict):
        read_content(out, item, record.get("fields"), content_field)
    out.rows = 1
    return out


def parse_records(
    data: Any, question: str, item_field: str = "external_id", content_field: str | None = None
) -> Parsed:
    """Exported records (`dataset.records.to_list(flatten=False)` or its JSON): each record with
    `fields` and `responses: {<question>: [{"value", "user_id"}]}`. Only submitted answers are
    exported as responses; a `status` other than "submitted", if present, is skipped."""
    out = Parsed()
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        out.errors.append(problem("$", "must be a JSON list of records"))
        return out
    for i, rec in enumerate(data):
        path = f"[{i}]"
        if not isinstance(rec, dict):
            out.errors.append(problem(path, "must be a record object"))
            continue
        responses = rec.get("responses") or {}
        answers = responses.get(question, []) if isinstance(responses, dict) else None
        if not isinstance(answers, list):
            out.errors.append(problem(f"{path}.responses.{question}", "must be a list"))
            continue
        item = _item(rec, item_field, path, out.errors) if answers else ""
        read_content(out, item, rec.get("fields"), content_field)
        for j, a in enumerate(answers):
            out.rows += 1
            apath = f"{path}.responses.{question}[{j}]"
            if not isinstance(a, dict) or "value" not in a:
                out.errors.append(problem(apath, 'must be {"value", "user_id"}'))
                continue
            if a.get("status", "submitted") != "submitted":
                out.skipped += 1
                continue
            worker = external_id(a.get("user_id"), f"{apath}.user_id", out.errors)
            label = _answer(a["value"])
            if label is None:
                out.errors.append(problem(f"{apath}.value", BAD_ANSWER))
                continue
            out.votes.append(
                ToolVote(
                    item=item,
                    worker=worker,
                    label=label,
                    path=f"{apath}.value",
                    ref=None if a.get("id") is None else str(a["id"]),
                    task=None if rec.get("id") is None else str(rec["id"]),
                )
            )
    return out
