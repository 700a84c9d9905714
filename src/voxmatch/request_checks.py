"""The rules every interface applies to what a request asks for, stated once.

REST, gRPC and the CLI read their requests in their own formats, then hand the values to these
checks; a value that breaks a rule raises `RequestError`, which names the field, the rule that
failed (`reason`, a short stable word) and what is wrong, for a user. Each interface only maps
it to its own convention: an SPE4 422 body whose `location` ends with the field, a gRPC
INVALID_ARGUMENT with the message, a one-line CLI error with exit code 2.

The rules of the audio itself (channel selection, channel mode, time range) live beside the
decoder in voxmatch.audio, which raises `AudioOptionError`, a RequestError too.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Any

FieldPath = tuple[str | int, ...]

MAX_SECONDS = 1e7
"""Largest time option (start, end, speech cap) an interface accepts, about 116 days: far beyond
any recording, and small enough that seconds times any sample rate is an exact integer."""

MAX_TOP_K = 1000
"""Largest `top_k` of a comparison or a gallery search: the result keeps k scores per row, and
past a thousand candidates a ranking is a matrix, which a plain comparison gives."""


class RequestError(ValueError):
    """A request value that breaks a rule: `field` (empty for the request as a whole), `reason`,
    and the message, which is the field's name followed by `problem`."""

    def __init__(
        self,
        field: FieldPath,
        reason: str,
        problem: str,
        context: dict[str, Any] | None = None,
        *,
        subject: str | None = None,
    ) -> None:
        self.field = field
        self.reason = reason
        self.problem = problem
        self.context = context
        self.message = f"{subject or '.'.join(str(part) for part in field)} {problem}"
        super().__init__(self.message)


def check_list_length(field: str, items: Sized | int, max_list_length: int) -> None:
    """A list of voiceprints holds 1 to `max_list_length` items (`items` may be its length)."""
    length = items if isinstance(items, int) else len(items)
    context = {"limit": max_list_length, "length": length}
    if length == 0:
        raise RequestError(
            (field,), "too_short", "is empty: it needs at least one voiceprint", context
        )
    if length > max_list_length:
        raise RequestError(
            (field,),
            "too_long",
            f"has {length} voiceprints, more than {max_list_length} (max_list_length)",
            context,
        )


def check_matrix_size(count_a: int, count_b: int, max_matrix_size: int) -> None:
    """A comparison computes at most `max_matrix_size` scores."""
    product = count_a * count_b
    if product > max_matrix_size:
        raise RequestError(
            (),
            "matrix_too_large",
            f"= {count_a} x {count_b} = {product} exceeds the maximum matrix size"
            f" {max_matrix_size} (max_matrix_size)",
            {"limit": max_matrix_size},
            subject="len(voiceprints_a) x len(voiceprints_b)",
        )


def check_comparison_lists(
    count_a: int, count_b: int, max_list_length: int, max_matrix_size: int
) -> None:
    """The limits of a comparison of voiceprints_a with voiceprints_b: each list 1 to
    `max_list_length`, their product at most `max_matrix_size`."""
    check_list_length("voiceprints_a", count_a, max_list_length)
    check_list_length("voiceprints_b", count_b, max_list_length)
    check_matrix_size(count_a, count_b, max_matrix_size)


def check_top_k_comparison(
    count_a: int, count_b: int, top_k: int, max_list_length: int, max_top_k_scores: int
) -> None:
    """The limits of a comparison that keeps, for each voiceprint of b, the `top_k` best of a:
    each list 1 to `max_list_length`, `top_k` 1 to `MAX_TOP_K`, and len(a) x len(b) at most
    `max_top_k_scores` (the scores computed; the full matrix is never kept)."""
    check_list_length("voiceprints_a", count_a, max_list_length)
    check_list_length("voiceprints_b", count_b, max_list_length)
    if not 1 <= top_k <= MAX_TOP_K:
        raise RequestError(
            ("top_k",),
            "range",
            f"must be 1 to {MAX_TOP_K}, got {top_k}",
            {"minimum": 1, "maximum": MAX_TOP_K},
        )
    product = count_a * count_b
    if product > max_top_k_scores:
        raise RequestError(
            (),
            "matrix_too_large",
            f"= {count_a} x {count_b} = {product} exceeds the most scores of a top_k comparison"
            f" {max_top_k_scores} (max_top_k_scores)",
            {"limit": max_top_k_scores},
            subject="len(voiceprints_a) x len(voiceprints_b)",
        )


def check_growing_comparison_lists(
    count_a: int, count_b: int, max_list_length: int, max_matrix_size: int
) -> None:
    """The upper limits of `check_comparison_lists` on lists still arriving (a stream), so an
    oversized request is refused before it is all read."""
    for field, count in (("voiceprints_a", count_a), ("voiceprints_b", count_b)):
        if count:
            check_list_length(field, count, max_list_length)
    check_matrix_size(count_a, count_b, max_matrix_size)


def speech_cap(seconds: float | None, field: FieldPath = ("max_speech_length",)) -> float | None:
    """The cap on the speech an extraction uses, in seconds; None or 0 means no cap."""
    if seconds is None:
        return None
    if math.isnan(seconds) or seconds < 0:
        raise RequestError(field, "range", f"must not be negative, got {seconds:g} s")
    return seconds or None
