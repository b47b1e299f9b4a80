"""Quickstart: a project, items, votes, soft labels. Needs only `pip install ./clients/python`.

Reads SOFTLABELS_URL (default http://127.0.0.1:8000) and SOFTLABELS_KEY from the environment,
as the getting-started steps set them; SOFTLABELS_PROJECT names the project (default: a new,
uniquely named one, so the script can be run again and again).
"""

import os
import uuid

from softlabels_client import Client, SoftlabelsError

project = os.environ.get("SOFTLABELS_PROJECT") or f"pets-{uuid.uuid4().hex[:8]}"

with Client() as c:  # $SOFTLABELS_URL and $SOFTLABELS_KEY
    c.create_project(project, ["cat", "dog", "bird"], description="client quickstart")
    c.add_items(
        project,
        [
            {"id": "img-1", "features": [0.1, 0.7], "gold": "cat"},
            {"id": "img-2", "features": [0.9, 0.2], "gold": "dog"},
            {"id": "img-3", "features": [0.5, 0.5]},
        ],
    )
    # (item, worker, label) tuples or {"item", "worker", "label"} dicts; labels by name or index
    totals = c.add_votes(
        project,
        [
            ("img-1", "ann", "cat"), ("img-1", "bob", "cat"), ("img-1", "cy", "dog"),
            ("img-2", "ann", "dog"), ("img-2", "bob", "bird"),
            ("img-3", "ann", 2), ("img-3", "cy", "bird"),
        ],
    )  # fmt: skip
    print("stored:", totals)  # {'inserted': 7, 'updated': 0, 'unchanged': 0, 'votes_version': ...}

    for row in c.soft_labels(project, method="normalized", as_="records"):
        print(row["item"], row["n_votes"], [round(p, 3) for p in row["probs"]])

    one = c.soft_label(project, "img-1", method="softmax", temperature=2)
    print("img-1, softmax T=2:", one["probs"])
    print("stats:", c.stats(project)["votes"], "votes")

    try:
        c.add_votes(project, [("img-1", "dan", "zebra")])  # not a class: nothing is stored
    except SoftlabelsError as e:
        print("refused:", e.status, e.error, e.errors[0]["reason"])
