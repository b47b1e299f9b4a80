"""Optional dependencies, imported when a call needs them.

The client itself needs only httpx, so a script that only sends votes or reads soft labels as
dicts installs nothing heavy. A call that needs an extra which is not installed raises
`MissingExtra` (an ImportError) naming the one `pip install` that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "softlabels-client"


class MissingExtra(ImportError):
    """A call needs an optional package that is not installed; the message says which
    `pip install` fixes it."""

    def __init__(self, package: str, extra: str, call: str) -> None:
        self.package, self.extra, self.call = package, extra, call
        super().__init__(
            f"{package} is needed for {call}: pip install '{DISTRIBUTION}[{extra}]'",
            name=package,
        )


def need(module: str, extra: str, call: str) -> ModuleType:
    """Import `module`, or raise MissingExtra saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # A missing dependency of the package itself (e.g. pandas without numpy) is named too.
        missing = (exc.name or module).split(".")[0]
        raise MissingExtra(missing, extra, call) from None
