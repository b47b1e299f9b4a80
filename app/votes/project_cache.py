"""What the write path needs of a project (id, classes, task type), cached per process.

A project's classes and task type are fixed once it has votes, and its id never changes, so a
vote need not look the project up. The cache can still be out of date: the project was deleted
(and perhaps made again under the same name), or its classes or task type were changed by PATCH
before its first vote, in another process. The write itself checks all three
(`softlabels_ingest_votes` and `softlabels_ingest_ticks` raise SLNOP or SLCLS), and the caller
then drops the entry and looks again: a stale entry costs one retry, never a wrong write. PATCH
and DELETE in this process drop the entry at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from app.errors import NotFound


@dataclass(frozen=True)
class ProjectRef:
    id: int
    name: str
    classes: tuple[str, ...]
    task_type: str = "single"


class ProjectCache:
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._refs: dict[str, ProjectRef] = {}

    async def get(self, pool: AsyncConnectionPool, name: str) -> ProjectRef:
        return (await self.lookup(pool, name))[0]

    async def lookup(self, pool: AsyncConnectionPool, name: str) -> tuple[ProjectRef, bool]:
        """(the project, whether it came from the cache)."""
        ref = self._refs.get(name)
        if ref is not None:
            return ref, True
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, classes, task_type FROM projects WHERE name = %s", (name,)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"No project named {name!r}.")
        ref = ProjectRef(int(row[0]), name, tuple(row[1]), str(row[2]))
        if len(self._refs) >= self.MAX_ENTRIES:
            self._refs.clear()
        self._refs[name] = ref
        return ref, False

    def forget(self, name: str) -> None:
        self._refs.pop(name, None)
