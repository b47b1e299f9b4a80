"""Why a training job cannot run, said to its user.

A JobError ends the job as `failed` with its message as the reason. Anything else raised while
training is a bug: the job fails too, but as an internal error, with the traceback logged.
"""

from app.errors import AppError


class JobError(AppError):
    """The job cannot run as configured on this data (not a bug); a 422 where a request meets
    it directly (a prediction), the job's failure reason in the worker."""

    status = 422
    code = "job_failed"
