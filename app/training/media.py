"""Fetching the images items name by URL, for a training job or a prediction.

Every request goes through app/outbound.py, so the network policy applies (no loopback,
private or cloud-metadata address unless the admin allowed its network), with its redirect
checks, deadline and a byte cap of one image (MAX_IMAGE_BYTES, as for an upload).

An http(s) URL is fetched as it is. Where a URL needs credentials -- a Label Studio media path
such as `/data/upload/1/x.png`, relative to the Label Studio the item came from and readable
with its token -- a `Resolver` from the connector that stored it (app/connectors/media.py)
turns (URL, source) into the absolute URL and the headers to send; this module knows no
connector. A few threads fetch at once: the time is the remote's, not this process's CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from app import outbound
from app.training.errors import JobError
from app.votes.records import MAX_IMAGE_BYTES, image_media_type

THREADS = 8  # concurrent fetches: enough to hide latency, few enough not to flood a server

# (url, source) -> (absolute URL, headers); raises MediaError when it cannot be fetched.
Resolver = Callable[[str, str | None], tuple[str, dict[str, str]]]


class MediaError(JobError):
    """An image could not be had; the message names what failed, never what a server sent."""


def direct(url: str, source: str | None) -> tuple[str, dict[str, str]]:
    """The resolver with no connector: absolute http(s) URLs only, sent without credentials."""
    if url.startswith(("http://", "https://")):
        return url, {}
    raise MediaError(
        f"{url[:80]!r} is not an http(s) URL and no connector resolves it (a Label Studio "
        "path needs the project's Label Studio connector with its url and token)"
    )


def fetch_one(
    url: str, source: str | None, resolve: Resolver, policy: outbound.Policy | None = None
) -> bytes:
    target, headers = resolve(url, source)
    try:
        reply = outbound.request(
            "GET", target, headers=headers, policy=policy, max_bytes=MAX_IMAGE_BYTES
        )
    except outbound.OutboundError as exc:
        raise MediaError(str(exc)) from None
    if not 200 <= reply.status < 300:
        raise MediaError(f"the server answered HTTP {reply.status}")
    if image_media_type(reply.body) is None:
        raise MediaError("the reply is not a PNG, JPEG, GIF, BMP or WebP file")
    return reply.body


def fetch_all(
    urls: Sequence[tuple[str, str | None]],
    resolve: Resolver = direct,
    *,
    names: Sequence[str] | None = None,
    policy: outbound.Policy | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int = THREADS,
) -> list[bytes]:
    """The bytes behind each (url, source), in order, fetched `threads` at a time.

    Any failure fails the whole call, with one line: how many failed and why the first did,
    named by `names[i]` (an item id) or by its position; progress(done, total) after each."""
    if not urls:
        return []
    out: list[bytes | None] = [None] * len(urls)
    errors: list[tuple[int, str]] = []

    def one(i: int) -> None:
        try:
            out[i] = fetch_one(*urls[i], resolve, policy)
        except MediaError as exc:
            errors.append((i, str(exc)))

    done = 0
    with ThreadPoolExecutor(max_workers=min(threads, len(urls))) as pool:
        for _ in pool.map(one, range(len(urls))):
            done += 1
            if progress is not None:
                progress(done, len(urls))
    if errors:
        i, why = min(errors)
        who = f"item {names[i]!r}" if names is not None else f"image {i}"
        raise MediaError(
            f"{len(errors)} of {len(urls)} images could not be fetched; the first, {who}: {why}"
        )
    return [b for b in out if b is not None]
