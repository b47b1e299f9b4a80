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


def _svd(dim: int, n_rows: int, n_cols: int, encoder: str) -> Any:
    from sklearn.decomposition import TruncatedSVD

    # At most one component per training text or term minus one (randomized SVD's limit).
    k = min(dim, n_rows - 1, n_cols - 1)
    if k < 1:
        raise JobError(
            f"encoder {encoder!r} needs at least 2 training texts and 2 distinct terms "
            f"(got {n_rows} texts, {n_cols} terms)"
        )
    return TruncatedSVD(n_components=k, algorithm="randomized", random_state=SEED)


class TfidfSvdEncoder:
    name = "tfidf-svd"
    modality = "text"
    end_to_end = False

    def __init__(self, options: TfidfSvdOptions, device: str = "cpu") -> None:
        self.options = options
        self._vectorizer: Any = None
        self._svd: Any = None
        self._fit_digest: str | None = None

    @property
    def dim(self) -> int:
        self._require_fit()
        return int(self._svd.n_components)

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

    def fit(self, train_content: Content) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = check_texts(train_content, self.name)
        o = self.options
        self._vectorizer = TfidfVectorizer(
            max_features=o.max_features,
            ngram_range=(1, o.ngram_max),
            min_df=o.min_df,
            sublinear_tf=o.sublinear_tf,
            dtype=np.float32,
        )
        try:
            x = self._vectorizer.fit_transform(texts)
        except ValueError as exc:  # "empty vocabulary", min_df above the text count, ...
            raise JobError(f"encoder {self.name!r} cannot fit the training texts: {exc}") from None
        self._svd = _svd(o.dim, x.shape[0], x.shape[1], self.name)
        self._svd.fit(x)
        self._fit_digest = texts_digest(texts)

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        self._require_fit()
        texts = check_texts(content, self.name)

        def one(batch: Sequence[str]) -> np.ndarray:
            return self._svd.transform(self._vectorizer.transform(batch))  # type: ignore[no-any-return]

        return encode_batched(texts, BATCH, one, self.dim, progress)

    def _require_fit(self) -> None:
        if self._svd is None:
            raise RuntimeError("fit the encoder on the training texts first")


class HashingEncoder:
    name = "hashing"
    modality = "text"
    end_to_end = False

    def __init__(self, options: HashingOptions, device: str = "cpu") -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.options = options
        # alternate_sign=False: bucket values stay counts-like (non-negative), l2-normalized rows.
        self._vectorizer = HashingVectorizer(
            n_features=options.n_features,
            ngram_range=(1, options.ngram_max),
            alternate_sign=False,
            dtype=np.float32,
        )
        self._svd: Any = None
        self._fit_digest: str | None = None

    @property
    def dim(self) -> int:
        if self.options.dim is None:
            return self.options.n_features
        self._require_fit()
        return int(self._svd.n_components)

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
        x = self._vectorizer.transform(texts)
        self._svd = _svd(self.options.dim, x.shape[0], x.shape[1], self.name)
        self._svd.fit(x)
        self._fit_digest = texts_digest(texts)

    def encode(self, content: Content, *, progress: Progress | None = None) -> np.ndarray:
        texts = check_texts(content, self.name)
        if self.options.dim is not None:
            self._require_fit()

        def one(batch: Sequence[str]) -> np.ndarray:
            x = self._vectorizer.transform(batch)
            return x.toarray() if self._svd is None else self._svd.transform(x)  # type: ignore[no-any-return]

        return encode_batched(texts, BATCH, one, self.dim, progress)

    def _require_fit(self) -> None:
        if self._svd is None:
            raise RuntimeError("fit the encoder on the training texts first")
