"""Encoders: how a training job turns item content (texts, images) into tensors.

One module per family, one registry by name. Building an encoder imports its module and then
its library (scikit-learn, transformers, sentence-transformers, torchvision, Pillow); importing
this package imports none of them, so the API (which validates configs with `options`) does
not pay for them.

| name                   | content | kind       | needs                                    |
|------------------------|---------|------------|------------------------------------------|
| `tfidf-svd`            | text    | fitted     | core install (scikit-learn)              |
| `hashing`              | text    | fitted/none| core install (scikit-learn)              |
| `sentence-transformer` | text    | frozen     | softlabels[text] + a local model         |
| `transformers`         | text    | frozen     | softlabels[text] + a local model         |
| `small-cnn`            | image   | end to end | core install (torch); Pillow to resize   |
| `torchvision`          | image   | frozen     | softlabels[vision] + a local weights file|
"""

from __future__ import annotations

import importlib
from typing import Any

from app.training.encoders.base import (
    Content,
    Encoder,
    EncoderUnavailableError,
    Progress,
    take,
)
from app.training.encoders.options import (
    END_TO_END,
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    EncoderOptions,
    FeaturesInput,
)

__all__ = [
    "END_TO_END",
    "IMAGE_ENCODERS",
    "REGISTRY",
    "TEXT_ENCODERS",
    "Content",
    "Encoder",
    "EncoderOptions",
    "EncoderUnavailableError",
    "FeaturesInput",
    "Progress",
    "build_encoder",
    "build_trunk",
    "take",
]

# name -> "module:class", imported on first use
REGISTRY: dict[str, str] = {
    "tfidf-svd": "app.training.encoders.sklearn_text:TfidfSvdEncoder",
    "hashing": "app.training.encoders.sklearn_text:HashingEncoder",
    "sentence-transformer": "app.training.encoders.transformers_text:SentenceTransformerEncoder",
    "transformers": "app.training.encoders.transformers_text:TransformersEncoder",
    "small-cnn": "app.training.encoders.small_cnn:SmallCNNEncoder",
    "torchvision": "app.training.encoders.torchvision_backbone:TorchvisionEncoder",
}


def build_encoder(options: Any, device: str = "cpu") -> Encoder:
    """The encoder that `options` (an EncoderOptions model) names, on `device` ("cpu",
    "cuda", ...). Pretrained ones load their weights now: a missing library or model raises
    EncoderUnavailableError, one line naming the fix."""
    if options.name not in REGISTRY:
        raise ValueError(f"no encoder {options.name!r}; known: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[options.name].split(":")
    encoder: Encoder = getattr(importlib.import_module(module), cls)(options, device)
    return encoder


def build_trunk(options: Any) -> Any:
    """The trainable network of an end-to-end encoder (small-cnn), else None: what the model
    puts between its input standardization and its head."""
    if options.name not in END_TO_END:
        return None
    return build_encoder(options).trunk()  # type: ignore[attr-defined]
