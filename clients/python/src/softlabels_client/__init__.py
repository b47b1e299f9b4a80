"""Python client for the softlabels service: `from softlabels_client import Client`.

    with Client("http://127.0.0.1:8000", key="sl_...") as c:
        c.add_votes("cats", [("img1", "alice", "cat"), ...])
        rows = c.soft_labels("cats", method="dawid-skene", as_="records")  # dicts: no extra
        df = c.soft_labels("cats", method="dawid-skene")  # the pandas extra
        job = c.train("cats", epochs=20).wait()

Needs only httpx. Tables need the `pandas` or `arrow` extra, `torch_dataset()` the `torch` extra,
`hf_dataset()` the `datasets` extra; each is imported when used, and a missing one raises
`MissingExtra` (an ImportError) naming the `pip install` that fixes it.
"""

from softlabels_client._extras import MissingExtra
from softlabels_client.core import Client, Job, JobFailed, SoftlabelsError

__version__ = "0.1.0"
__all__ = ["Client", "Job", "JobFailed", "MissingExtra", "SoftlabelsError", "__version__"]
