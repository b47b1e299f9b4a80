"""/v1/projects: create, list, read, update and delete projects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.aggregation.ordinal import scale_values
from app.api.access import require
from app.api.connector_schemas import ProjectDeletedOut
from app.api.deps import ProjectDep, ServicesDep, SessionDep
from app.api.schemas import ProjectCreate, ProjectList, ProjectOut, ProjectUpdate, check_scale
from app.db.models import Item, Project, Worker
from app.errors import Conflict, ValidationFailed
from app.votes import lifecycle
from app.votes.ingest import committed_with_retries

router = APIRouter(prefix="/v1/projects", tags=["projects"])


def project_out(session: Session, project: Project, *, counts: bool = True) -> ProjectOut:
    out = ProjectOut.model_validate(project, from_attributes=True)
    if project.task_type == "ordinal":
        out.level_values = scale_values(project.classes, project.level_values).tolist()
    if counts:
        n_items, n_votes = session.execute(
            select(func.count(), func.coalesce(func.sum(Item.n_votes), 0)).where(
                Item.project_id == project.id
            )
        ).one()
        n_workers = session.scalar(
            select(func.count()).select_from(Worker).where(Worker.project_id == project.id)
        )
        out.n_items, out.n_workers, out.n_votes = n_items, n_workers, int(n_votes)
    return out


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectOut,
    dependencies=[Depends(require("admin"))],
)
def create_project(body: ProjectCreate, session: SessionDep) -> ProjectOut:
    project = Project(**body.model_dump())
    session.add(project)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"A project named {body.name!r} already exists.") from None
    session.refresh(project)
    return project_out(session, project)


@router.get("", response_model=ProjectList, dependencies=[Depends(require("read"))])
def list_projects(session: SessionDep) -> ProjectList:
    projects = session.scalars(select(Project).order_by(Project.name)).all()
    return ProjectList(projects=[project_out(session, p, counts=False) for p in projects])


@router.get("/{project}", response_model=ProjectOut, dependencies=[Depends(require("read"))])
def get_project(project: ProjectDep, session: SessionDep) -> ProjectOut:
    return project_out(session, project)


@router.patch("/{project}", response_model=ProjectOut, dependencies=[Depends(require("admin"))])
def update_project(
    project: ProjectDep, body: ProjectUpdate, session: SessionDep, services: ServicesDep
) -> ProjectOut:
    """Change the description or an ordinal scale's level values, or the classes and the task
    type while the project has no votes."""
    if "description" in body.model_fields_set:
        project.description = body.description
    new_classes = body.classes is not None and body.classes != project.classes
    new_type = body.task_type is not None and body.task_type != project.task_type
    if new_classes or new_type:
        # Lock first so a vote batch cannot slip in between the check and the change.
        session.execute(text("SELECT 1 FROM projects WHERE id = :p FOR UPDATE"), {"p": project.id})
        has_votes = session.execute(
            text("SELECT EXISTS (SELECT 1 FROM votes WHERE project_id = :p)"), {"p": project.id}
        ).scalar_one()
        if has_votes:
            field = "classes" if new_classes else "task_type"
            raise Conflict(
                f"The {'classes' if new_classes else 'task type'} of a project "
                f"{'are' if new_classes else 'is'} fixed once it has votes.",
                errors=[{"index": None, "field": field, "reason": "fixed once votes exist"}],
            )
        services.projects.forget(project.name)  # other processes: the write path re-checks
    if new_classes:
        assert body.classes is not None
        project.classes = body.classes
        session.execute(
            text("UPDATE items SET counts = array_fill(0, ARRAY[:k]) WHERE project_id = :p"),
            {"k": len(body.classes), "p": project.id},
        )
    if new_type:
        assert body.task_type is not None
        project.task_type = body.task_type
        # No votes, but fits of the empty project under the old type's methods of the same
        # name ("normalized" is not the same method for every type) must not be served.
        session.execute(text("DELETE FROM label_fits WHERE project_id = :p"), {"p": project.id})
    _update_scale(project, body)
    session.flush()
    return project_out(session, project)


def _update_scale(project: Project, body: ProjectUpdate) -> None:
    """Level values sent replace the stored ones (null: back to the default); values that no
    longer fit the levels after a change of classes or task type are a 422 naming them."""
    given = "level_values" in body.model_fields_set
    values = body.level_values if given else project.level_values
    if (
        not given
        and values is not None
        and (project.task_type != "ordinal" or len(values) != len(project.classes))
    ):
        values = None  # the scale they were given for is gone
    try:
        check_scale(project.task_type, project.classes, values)
    except ValueError as exc:
        raise ValidationFailed.field("level_values", str(exc)) from None
    project.level_values = values


@router.delete(
    "/{project}", response_model=ProjectDeletedOut, dependencies=[Depends(require("admin"))]
)
def delete_project(
    project: ProjectDep,
    session: SessionDep,
    services: ServicesDep,
    confirm: Annotated[
        str, Query(description="The project's name, repeated: deleting cannot be undone.")
    ],
) -> ProjectDeletedOut:
    """Delete the project and everything in it: items, votes, workers, fits, training jobs and
    checkpoints, connectors, webhook subscriptions."""
    if confirm != project.name:
        raise ValidationFailed(
            "To delete the project, pass its name as `confirm`.",
            errors=[{"index": None, "field": "confirm", "reason": f"must be {project.name!r}"}],
        )
    name = project.name
    n = committed_with_retries(session, lambda: lifecycle.delete_project(session, project))
    services.projects.forget(name)  # other processes: the write path finds it gone (SLNOP)
    return ProjectDeletedOut(deleted=name, deleted_votes=n)
