"""Train on soft labels with PyTorch, then let the service train and follow its job.
Needs `pip install './clients/python[torch]'`, and a worker (`softlabels serve` runs one)."""

import os
import random
import tempfile
import uuid
from pathlib import Path

import torch
from softlabels_client import Client
from torch.utils.data import DataLoader, random_split

project = os.environ.get("SOFTLABELS_PROJECT") or f"blobs-{uuid.uuid4().hex[:8]}"
rng = random.Random(0)

with Client() as c:
    # A toy crowd: 200 points in 2 features around 3 centres; 5 annotators, right 80% of the time.
    c.create_project(project, ["a", "b", "c"], n_features=2)
    centres = [(0.0, 0.0), (3.0, 0.0), (0.0, 3.0)]
    gold = [rng.randrange(3) for _ in range(200)]
    c.add_items(
        project,
        [
            {"id": f"p{i}", "features": [x + rng.gauss(0, 1) for x in centres[g]], "gold": g}
            for i, g in enumerate(gold)
        ],
    )
    c.add_votes(
        project,
        [(f"p{i}", f"w{w}", g if rng.random() < 0.8 else rng.randrange(3))
         for i, g in enumerate(gold) for w in range(5)],
    )  # fmt: skip

    ds = c.torch_dataset(project, method="dawid-skene", min_votes=2)
    print(len(ds), "items; classes:", ds.classes)  # ds[i] = (features, soft target)

    train, val = random_split(ds, [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(
        torch.nn.Linear(ds.features.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(10):
        model.train()
        for x, y in DataLoader(train, batch_size=32, shuffle=True):
            loss = torch.nn.functional.cross_entropy(model(x), y)  # soft targets: probabilities
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            x, y = next(iter(DataLoader(val, batch_size=len(val))))
            kl = torch.nn.functional.kl_div(model(x).log_softmax(1), y, reduction="batchmean")
        print(f"epoch {epoch}: KL(human || model) on val = {kl:.3f}")

    # Or let the service train, and follow it:
    job = c.train(project, labels={"method": "dawid-skene"}, epochs=20)
    job.wait(timeout=600, on_progress=lambda j: print(j.status, j.progress))
    print(job.metrics["test"])  # accuracy, nll, ece, brier, macro_f1, kl_human, ...
    path = job.download_model(Path(tempfile.mkdtemp()) / "model.pt")
    print("checkpoint:", path)  # torch.load(path, weights_only=True)
