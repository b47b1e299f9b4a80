"""Soft labels as a pandas DataFrame or a pyarrow Table, and a streamed export.
Needs `pip install './clients/python[pandas]'`."""

import os
import tempfile
import uuid
from pathlib import Path

from softlabels_client import Client

project = os.environ.get("SOFTLABELS_PROJECT") or f"pets-{uuid.uuid4().hex[:8]}"

with Client() as c:
    c.create_project(project, ["cat", "dog", "bird"])
    c.add_votes(
        project,
        [(f"img-{i}", f"w{w}", ["cat", "dog", "bird"][(i + w) % 3 if w else i % 3])
         for i in range(20) for w in range(4)],
    )  # fmt: skip

    df = c.soft_labels(project, method="dawid-skene")  # columns item, n_votes, gold, p_cat, ...
    print(df.head())
    print("most uncertain:", df.loc[df[["p_cat", "p_dog", "p_bird"]].max(axis=1).idxmin(), "item"])

    table = c.soft_labels(project, as_="arrow")  # a pyarrow Table, same columns
    print(table.num_rows, "rows;", table.column_names)

    out = Path(tempfile.mkdtemp()) / f"{project}.parquet"
    c.export(project, out, format="parquet", method="majority")  # streamed to the file
    print("wrote", out, out.stat().st_size, "bytes")
