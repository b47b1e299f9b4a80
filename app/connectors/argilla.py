"""Argilla (v2): webhook events and exported records.

Webhook bodies are Standard Webhooks envelopes `{type, version, timestamp, data}` signed with
the webhook's secret (checked in app/api/connectors.py with app/webhooks/signing.py). For
`response.created` / `response.updated` / `response.deleted`, `data` is the response: `id`,
`status` (only "submitted" counts; "discarded" or "draft" removes a stored vote), `values`
(`{<question>: {"value": ...}}`), `record` (`id`, `external_id`) and `user` (`id`, `username`).
The response id is the key (tool_ref): a redelivered event changes nothing. `record.deleted`
(`data` the record) removes the votes of the record's responses (tool_task = record id).
"""

from __future__ import annotations

from typing import Any

from app.connectors.common import Parsed, ToolVote, external_id, problem

SOURCE = "argilla"
EVENTS = {"response.created", "response.updated", "response.deleted", "record.deleted"}


def _item(record: Any, item_field: str, path: str, errors: list[dict[str, Any]]) -> str:
    if not isinstance(record, dict):
        errors.append(problem(path, "must be a record object"))
        return ""
    if item_field == "external_id" and record.get("external_id") not in (None, ""):
        return external_id(record["external_id"], f"{path}.external_id", errors)
    return external_id(record.get("id"), f"{path}.id", errors)


def parse_event(
    body: dict[str, Any], question: str, item_field: str, worker_field: str
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
    answer = values.get(question) if isinstance(values, dict) else None
    if not isinstance(answer, dict) or "value" not in answer:
        out.errors.append(
            problem(
                f"data.values.{question}", f"missing: no answer to the mapped question {question!r}"
            )
        )
        return out
    label = answer["value"]
    if not isinstance(label, (str, int)) or isinstance(label, bool):
        out.errors.append(
            problem(
                f"data.values.{question}.value", "must be one label (a label question's answer)"
            )
        )
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
            path=f"data.values.{question}.value",
            ref=ref,
            task=str(record.get("id")) if isinstance(record, dict) else None,
        )
    )
    out.rows = 1
    return out


def parse_records(data: Any, question: str, item_field: str = "external_id") -> Parsed:
    """Exported records (`dataset.records.to_list(flatten=False)` or its JSON): each record with
    `responses: {<question>: [{"value", "user_id"}]}`. Only submitted answers are exported as
    responses; a `status` other than "submitted", if present, is skipped."""
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
            out.votes.append(
                ToolVote(
                    item=item,
                    worker=worker,
                    label=a["value"],
                    path=f"{apath}.value",
                    ref=None if a.get("id") is None else str(a["id"]),
                    task=None if rec.get("id") is None else str(rec["id"]),
                )
            )
    return out
