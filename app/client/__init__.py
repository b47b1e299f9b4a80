"""Python client for the softlabels service: `from app.client import Client`.

    with Client("http://127.0.0.1:8000", key="sl_...") as c:
        c.add_votes("cats", [("img1", "alice", "cat"), ...])
        df = c.soft_labels("cats", method="dawid-skene")
        job = c.train("cats", epochs=20).wait()

See the README, "Python client". Depends only on httpx (and pyarrow/pandas for tables, torch for the
Dataset, `datasets` for the Hugging Face Dataset, each imported when used).
"""

from app.client.core import Client, Job, JobFailed, SoftlabelsError

__all__ = ["Client", "Job", "JobFailed", "SoftlabelsError"]
