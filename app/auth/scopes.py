"""Scopes and the caller a request acts as.

Scopes: `admin` (everything, every project, keys included), and per project `annotate` (items
and votes), `read` (soft labels, exports, stats) and `train` (read, plus training jobs).
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = ("admin", "annotate", "read", "train")
ALL_PROJECTS = "*"
# What holding a scope lets a key do.
IMPLIED: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "train": frozenset({"train", "read"}),
    "read": frozenset({"read"}),
    "annotate": frozenset({"annotate"}),
}


@dataclass(frozen=True)
class Caller:
    """Who sent the request: a key's id, label, scopes and projects (None: every project)."""

    name: str
    scopes: frozenset[str]
    projects: frozenset[str] | None = None
    key_id: int | None = None
    rate_limit_per_s: float | None = None  # None: the server's default

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def has(self, scope: str) -> bool:
        return any(scope in IMPLIED.get(s, ()) for s in self.scopes)

    def covers(self, project: str | None) -> bool:
        """Every project (None) or this one; a cross-project request needs every project."""
        return self.projects is None or (project is not None and project in self.projects)

    def may(self, scope: str, project: str | None) -> bool:
        return self.is_admin or (self.has(scope) and self.covers(project))


ANONYMOUS_ADMIN = Caller(name="anonymous (auth off)", scopes=frozenset({"admin"}))
ENV_ADMIN = Caller(name="SOFTLABELS_ADMIN_KEY", scopes=frozenset({"admin"}))
