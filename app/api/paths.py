"""Path convertors shared by the routers: importing this module registers them."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class ItemIdConvertor(Convertor[str]):
    """Any item id in a path: "/" and newlines included (sent percent-encoded).

    Item ids are often file paths ("train/cat_01.jpg"); a plain `{item}` cannot match an id with
    "/" (a %2F is decoded before routing), and Starlette's `path` (".*") stops at a newline.
    """

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("item_id", ItemIdConvertor())
