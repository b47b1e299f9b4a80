"""Soft labels as a Hugging Face `datasets.Dataset`.
Needs `pip install './clients/python[datasets]'`."""

import os
import uuid

from softlabels_client import Client

project = os.environ.get("SOFTLABELS_PROJECT") or f"pets-{uuid.uuid4().hex[:8]}"

with Client() as c:
    c.create_project(project, ["cat", "dog"], n_features=2)
    c.add_items(project, [{"id": f"img-{i}", "features": [i, i % 3]} for i in range(10)])
    c.add_votes(project, [(f"img-{i}", f"w{w}", (i * w) % 2) for i in range(10) for w in range(3)])

    hf = c.hf_dataset(project, method="normalized")  # item, features, soft_label, n_votes, gold
    print(hf)
    split = hf.train_test_split(test_size=0.2, seed=0)
    print(split["train"][0])
