"""What every connector shares: a tool payload parsed into `Parsed` (votes with the JSON path each
came from, plus the tool ids whose votes must go), then applied in one transaction.

The tool-specific parsers (label_studio.py, argilla.py, files.py) only read payloads; this module
checks labels against the project (a 422 names the payload path), applies the duplicate policy,
and calls the ingest layer (app/votes/ingest.py, app/votes/lifecycle.py), which knows no tool.

A sync (`apply(..., lenient=True)`) is the exception to "one bad vote fails the request": an
annotation that cannot be a vote is skipped and reported (`Rejected`), the others are stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.db.models import MAX_EXTERNAL_ID, Project
from app.errors import ValidationFailed
from app.votes.content import ContentIn, store_content
from app.votes.ingest import (
    VoteIn,
    ingest_votes,
)
from app.votes.lifecycle import delete_tool_votes, delete_votes_where
from app.votes.records import index_text

OnDuplicate = Literal["last", "first", "error"]


class PayloadError(ValidationFailed):
    """A payload that cannot be read as votes: 422 with the JSON path of each problem."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        paths = ", ".join(e["field"] for e in errors[:5])
        super().__init__(
            f"{len(errors)} problem(s) in the payload at {paths}; nothing was stored.",
            errors=errors,
        )


def problem(path: str, reason: str) -> dict[str, Any]:
    return {"index": None, "field": path, "reason": reason}


@dataclass(frozen=True)
class Rating:
    """A rating control's answer (Label Studio's <Rating>) as the tool sent it: a level of an
    ordinal project once checked (`resolve_labels`)."""

    value: Any


@dataclass(frozen=True)
class NoAnswer:
    """An annotation with no answer from the mapped control: "none apply" on a multi-label
    project, a problem (`reason`) on the others."""

    reason: str


# What a parser reads as a vote's answer: one class (a name, or an index), several (a list, a
# multi-label vote: each a name or index), a rating, or nothing.
Answer = str | int | list[Any] | Rating | NoAnswer


@dataclass
class ToolVote:
    item: str
    worker: str
    label: Answer
    # JSON path of the label in the payload, for error messages; of a list, an element's path
    # is this path with its index appended
    path: str
    ref: str | None = None  # the tool's annotation / response id
    task: str | None = None  # the tool's task / record id


@dataclass
class Rejected:
    """An annotation a lenient read (sync) could not turn into a vote: skipped and reported."""

    ref: str | None  # the tool's annotation id, when it could be read
    task: str | None  # the tool's task id
    field: str  # JSON path of the problem in the payload
    reason: str
    kept: bool = False  # a vote stored from this annotation before stays as it was

    def out(self) -> dict[str, Any]:
        reason = self.reason
        if self.kept:
            reason += "; the vote stored from this annotation before is kept"
        return {
            "annotation": self.ref,
            "task": self.task,
            "field": self.field,
            "reason": reason,
            "kept_vote": self.kept,
        }


@dataclass
class Parsed:
    votes: list[ToolVote] = field(default_factory=list)
    remove_refs: list[str] = field(default_factory=list)  # annotations deleted or cancelled
    remove_tasks: list[str] = field(default_factory=list)  # tasks deleted with their votes
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    rejected: list[Rejected] = field(default_factory=list)  # lenient reads only
    contents: dict[str, ContentIn] = field(default_factory=dict)  # item id -> its content

    def fail_if_errors(self) -> None:
        if self.errors:
            raise PayloadError(self.errors)


@dataclass(frozen=True)
class Applied:
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    skipped: int
    duplicates: int
    votes_version: int
    rejected: list[Rejected] = field(default_factory=list)


def _class_index(project: Project, label: Any, noun: str = "class") -> tuple[int, str | None]:
    """One class (or level) given by name or 0-based index, an index written as text
    included, as (its index, None), or (-1, the problem)."""
    if isinstance(label, bool) or not isinstance(label, str | int):
        return -1, f"must be one label: a {noun} name or a 0-based {noun} index"
    classes = project.classes
    if isinstance(label, str) and label not in classes:
        index = index_text(label)  # e.g. crowd-kit CSV labels written as class indices
        if index is not None:
            label = index
    if isinstance(label, str):
        if label in classes:
            return classes.index(label), None
        if noun == "level":
            return -1, f"{label!r} is not on this project's scale {classes[:20]}"
        return -1, f"unknown label {label!r}; the project's classes are {classes[:20]}"
    if not 0 <= label < len(classes):
        return -1, f"{noun} index {label} is out of range"
    return label, None


def _level_of_rating(project: Project, rating: Any) -> int | str:
    """A rating as the ordinal level it names: the level called by the number (a scale "1".."5"
    or "0".."4"), else the rating-th level (Label Studio's stars count from 1). A string "4",
    2.5, 0 or 7 on a five-level scale: a problem (str)."""
    if isinstance(rating, bool) or not isinstance(rating, int):
        return f"must be a whole number of stars, not {rating!r}"
    if str(rating) in project.classes:
        return project.classes.index(str(rating))
    if 1 <= rating <= len(project.classes):
        return rating - 1
    return f"rating {rating} is not on this project's scale {project.classes[:20]}"


def _resolve(project: Project, v: ToolVote) -> list[tuple[str, str]]:
    """Make `v.label` what the project's task type takes (one class or level, or the list of
    classes ticked); the problems as (path, reason)."""
    label, task_type = v.label, project.task_type
    if task_type == "multi_label":
        if isinstance(label, NoAnswer):
            v.label = []  # the control left blank: none apply
            return []
        if isinstance(label, Rating):
            return [(v.path, "a rating answers an ordinal project; this one is multi_label")]
        # One pick (a bare string) is a set of one.
        picks = label if isinstance(label, list) else [label]
        paths = (
            [f"{v.path}[{j}]" for j in range(len(picks))] if isinstance(label, list) else [v.path]
        )
        problems, ticked = [], set()
        for pick, path in zip(picks, paths, strict=True):
            index, reason = _class_index(project, pick)
            if reason is not None:
                problems.append((path, reason))
            elif index in ticked:
                problems.append((path, f"{pick!r} is picked twice"))
            ticked.add(index)
        if not problems:
            v.label = sorted(ticked)
        return problems
    noun = "level" if task_type == "ordinal" else "class"
    if isinstance(label, NoAnswer):
        return [(v.path, label.reason)]
    if isinstance(label, Rating):
        if task_type != "ordinal":
            return [(v.path, f"a rating answers an ordinal project; this one is {task_type}")]
        level = _level_of_rating(project, label.value)
        if isinstance(level, str):
            return [(v.path, level)]
        v.label = level
        return []
    if isinstance(label, list):
        if not label:
            return [(v.path, "must be a non-empty list of choices")]
        return [
            (
                v.path,
                f"has {len(label)} choices; a vote is one {noun} (this project's task type is "
                f"{task_type}: use a single-choice control, or a multi_label project)",
            )
        ]
    index, reason = _class_index(project, label, noun)
    if reason is not None:
        return [(v.path, reason)]
    v.label = index
    return []


def label_problems(project: Project, votes: list[ToolVote]) -> list[tuple[ToolVote, str, str]]:
    """Each vote's label made what the project takes (`_resolve`); the votes that cannot be,
    each with the JSON path and the reason of its first problem."""
    out = []
    for v in votes:
        problems = _resolve(project, v)
        if problems:
            out.append((v, *problems[0]))
    return out


def check_labels(project: Project, votes: list[ToolVote]) -> list[dict[str, Any]]:
    return [problem(path, reason) for v, path, reason in label_problems(project, votes)]


def dedupe(votes: list[ToolVote], policy: OnDuplicate) -> tuple[list[ToolVote], int, list[dict]]:  # type: ignore[type-arg]
    """One vote per (item, worker): keep the last or the first, or report each repeat."""
    seen: dict[tuple[str, str], int] = {}
    out: list[ToolVote] = []
    errors, dups = [], 0
    for v in votes:
        key = (v.item, v.worker)
        if key not in seen:
            seen[key] = len(out)
            out.append(v)
            continue
        dups += 1
        if policy == "error":
            first = out[seen[key]].path
            errors.append(
                problem(
                    v.path, f"worker {v.worker!r} already voted on item {v.item!r} (at {first})"
                )
            )
        elif policy == "last":
            out[seen[key]] = v
    return out, dups, errors


def apply(
    session: Session,
    project: Project,
    source: str,
    parsed: Parsed,
    on_duplicate: OnDuplicate = "last",
    *,
    keep_only_refs: bool = False,
    lenient: bool = False,
) -> Applied:
    """Store `parsed` all or nothing (the caller commits). With `keep_only_refs` (sync), every
    vote from `source` whose tool id is not among `parsed.votes` is deleted too, except the
    votes of annotations in `parsed.rejected` (kept as they were, and said so) and a vote that a
    new annotation of the same worker on the same item replaces (counted as updated).

    `lenient` (sync): a vote whose label is not a class joins `parsed.rejected` instead of
    failing the request. The caller has already moved the parser's per-annotation problems
    there (label_studio.parse_export(lenient=True)); `parsed.errors` still fails it all."""
    errors = list(parsed.errors)
    rejected = list(parsed.rejected)
    if lenient:
        bad = label_problems(project, parsed.votes)
        rejected += [Rejected(v.ref, v.task, path, reason) for v, path, reason in bad]
        rejected.sort(key=lambda r: [int(n) for n in re.findall(r"\d+", r.field)])  # as read
        bad_ids = {id(v) for v, _, _ in bad}
        parsed_votes = [v for v in parsed.votes if id(v) not in bad_ids]
    else:
        errors += check_labels(project, parsed.votes)
        parsed_votes = parsed.votes
    votes, dups, dup_errors = dedupe(parsed_votes, on_duplicate)
    errors += dup_errors
    if errors:
        raise PayloadError(errors)
    deleted = 0
    refs: list[str] = [v.ref for v in votes if v.ref is not None]
    kept_refs = [r.ref for r in rejected if r.ref is not None]
    inserted = updated = unchanged = 0
    if keep_only_refs:
        n, votes, unchanged = _reconcile(session, project, source, votes, refs + kept_refs)
        deleted += n
    elif refs:
        # A known annotation that now names another item or worker (task data edited): its old
        # vote goes before the new one is stored. Events carry a few refs: index lookups.
        deleted += delete_votes_where(
            session,
            project,
            """v.source = :s AND v.tool_ref = ANY(CAST(:refs AS text[])) AND NOT EXISTS (
                SELECT 1 FROM unnest(CAST(:refs AS text[]), CAST(:items AS text[]),
                                     CAST(:workers AS text[])) AS n(ref, item, worker)
                JOIN items i ON i.project_id = :p AND i.external_id = n.item
                JOIN workers w ON w.project_id = :p AND w.external_id = n.worker
                WHERE n.ref = v.tool_ref AND i.id = v.item_id AND w.id = v.worker_id)""",
            {
                "s": source,
                "refs": refs,
                "items": [v.item for v in votes if v.ref is not None],
                "workers": [v.worker for v in votes if v.ref is not None],
            },
        ).votes
    if votes:
        counts = ingest_votes(
            session,
            project,
            # Labels are resolved by now (check_labels): an index, or a list of them.
            [VoteIn.model_construct(item=v.item, worker=v.worker, label=v.label) for v in votes],  # type: ignore[arg-type]
            source=source,
            refs=[v.ref for v in votes] if refs else None,
            tasks=[v.task for v in votes] if refs else None,
        )
        inserted, updated = counts.inserted, counts.updated
        unchanged += counts.unchanged
    if keep_only_refs and inserted + deleted >= ANALYZE_AFTER:
        session.execute(text("ANALYZE votes, items, workers"))
    if parsed.contents:  # after the votes: they create the items the content belongs to
        store_content(session, project.id, list(parsed.contents.values()))
    if parsed.remove_refs or parsed.remove_tasks:
        deleted += delete_tool_votes(
            session, project, source, refs=parsed.remove_refs, tasks=parsed.remove_tasks
        ).votes
    if kept_refs:
        still = set(
            session.execute(
                text(
                    "SELECT tool_ref FROM votes WHERE project_id = :p AND source = :s "
                    "AND tool_ref = ANY(CAST(:refs AS text[]))"
                ),
                {"p": project.id, "s": source, "refs": kept_refs},
            ).scalars()
        )
        for r in rejected:
            r.kept = r.ref in still
    session.expire(project, ["votes_version"])  # reloaded: ingest and deletes may have moved it
    version = project.votes_version
    return Applied(
        inserted, updated, unchanged, deleted, parsed.skipped, dups, int(version), rejected
    )


# A sync that changed this many votes refreshes the planner's statistics of the tables it
# changed: a bulk first sync otherwise leaves plans made for empty tables in place until
# autovacuum catches up, and the next statements ran minutes instead of seconds.
ANALYZE_AFTER = 5_000


def _reconcile(
    session: Session, project: Project, source: str, votes: list[ToolVote], keep: list[str]
) -> tuple[int, list[ToolVote], int]:
    """A sync's deletions: the votes from `source` that the tool no longer has (tool id not in
    `keep` and no new vote on the same item by the same worker, which updates it instead), and
    the votes of known annotations that now name another item or worker. Worked out in Python
    from one read of the source's votes, so the cost is linear whatever the planner's statistics
    say; a sync with nothing to delete deletes nothing.

    The same read tells which of `votes` are stored exactly as they are (same answer, same tool
    ids): those are left out of the write, so a re-sync with nothing changed costs one read of
    the stored votes instead of an upsert of every one. Returns (deleted, votes still to write,
    unchanged)."""
    stored = session.execute(
        text(
            "SELECT v.item_id, v.worker_id, v.tool_ref, v.tool_task, v.label, v.ticks, "
            "i.external_id AS item, w.external_id AS worker "
            "FROM votes v JOIN items i ON i.id = v.item_id JOIN workers w ON w.id = v.worker_id "
            "WHERE v.project_id = :p AND v.source = :s"
        ),
        {"p": project.id, "s": source},
    ).all()
    target = {v.ref: (v.item, v.worker) for v in votes if v.ref is not None}
    pairs = {(v.item, v.worker) for v in votes}
    kept = set(keep)
    gone = [
        (row.item_id, row.worker_id)
        for row in stored
        if (row.tool_ref in target and target[row.tool_ref] != (row.item, row.worker))
        or (row.tool_ref not in kept and (row.item, row.worker) not in pairs)
    ]
    # A multi-label vote is stored as its ticks (label -1), the others as their label.
    as_stored = {
        (row.item, row.worker): (
            list(row.ticks) if row.ticks is not None else row.label,
            row.tool_ref,
            row.tool_task,
        )
        for row in stored
    }
    to_write = [
        v for v in votes if as_stored.get((v.item, v.worker)) != (v.label, v.ref, v.task)
    ]
    unchanged = len(votes) - len(to_write)
    if not gone:
        return 0, to_write, unchanged
    deleted = delete_votes_where(
        session,
        project,
        "(v.item_id, v.worker_id) IN (SELECT * FROM unnest(CAST(:items AS bigint[]), "
        "CAST(:workers AS bigint[])))",
        {"items": [g[0] for g in gone], "workers": [g[1] for g in gone]},
    ).votes
    return deleted, to_write, unchanged


def external_id(value: Any, path: str, errors: list[dict[str, Any]]) -> str:
    """A tool's id (int or str) as our item/worker id; a problem at `path` if it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.append(problem(path, f"must be a string or an integer, not {type(value).__name__}"))
        return ""
    text_id = str(value)
    if not 1 <= len(text_id) <= MAX_EXTERNAL_ID or "\x00" in text_id:
        errors.append(problem(path, f"must be 1 to {MAX_EXTERNAL_ID} characters, without NUL"))
    return text_id
