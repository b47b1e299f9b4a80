"""Run crowd-kit 1.4.2's BinaryRelevance(DawidSkene) on a multi-label vote list: the reference
for app/aggregation/multilabel.py's BinaryRelevance.

Runs inside the separate crowd-kit virtualenv (requirements-crowdkit.txt), never imported by the
app or the test process:

    .venv-crowdkit/bin/python tests/crowdkit_multilabel_reference.py VOTES.npz OUT.npy

VOTES.npz holds int arrays item, worker, a bool (n_votes, K) array ticks and the scalar n_items.
OUT.npy gets (n_items, K): crowd-kit's posterior P(class applies) per item (NaN for items without
votes; 0 for a class no vote ticked, for which crowd-kit builds no aggregator).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from crowdkit.aggregation import BinaryRelevance, DawidSkene


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    with np.load(argv[1]) as z:
        item, worker, ticks, n_items = z["item"], z["worker"], z["ticks"], int(z["n_items"])
    k = ticks.shape[1]
    labels = [list(np.flatnonzero(row)) for row in ticks]
    df = pd.DataFrame({"task": item, "worker": worker, "label": labels})
    model = BinaryRelevance(DawidSkene(n_iter=100, tol=1e-5)).fit(df)
    out = np.full((n_items, k), np.nan)
    voted = np.unique(item)
    out[voted] = 0.0
    for label, agg in model.aggregators_.items():
        probas = agg.probas_.reindex(index=voted)
        out[voted, int(label)] = probas[1].to_numpy(dtype=np.float64)
    np.save(argv[2], out)


if __name__ == "__main__":
    main(sys.argv)
