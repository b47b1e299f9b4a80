"""What every encoder is: the protocol, its errors, and the helpers the families share.

An encoder turns item content (texts, or images) into the model's input rows:

- a *frozen* encoder (TF-IDF after its fit, hashing, a pretrained transformer or backbone)
  gives (n, d) float32 embeddings; the job's linear/MLP head trains on them like on features;
- an *end-to-end* encoder (the small CNN) gives the pixels as rows and a trainable trunk that
  the trainer puts in front of the head, so the whole network learns from the soft loss.

`version` names everything the output depends on (code revision, options, library versions,
the weights' digest, and for an encoder fitted on the job's data that data's digest), so a
cache keyed by (item, encoder, version) is never stale: change any of them and it changes.

What `fit` learned (a vocabulary, an SVD) is `state()`: tensors and JSON values that the job's
checkpoint keeps, so `load_state` in another process encodes new content exactly as the job did.
Pretrained weights are not copied into it: they are read again from their path, and `version`
says whether they are still the same.

Nothing here imports torch, scikit-learn, transformers or torchvision; the family modules
import theirs lazily, when an encoder is built.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from app.training.errors import JobError

log = logging.getLogger(__name__)

# Texts; or images: an (n, H, W, C) uint8 array, or a sequence of encoded bytes (PNG, JPEG,
# anything Pillow reads) or of (H, W[, C]) uint8 arrays.
Content = Sequence[str] | Sequence[bytes] | Sequence[np.ndarray] | np.ndarray
# progress(done, total): called after each batch, so a worker can report and heartbeat.
Progress = Callable[[int, int], None]

T = TypeVar("T")


class EncoderUnavailableError(JobError):
    """The encoder cannot run here: a library or the weights are missing. One line that names
    the fix (what to install, or where the weights go); never a traceback for the user."""


@runtime_checkable
class Encoder(Protocol):
    name: str
    modality: str  # "text" or "image"
    end_to_end: bool  # True: encode() gives model inputs and trunk() the trainable part
    # True: fit() learns from the job's training split, so the output is the job's own and
    # never cached across jobs (TF-IDF, the SVD after hashing).
    fits_on_data: bool

    @property
    def dim(self) -> int:
        """Width of encode()'s rows (after fit, for a fitted encoder)."""

    @property
    def version(self) -> str: ...

    def fit(self, train_content: Content) -> None:
        """Learn from the training split's content only (TF-IDF); a no-op when frozen."""

    def encode(
        self, content: Content, *, progress: Progress | None = None
    ) -> np.ndarray:  # (n, d) float32
        ...

    def state(self) -> dict[str, Any]:
        """What fit() learned, as torch tensors and JSON values ({} when nothing)."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Become the encoder whose state() this was (fit() not needed then)."""


class NothingToFit:
    """For encoders whose output does not depend on the job's data: pretrained ones (frozen),
    and the small CNN (whose network trains inside the model, not here)."""

    fits_on_data = False

    def fit(self, train_content: Content) -> None:
        """Nothing to learn from the job's data."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the weights are read from their path again."""


def take(content: Content, rows: np.ndarray | Sequence[int]) -> Content:
    """content[rows] for an array or a list (rows: indices or a boolean mask)."""
    idx = np.arange(len(content))[np.asarray(rows)] if len(content) else np.zeros(0, np.int64)
    if isinstance(content, np.ndarray):
        return content[idx]
    return [content[i] for i in idx]


def batches(items: Sequence[T] | np.ndarray, size: int) -> Iterator[Sequence[T] | np.ndarray]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def encode_batched(
    content: Content,
    batch_size: int,
    encode_batch: Callable[[Any], np.ndarray],
    dim: int,
    progress: Progress | None,
) -> np.ndarray:
    """(n, dim) float32 from encode_batch over consecutive batches, progress after each."""
    out = np.empty((len(content), dim), np.float32)
    done = 0
    for chunk in batches(content, batch_size):
        out[done : done + len(chunk)] = encode_batch(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, len(content))
    return out


def require(module: str, encoder: str, extra: str, package: str | None = None) -> Any:
    """import_module(module), or one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = package or module.split(".")[0]
        raise EncoderUnavailableError(
            f"encoder {encoder!r} needs {pkg}, which is not installed: "
            f"pip install 'softlabels[{extra}]'"
        ) from None


def digest(*parts: Any) -> str:
    """sha256 of the JSON of `parts` (options, library versions, other digests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the texts in order (length-prefixed, so no two lists collide)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def check_texts(content: Content, encoder: str) -> list[str]:
    if isinstance(content, np.ndarray) and content.dtype.kind not in "UO":
        raise JobError(f"encoder {encoder!r} reads texts; got an array of {content.dtype}")
    texts = list(content)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise JobError(
            f"encoder {encoder!r} reads texts; item {bad} is {type(texts[bad]).__name__}"
        )
    return texts


def version_string(name: str, code_version: int, *parts: Any) -> str:
    """'<name>/<code version>/<16 hex digits of the digest of parts>'."""
    return f"{name}/{code_version}/{digest(*parts)[:16]}"


def import_torchvision(encoder: str) -> Any:
    """torchvision, also where its compiled operators cannot load.

    PyPI's Linux torchvision wheels are CUDA builds; next to a CPU-only torch (torch+cpu, as
    scripts/bootstrap installs) their `_C` extension cannot load, and torchvision's import then
    fails registering its detection operators (nms, roi_align). Classification backbones use
    none of them: import torchvision without those registrations. (PyTorch's CPU wheel index
    has a torchvision whose operators load; it needs none of this.) Called before transformers
    and sentence-transformers are imported too: they import torchvision where it is installed,
    and would fail the same way.
    """
    try:
        return require("torchvision", encoder, "vision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed attempt's half-initialized modules
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = types.ModuleType(name)
    log.info("torchvision's compiled operators are unavailable (CPU torch); backbones only")
    import torchvision

    return torchvision


def torchvision_if_installed(encoder: str) -> None:
    """import_torchvision where torchvision is installed (see there); else nothing."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision(encoder)
