"""Label Studio (observed on 1.23.2): webhook events, JSON / JSON_MIN exports, and sync.

Webhook bodies (`action` plus objects; every body also carries the whole Label Studio project
with its share token, so a body is never stored or logged whole):
- ANNOTATION_CREATED / ANNOTATION_UPDATED: `annotation` and `task` objects. The worker is
  `annotation.completed_by` (an int user id); the answer is in the `result` whose `from_name` is
  the mapped control: `value.choices` (always a list, one pick or several: only the label
  config says whether the control is `choice="multiple"`) or `value.rating` (a <Rating>). A
  skip is `was_cancelled: true` with an empty `result`: it is not a vote, and removes one
  stored under that annotation id. An annotation with no result from the control (`result:
  []`) is "none apply" on a multi-label project and a problem elsewhere.
The parser reads the answer as it is; which answers the project takes (one class, a set, a
level) is decided against its task type in common.py. Label Studio checks none of the values
(a choice not in the config, two picks on a single-choice control, ratings 7, 0, 2.5 or "4"
are all sent): that check names the annotation and the reason.
- ANNOTATIONS_CREATED (Data Manager bulk actions): `annotation` (singular) holds a list, `task`
  a list too.
- ANNOTATIONS_DELETED: only `annotations: [{"id"}]`; TASKS_DELETED: only `tasks: [{"id"}]`, and
  the task's annotations go with it without an annotation event.
Votes are keyed on the annotation id (tool_ref) and the mapped data field (the item), never on
the task id alone: Label Studio on SQLite reuses task ids after a delete.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app import outbound
from app.config import get_settings
from app.connectors.common import (
    Answer,
    NoAnswer,
    Parsed,
    Rating,
    Rejected,
    ToolVote,
    external_id,
    problem,
)
from app.db.models import MAX_EXTERNAL_ID
from app.errors import ToolUnreachable
from app.outbound import Policy
from app.votes.content import ContentIn

SOURCE = "label-studio"
VOTE_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
DELETE_ACTIONS = {"ANNOTATIONS_DELETED", "TASKS_DELETED"}
# Task data fields read as the item's content when the connector names none: the names Label
# Studio's own text and image templates use.
TEXT_FIELDS = ("text",)
IMAGE_FIELDS = ("image",)


@dataclass(frozen=True)
class Mapping:
    """How a Label Studio project's tasks and annotations become items and votes."""

    from_name: str  # the <Choices> or <Rating> control whose answer is the vote
    item_field: str | None = None  # task data field holding the item id; None: the task id
    # Task data field holding the item's content: a text, or an image's URL (Label Studio's
    # media URLs are relative to its address and need its token: the worker fetches them with
    # the connector's). None: `text` or `image` when the task has one; "": store no content.
    content_field: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Mapping:
        return cls(config["from_name"], config.get("item_field"), config.get("content_field"))


def read_content(out: Parsed, item: str, data: dict[str, Any], mapping: Mapping) -> None:
    """The item's content from its task data into `out.contents` (nothing if it has none)."""
    field_ = mapping.content_field
    if field_ is None:
        field_ = next((f for f in TEXT_FIELDS + IMAGE_FIELDS if f in data), "")
    value = data.get(field_) if field_ else None
    if not item or not isinstance(value, str) or not value or "\x00" in value:
        return
    # A named field holding a URL or one of Label Studio's upload paths is an image; `text` is
    # always text, even when a text happens to be a link.
    is_image = field_ in IMAGE_FIELDS or (
        field_ not in TEXT_FIELDS and value.startswith(("http://", "https://", "/data/"))
    )
    if is_image:
        out.contents[item] = ContentIn(item, image_url=value, source=SOURCE)
    else:
        out.contents[item] = ContentIn(item, text=value, source=SOURCE)


def _item(task: Any, item_field: str | None, path: str, errors: list[dict[str, Any]]) -> str:
    if not isinstance(task, dict):
        errors.append(problem(path, "must be a task object"))
        return ""
    if item_field is None:
        return external_id(task.get("id"), f"{path}.id", errors)
    data = task.get("data")
    if not isinstance(data, dict) or item_field not in data:
        errors.append(
            problem(
                f"{path}.data.{item_field}",
                f"missing: the connector maps the item id to task data field {item_field!r}",
            )
        )
        return ""
    return external_id(data[item_field], f"{path}.data.{item_field}", errors)


def _worker(annotation: dict[str, Any], path: str, errors: list[dict[str, Any]]) -> str:
    by = annotation.get("completed_by")
    if isinstance(by, dict):  # some versions and exports expand the user
        return external_id(by.get("id"), f"{path}.completed_by.id", errors)
    return external_id(by, f"{path}.completed_by", errors)


def read_annotation(
    out: Parsed, annotation: Any, task: Any, path: str, task_path: str, mapping: Mapping
) -> None:
    """One annotation of one task into `out`: a vote, a skip, or a problem."""
    from_name = mapping.from_name
    if not isinstance(annotation, dict):
        out.errors.append(problem(path, "must be an annotation object"))
        return
    ref = external_id(annotation.get("id"), f"{path}.id", out.errors)
    if annotation.get("was_cancelled"):
        out.skipped += 1
        out.remove_refs.append(ref)
        return
    results = annotation.get("result")
    if not isinstance(results, list):
        out.errors.append(problem(f"{path}.result", "must be a list"))
        return
    found = [
        (j, r)
        for j, r in enumerate(results)
        if isinstance(r, dict) and r.get("from_name") == from_name
    ]
    label: Answer
    if not found:
        names = sorted({str(r.get("from_name")) for r in results if isinstance(r, dict)})
        label = NoAnswer(f"no result from the mapped control {from_name!r} (found: {names})")
        lpath = f"{path}.result"
    else:
        j, result = found[0]
        answer = _answer(result.get("value"), f"{path}.result[{j}].value", out.errors)
        if answer is None:
            return
        label, lpath = answer
    item = _item(task, mapping.item_field, task_path, out.errors)
    worker = _worker(annotation, path, out.errors)
    task_id = task.get("id") if isinstance(task, dict) else None
    if isinstance(task, dict) and isinstance(task.get("data"), dict):
        read_content(out, item, task["data"], mapping)
    out.votes.append(
        ToolVote(
            item=item,
            worker=worker,
            label=label,
            path=lpath,
            ref=ref,
            task=None if task_id is None else str(task_id),
        )
    )


def _answer(value: Any, vpath: str, errors: list[dict[str, Any]]) -> tuple[Answer, str] | None:
    """A result's value as (the answer, its JSON path): a rating, one choice (a string), or
    the list of choices when there are none or several (a problem in `errors`: None)."""
    if isinstance(value, dict) and "rating" in value and "choices" not in value:
        return Rating(value["rating"]), f"{vpath}.rating"
    rpath = f"{vpath}.choices"
    choices = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(choices, list):
        errors.append(problem(rpath, "must be a list of choices"))
        return None
    for k, choice in enumerate(choices):
        if not isinstance(choice, str):
            errors.append(problem(f"{rpath}[{k}]", "must be a string"))
            return None
    if len(choices) == 1:
        return choices[0], f"{rpath}[0]"
    return list(choices), rpath


def _ids(body: dict[str, Any], key: str, out: Parsed) -> list[str]:
    rows = body.get(key)
    if not isinstance(rows, list):
        out.errors.append(problem(key, 'must be a list of {"id": ...} objects'))
        return []
    return [
        external_id(r.get("id") if isinstance(r, dict) else None, f"{key}[{i}].id", out.errors)
        for i, r in enumerate(rows)
    ]


def parse_event(body: dict[str, Any], mapping: Mapping) -> Parsed | None:
    """A webhook body into votes and deletions; None for actions that carry no votes."""
    action = body.get("action")
    out = Parsed()
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        read_annotation(
            out, body.get("annotation"), body.get("task"), "annotation", "task", mapping
        )
    elif action == "ANNOTATIONS_CREATED":
        annotations, tasks = body.get("annotation"), body.get("task")
        if not isinstance(annotations, list):
            out.errors.append(problem("annotation", "must be a list for ANNOTATIONS_CREATED"))
            return out
        task_list = tasks if isinstance(tasks, list) else []
        by_id = {t.get("id"): i for i, t in enumerate(task_list) if isinstance(t, dict)}
        for i, a in enumerate(annotations):
            t = by_id.get(a.get("task")) if isinstance(a, dict) else None
            if t is None:
                out.errors.append(problem(f"annotation[{i}].task", "names no task in `task`"))
                continue
            read_annotation(out, a, task_list[t], f"annotation[{i}]", f"task[{t}]", mapping)
    elif action == "ANNOTATIONS_DELETED":
        out.remove_refs = _ids(body, "annotations", out)
    elif action == "TASKS_DELETED":
        out.remove_tasks = _ids(body, "tasks", out)
    else:
        return None
    out.rows = len(out.votes)
    return out


def has_inline_annotations(body: dict[str, Any]) -> bool:
    """TASKS_CREATED for tasks imported with annotations (which send no annotation event)."""
    tasks = body.get("tasks")
    return (
        body.get("action") == "TASKS_CREATED"
        and isinstance(tasks, list)
        and any(
            isinstance(t, dict)
            and isinstance(t.get("total_annotations"), int)
            and t["total_annotations"] > 0
            for t in tasks
        )
    )


def parse_export(data: Any, mapping: Mapping, *, lenient: bool = False) -> Parsed:
    """Label Studio's JSON export (a list of tasks with `annotations`; cancelled ones included)
    or its JSON_MIN export (one row per annotation, task data flattened to the top level,
    `annotator`, `annotation_id`, the control's name as a key; cancelled ones dropped).

    `lenient` (sync): an annotation that cannot be read as a vote goes to `out.rejected` (its
    first problem) and the others are read; only problems of the export's shape (not a list,
    a task that is not an object, `annotations` not a list) stay in `out.errors`."""
    out = Parsed()
    if not isinstance(data, list):
        out.errors.append(problem("$", "must be a JSON list (a Label Studio JSON export)"))
        return out
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            out.errors.append(problem(f"[{i}]", "must be an object"))
        elif "annotations" in row:  # JSON: a task
            anns = row["annotations"]
            if not isinstance(anns, list):
                out.errors.append(problem(f"[{i}].annotations", "must be a list"))
                continue
            for j, a in enumerate(anns):
                out.rows += 1
                with _one_annotation(out, lenient, a, row.get("id")):
                    read_annotation(out, a, row, f"[{i}].annotations[{j}]", f"[{i}]", mapping)
        else:  # JSON_MIN: one annotation, task data at the top level
            out.rows += 1
            ann = {"id": row.get("annotation_id")}
            with _one_annotation(out, lenient, ann, row.get("id")):
                _read_min_row(out, row, i, mapping)
    return out


@contextlib.contextmanager
def _one_annotation(out: Parsed, lenient: bool, annotation: Any, task_id: Any) -> Iterator[None]:
    """Lenient: what reading one annotation added to `out` is taken back when it added a
    problem, and the annotation is recorded as rejected instead."""
    if not lenient:
        yield
        return
    n_errors, n_votes, n_remove, skipped = (
        len(out.errors),
        len(out.votes),
        len(out.remove_refs),
        out.skipped,
    )
    yield
    if len(out.errors) == n_errors:
        return
    first = out.errors[n_errors]
    del out.errors[n_errors:], out.votes[n_votes:], out.remove_refs[n_remove:]
    out.skipped = skipped
    ref = annotation.get("id") if isinstance(annotation, dict) else None
    out.rejected.append(
        Rejected(
            ref=_id_text(ref),
            task=_id_text(task_id),
            field=str(first["field"]),
            reason=str(first["reason"]),
        )
    )


def _id_text(value: Any) -> str | None:
    ok = isinstance(value, (str, int)) and not isinstance(value, bool)
    return str(value) if ok and 1 <= len(str(value)) <= MAX_EXTERNAL_ID else None


def _read_min_row(out: Parsed, row: dict[str, Any], i: int, mapping: Mapping) -> None:
    path = f"[{i}]"
    from_name, item_field = mapping.from_name, mapping.item_field
    raw = row.get(from_name)
    lpath = f"{path}.{from_name}"
    label: Answer
    # JSON_MIN simplifies by count (label_studio_sdk's prettify_result): one choice is a bare
    # string, zero or several {"choices": [...]}, a rating always [{"rating": r}]; an empty
    # annotation has no key for the control.
    if raw is None:
        label = NoAnswer("missing: no answer for the control")
    elif isinstance(raw, str):
        label = raw
    elif isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], dict):
        answer = _answer(raw[0], f"{lpath}[0]", out.errors)
        if answer is None:
            return
        label, lpath = answer
    elif isinstance(raw, dict):
        answer = _answer(raw, lpath, out.errors)
        if answer is None:
            return
        label, lpath = answer
    else:
        out.errors.append(problem(lpath, 'must be a choice, {"choices": [...]} or a rating'))
        return
    # A data field named `id` clashes with the task id in JSON_MIN; the task id wins there.
    key = item_field or "id"
    item = external_id(row.get(key), f"{path}.{key}", out.errors)
    worker = external_id(row.get("annotator"), f"{path}.annotator", out.errors)
    ref = row.get("annotation_id")
    read_content(out, item, row, mapping)
    out.votes.append(
        ToolVote(
            item=item,
            worker=worker,
            label=label,
            path=lpath,
            ref=None if ref is None else str(ref),
            task=None if row.get("id") is None else str(row["id"]),
        )
    )


# --- sync: pull the project's annotations from Label Studio's API ------------------------------


class SyncFailed(ToolUnreachable):
    """Label Studio could not be reached or refused; the message never includes the token."""


def _request(
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    policy: Policy | None = None,
    deadline_s: float | None = None,
    max_bytes: int | None = None,
) -> Any:
    """GET (or POST `body`) under the address policy; the reply parsed as JSON. Errors name what
    failed, never what Label Studio sent (nor the path: an error is not a way to probe a URL)."""
    try:
        reply = outbound.request(
            "POST" if body is not None else "GET",
            url,
            headers=headers,
            body=body,
            policy=policy,
            deadline_s=deadline_s,
            max_bytes=max_bytes,
        )
    except outbound.TooLarge as exc:
        hint = "; raise SOFTLABELS_LABEL_STUDIO_EXPORT_MAX_BYTES" if max_bytes else ""
        raise SyncFailed(f"Label Studio could not be read: {exc}{hint}") from None
    except outbound.OutboundError as exc:
        raise SyncFailed(f"Label Studio could not be read: {exc}") from None
    if not 200 <= reply.status < 300:
        raise SyncFailed(f"Label Studio answered HTTP {reply.status}")
    try:
        return json.loads(reply.body)
    except ValueError:
        raise SyncFailed("Label Studio's reply is not JSON") from None


def auth_header(base: str, token: str, policy: Policy | None = None) -> dict[str, str]:
    """A personal access token (a JWT) is traded for a short-lived access token; a legacy API
    token is sent as `Token <key>`."""
    if token.count(".") == 2:
        got = _request(
            f"{base}/api/token/refresh/",
            {"Content-Type": "application/json"},
            json.dumps({"refresh": token}).encode(),
            policy,
        )
        access = got.get("access") if isinstance(got, dict) else None
        if not isinstance(access, str):
            raise SyncFailed("Label Studio did not return an access token for the token")
        return {"Authorization": f"Bearer {access}"}
    return {"Authorization": f"Token {token}"}


def fetch_export(base_url: str, ls_project: int, token: str, policy: Policy | None = None) -> Any:
    """The project's JSON export, every task with its annotations (cancelled ones included).

    Waited for up to label_studio_export_deadline_s and read up to
    label_studio_export_max_bytes, not the general outbound limits: Label Studio builds the
    whole export before it sends a byte (minutes on a large project), and a real export of
    50,000 tasks with 3 annotations each is over the general 100 MiB
    (benchmarks/results/ls_real_scale.md)."""
    base = base_url.rstrip("/")
    headers = auth_header(base, token, policy)
    settings = get_settings()
    return _request(
        f"{base}/api/projects/{ls_project}/export?exportType=JSON",
        headers,
        None,
        policy,
        settings.label_studio_export_deadline_s,
        settings.label_studio_export_max_bytes,
    )
