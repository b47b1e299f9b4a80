"""The `encoder` section of a training config: how item content becomes tensors.

Pure pydantic (no torch, scikit-learn, transformers or torchvision import): the API validates
training configs with these models, and its start-up time must not grow with the encoders.
Every model forbids unknown keys; `name` picks the encoder (a discriminated union, so an error
is located at e.g. ("encoder", "tfidf-svd", "dim")).
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A path or a model name in the user's local cache: not empty, no control characters.
_PATH = r"^[^\x00-\x1f]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeaturesInput(_Strict):
    name: Literal["features"] = Field(
        "features", description="The items' own feature vectors (`POST /items` with features)."
    )


class TfidfSvdOptions(_Strict):
    name: Literal["tfidf-svd"]
    dim: int = Field(256, ge=2, le=4096, description="SVD components (embedding width).")
    max_features: int = Field(
        50_000, ge=16, le=2_000_000, description="Vocabulary size (most frequent terms)."
    )
    ngram_max: int = Field(2, ge=1, le=3, description="Word n-grams 1..ngram_max.")
    min_df: int = Field(1, ge=1, le=1000, description="Drop terms in fewer training texts.")
    sublinear_tf: bool = Field(True, description="1 + log(tf) instead of raw counts.")


class HashingOptions(_Strict):
    name: Literal["hashing"]
    n_features: int = Field(
        2**18, ge=2**4, le=2**24, description="Hash buckets (the sparse width)."
    )
    ngram_max: int = Field(2, ge=1, le=3, description="Word n-grams 1..ngram_max.")
    dim: int | None = Field(
        256,
        ge=2,
        le=4096,
        description="SVD components fitted on the training split; null = the raw buckets.",
    )

    @model_validator(mode="after")
    def _dense_width(self) -> HashingOptions:
        if self.dim is None and self.n_features > 2**14:
            # Without SVD the buckets become dense model inputs: 2**18 floats per item is
            # a 1 MB row and a 67M-weight first layer.
            raise ValueError(
                f"dim null feeds n_features={self.n_features} dense inputs to the model; "
                "set n_features <= 16384 or a dim"
            )
        return self


class SentenceTransformerOptions(_Strict):
    name: Literal["sentence-transformer"]
    path: str = Field(
        ...,
        pattern=_PATH,
        max_length=4096,
        description="Local model directory, or a model name already in the local HF cache.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Texts per encoding batch.")
    normalize: bool = Field(False, description="L2-normalize the embeddings.")


class TransformersOptions(_Strict):
    name: Literal["transformers"]
    path: str = Field(
        ...,
        pattern=_PATH,
        max_length=4096,
        description="Local model directory, or a model name already in the local HF cache.",
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="Mean of the token states (attention mask) or the first token's."
    )
    max_length: int = Field(256, ge=8, le=8192, description="Tokens per text (truncated).")
    batch_size: int = Field(32, ge=1, le=4096, description="Texts per encoding batch.")


class SmallCNNOptions(_Strict):
    name: Literal["small-cnn"]
    size: int = Field(
        32, ge=32, le=512, description="Images are resized to size x size RGB (bilinear)."
    )
    widths: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [32, 64, 128],
        min_length=1,
        max_length=6,
        description="Channels of each conv block (conv3x3-BN-ReLU-maxpool2).",
    )
    augment: bool = Field(
        True, description="Random crop (4-pixel padding) and horizontal flip while training."
    )

    @model_validator(mode="after")
    def _pools_fit(self) -> SmallCNNOptions:
        if self.size >> len(self.widths) < 1:
            raise ValueError(f"{len(self.widths)} blocks halve {self.size} px to nothing")
        return self


class TorchvisionOptions(_Strict):
    name: Literal["torchvision"]
    arch: str = Field(
        "resnet18",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="A torchvision.models builder name (resnet18, mobilenet_v3_small, ...).",
    )
    weights_path: str = Field(
        ...,
        pattern=_PATH,
        max_length=4096,
        description="Local file holding the model's state_dict (torch.save or .safetensors).",
    )
    size: int = Field(224, ge=16, le=1024, description="Images are resized to size x size.")
    batch_size: int = Field(64, ge=1, le=4096, description="Images per encoding batch.")


EncoderOptions = Annotated[
    FeaturesInput
    | TfidfSvdOptions
    | HashingOptions
    | SentenceTransformerOptions
    | TransformersOptions
    | SmallCNNOptions
    | TorchvisionOptions,
    Field(discriminator="name"),
]

TEXT_ENCODERS = ("tfidf-svd", "hashing", "sentence-transformer", "transformers")
IMAGE_ENCODERS = ("small-cnn", "torchvision")
# Trained with the model (end to end) rather than producing fixed embeddings first.
END_TO_END = ("small-cnn",)


def head_input_width(options: BaseModel) -> int | None:
    """Width of the rows the model's head trains on, where the options alone tell it (the
    server's model-size limit counts them); None for a pretrained encoder, whose width is
    known once its weights load."""
    if isinstance(options, TfidfSvdOptions):
        return options.dim
    if isinstance(options, HashingOptions):
        return options.dim or options.n_features
    if isinstance(options, SmallCNNOptions):
        return options.widths[-1]
    return None


def trunk_params(options: BaseModel) -> int:
    """Trainable weights of an end-to-end encoder's network (conv3x3 without bias + BatchNorm)."""
    if not isinstance(options, SmallCNNOptions):
        return 0
    widths = [3, *options.widths]
    return sum(9 * a * b + 2 * b for a, b in itertools.pairwise(widths))
