"""The input rows the domain accepts: a vote and an item, validated field by field.

Owned by the write path (app/votes/ingest.py) and shared by everything that feeds it: the API's
request bodies (app/api/schemas.py wraps them in batches), the CLI's file imports and the
labeling-tool connectors. Pure pydantic: nothing here knows about HTTP or the database session.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.db.models import MAX_EXTERNAL_ID


def no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


ExternalId = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_EXTERNAL_ID),
    AfterValidator(no_nul),
]
ClassName = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=256), AfterValidator(no_nul)
]


# Class indices are small; a longer run of digits is a name (or junk), never a 5,000-digit int.
MAX_INDEX_DIGITS = 9


def index_text(text: str) -> int | None:
    """The class (or job) index a text cell spells in ASCII digits, else None.

    str.isdigit() also holds for "²" or "٣", which int() refuses or reads as another number,
    and int() refuses more than 4,300 digits: both were 500s from client input."""
    if 0 < len(text) <= MAX_INDEX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def _class_ref(value: Any) -> str | int:
    # One clear error instead of one per union branch (and no bool-as-int surprise).
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a class name (string) or a 0-based class index (integer)")
    return value


# A class given by name, or by its 0-based index in the project's class list.
ClassRef = Annotated[str | int, PlainValidator(_class_ref, json_schema_input_type=str | int)]

# A multi-label vote ticks at most every class of the largest project (1000 classes).
MAX_TICKS = 1000


def _vote_label(value: Any) -> str | int | list[str | int]:
    # One class or level (single-label and ordinal projects), or the list of classes ticked
    # (multi-label projects). Which one the project takes is checked against the project
    # (app/votes/ingest.py), which knows its task type; this only checks the shape.
    if isinstance(value, list):
        if len(value) > MAX_TICKS:
            raise ValueError(f"lists at most {MAX_TICKS} classes")
        for ref in value:
            if isinstance(ref, bool) or not isinstance(ref, str | int):
                raise ValueError(
                    "must list class names (strings) or 0-based class indices (integers)"
                )
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(
            "must be a class name (string) or a 0-based class index (integer), or for a "
            "multi-label project a list of them"
        )
    return value


VoteLabel = Annotated[
    str | int | list[str | int],
    PlainValidator(_vote_label, json_schema_input_type=str | int | list[str | int]),
]


FLOAT32_MAX = 3.4028234663852886e38


def _float32(value: float) -> float:
    # Features are stored as 32-bit floats (PostgreSQL `real`): larger magnitudes would overflow
    # in the database (a 500); smaller ones round to what is stored, 1e-50 to 0.0.
    if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        raise ValueError(f"must be within +/-{FLOAT32_MAX:.4g} (a 32-bit float)")
    return float(struct.unpack("f", struct.pack("f", value))[0])


Feature = Annotated[float, Field(allow_inf_nan=False), AfterValidator(_float32)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- items and votes --------------------------------------------------------------------------


# --- content: what an item is, for training on texts and images -------------------------------

MAX_TEXT_CHARS = 1_000_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# The formats Pillow reads without extra plugins, by their first bytes: anything else is refused
# here rather than found unreadable by a training job hours later.
IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"BM": "image/bmp",
}


def image_media_type(data: bytes) -> str | None:
    """The media type of an encoded image by its signature (WebP: RIFF....WEBP), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((m for sig, m in IMAGE_SIGNATURES.items() if data.startswith(sig)), None)


def image_bytes(value: Any) -> bytes:
    """An image file from its base64 text (PNG, JPEG, GIF, BMP or WebP, at most
    MAX_IMAGE_BYTES); ValueError saying what is wrong."""
    if not isinstance(value, str):
        raise ValueError("must be the image file's bytes in base64 (a string)")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"is {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,}")
    if image_media_type(data) is None:
        raise ValueError("is not a PNG, JPEG, GIF, BMP or WebP file")
    return data


def _image_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


ImageBytes = Annotated[bytes, PlainValidator(image_bytes, json_schema_input_type=str)]
ImageUrl = Annotated[
    StrictStr, StringConstraints(min_length=8, max_length=4096), AfterValidator(_image_url)
]
Text = Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT_CHARS), AfterValidator(no_nul)]


class ItemIn(Strict):
    id: ExternalId
    features: list[Feature] | None = Field(default=None, min_length=1, max_length=100_000)
    gold: ClassRef | None = None
    meta: dict[str, Any] | None = None
    text: Text | None = Field(default=None, description="The item's text, for text encoders.")
    image: ImageBytes | None = Field(
        default=None,
        description="The item's image file (PNG, JPEG, GIF, BMP or WebP), base64-encoded.",
    )
    image_url: ImageUrl | None = Field(
        default=None,
        description="Where the worker fetches the item's image (http or https; the network "
        "policy applies).",
    )

    @field_validator("image_url")
    @classmethod
    def _one_image(cls, value: str | None, info: ValidationInfo) -> str | None:
        # `image` is validated first (field order), so a bad image is reported as itself.
        if value is not None and info.data.get("image") is not None:
            raise ValueError("give `image` or `image_url`, not both")
        return value

    def has_content(self) -> bool:
        return any(f in self.model_fields_set for f in ("text", "image", "image_url"))


class VoteIn(Strict):
    item: ExternalId
    worker: ExternalId
    label: VoteLabel = Field(
        description="Single-label project: the class (name, or 0-based index). Ordinal: the "
        "level (name, or 0-based index on the scale). Multi-label: the list of classes the "
        "worker ticked, names or indices, [] when none apply."
    )
