"""Routes that do not speak every task type yet refuse the others up front, with a 422 naming
`task_type`, rather than compute single-label statistics from counts that mean something else
(a multi-label item's counts are per-class tick counts, not a distribution)."""

from __future__ import annotations

from collections.abc import Callable

from app.api.deps import ProjectDep
from app.errors import ValidationFailed


def not_for(*task_types: str, what: str) -> Callable[[ProjectDep], None]:
    """A route dependency refusing projects of `task_types` (`what`: the route, for the
    message)."""

    def check(project: ProjectDep) -> None:
        if project.task_type in task_types:
            raise ValidationFailed.field(
                "task_type",
                f"{what} is not available for {project.task_type} projects yet",
                f"{what} is not available for {project.task_type} projects yet.",
            )

    return check
