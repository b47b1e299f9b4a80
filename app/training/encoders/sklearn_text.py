"""Text encoders with no pretrained weights (scikit-learn): TF-IDF + SVD, and hashing (+ SVD).

Latent semantic analysis: a TF-IDF term matrix reduced by truncated SVD (S. Deerwester,
S. Dumais, G. Furnas, T. Landauer, R. Harshman, "Indexing by latent semantic analysis", JASIS
1990). The vocabulary, the IDF weights and the SVD are fitted on the job's **training split
only** (the trainer passes those texts to `fit`), so validation and test texts never shape the
embedding; test words unseen in training are simply dropped, as they would be for new texts.

The hashing trick (K. Weinberger, A. Dasgupta, J. Langford, A. Smola, J. Attenberg, "Feature
hashing for large scale multitask learning", ICML 2009) needs no vocabulary: the same text
always maps to the same buckets, so its raw output can be cached across jobs; the optional SVD
is again fitted on the training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.training.encoders.base import (
    Content,
    Progress,
    check_texts,
    encode_batched,
    texts_digest,
    version_string,
)
from app.training.encoders.options import HashingOptions, TfidfSvdOptions
from app.training.errors import JobError

CODE_VERSION = 1  # bump when a change here changes the embeddings
BATCH = 4096  # texts per transform call: progress granularity, bounded sparse memory
SEED = 0  # the randomized SVD's seed: the embedding is a function of the training texts


def _svd(dim: int, x: Any, encoder: str) -> np.ndarray:
    """The (k, terms) float32 components of a truncated SVD of the training matrix `x`."""
    from sklearn.decomposition import TruncatedSVD

    n_rows, n_cols = x.shape
    # At most one component per training text or term minus one (randomized SVD's limit).
    k = min(dim, n_rows - 1, n_cols - 1)
    if k < 1:
        raise JobError(
            f"encoder {encoder!r} needs at least 2 training texts and 2 distinct terms "
            f"(got {n_rows} texts, {n_cols} terms)"
        )
    svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=SEED).fit(x)
    return np.ascontiguousarray(svd.components_, dtype=np.float32)


def _project(x: Any, components: np.ndarray) -> np.ndarray:
    # TruncatedSVD.transform is exactly this product; kept as the bare matrix so the fitted
    # encoder travels in a checkpoint as one tensor.
    return np.asarray(x @ components.T, dtype=np.float32)


def _tensor(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


class TfidfSvdEncoder:
    name = "tfidf-svd"
    modality = "text"
    end_to_end = False
    fits_on_data = True

    def __init__(self, options: TfidfSvdOptions, device: str = "cpu") -> None:
        self.options = options
        self._vectorizer: Any = None
        self._components: np.ndarray | None = None
        self._fit_digest: str | None = None

    @property
    def dim(self) -> int:
        return len(self._require_fit())

    @property
    def version(self) -> str:
        self._require_fit()
        import sklearn

        return version_string(
            self.name,
            CODE_VERSION,
            self.options.model_dump(),
            sklearn.__version__,
            self._fit_digest,
        )

    def _new_vectorizer(self, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer

        o = self.options
        return TfidfVectorizer(
            max_features=o.max_features,
            ngram_range=(1, o.ngram_max),
            min_df=o.min_df,
            sublinear_tf=o.sublinear_tf,
            dtype=np.float32,
            vocabulary=vocabulary,
        )

    def fit(self, train_content: Content) -> None:
        texts = check_texts(train_content, self.name)
        self._vectorizer = self._new_vectorizer()
        try:
            x = self._vectorizer.fit_transform(texts)
        except ValueError as exc:  # "empty vocabulary", min_df above the text count, ...
            raise JobError(f"encoder {self.name!r} cannot fit the training texts: {exc}") from None
        self._components = _svd(self.options.dim, x, self.name)
        self._fit_digest = texts_digest(texts)

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        components = self._require_fit()
        texts = check_texts(content, self.name)

        def one(batch: Sequence[str]) -> np.ndarray:
            return _project(self._vectorizer.transform(batch), components)

        return encode_batched(texts, BATCH, one, self.dim, progress)

    def state(self) -> dict[str, Any]:
        components = self._require_fit()
        return {
            "vocabulary": {t: int(i) for t, i in self._vectorizer.vocabulary_.items()},
            "idf": _tensor(self._vectorizer.idf_),
            "components": _tensor(components),
            "fit_digest": self._fit_digest,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._vectorizer = self._new_vectorizer(dict(state["vocabulary"]))
        self._vectorizer.idf_ = state["idf"].numpy()  # the fitted IDF weights, as fit left them
        self._components = state["components"].numpy()
        self._fit_digest = state["fit_digest"]

    def _require_fit(self) -> np.ndarray:
        if self._components is None:
            raise RuntimeError("fit the encoder on the training texts first")
        return self._components


class HashingEncoder:
    name = "hashing"
    modality = "text"
    end_to_end = False

    def __init__(self, options: HashingOptions, device: str = "cpu") -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.options = options
        # Without an SVD the buckets are a pure function of the text: cacheable across jobs.
        self.fits_on_data = options.dim is not None
        # alternate_sign=False: bucket values stay counts-like (non-negative), l2-normalized rows.
        self._vectorizer = HashingVectorizer(
            n_features=options.n_features,
            ngram_range=(1, options.ngram_max),
            alternate_sign=False,
            dtype=np.float32,
        )
        self._components: np.ndarray | None = None
        self._fit_digest: str | None = None

    @property
    def dim(self) -> int:
        if self.options.dim is None:
            return self.options.n_features
        return len(self._require_fit())

    @property
    def version(self) -> str:
        import sklearn

        if self.options.dim is not None:
            self._require_fit()
        return version_string(
            self.name,
            CODE_VERSION,
            self.options.model_dump(),
            sklearn.__version__,
            self._fit_digest,
        )

    def fit(self, train_content: Content) -> None:
        if self.options.dim is None:
            return  # stateless: nothing to learn
        texts = check_texts(train_content, self.name)
        self._components = _svd(self.options.dim, self._vectorizer.transform(texts), self.name)
        self._fit_digest = texts_digest(texts)

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        texts = check_texts(content, self.name)
        components = None if self.options.dim is None else self._require_fit()

        def one(batch: Sequence[str]) -> np.ndarray:
            x = self._vectorizer.transform(batch)
            return x.toarray() if components is None else _project(x, components)  # type: ignore[no-any-return]

        return encode_batched(texts, BATCH, one, self.dim, progress)

    def state(self) -> dict[str, Any]:
        if self._components is None:
            return {}
        return {"components": _tensor(self._components), "fit_digest": self._fit_digest}

    def load_state(self, state: dict[str, Any]) -> None:
        if "components" in state:
            self._components = state["components"].numpy()
            self._fit_digest = state["fit_digest"]

    def _require_fit(self) -> np.ndarray:
        if self._components is None:
            raise RuntimeError("fit the encoder on the training texts first")
        return self._components
