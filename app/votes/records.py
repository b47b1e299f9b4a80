"""The input rows the domain accepts: a vote and an item, validated field by field.

Owned by the write path (app/votes/ingest.py) and shared by everything that feeds it: the API's
request bodies (app/api/schemas.py wraps them in batches), the CLI's file imports and the
labeling-tool connectors. Pure pydantic: nothing here knows about HTTP or the database session.
"""

from __future__ import annotations

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


class ItemIn(Strict):
    id: ExternalId
    features: list[Feature] | None = Field(default=None, min_length=1, max_length=100_000)
    gold: ClassRef | None = None
    meta: dict[str, Any] | None = None


class VoteIn(Strict):
    item: ExternalId
    worker: ExternalId
    label: ClassRef
