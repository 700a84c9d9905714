"""The request rules every interface shares: each reason, its field and its message."""

from __future__ import annotations

import math

import pytest

from voxmatch.audio import (
    MAX_CHANNELS,
    AudioError,
    TimeRange,
    parse_channel_mode,
    parse_channels,
    stream_audio,
)
from voxmatch.request_checks import (
    RequestError,
    check_comparison_lists,
    check_growing_comparison_lists,
    check_list_length,
    speech_cap,
)


def test_a_list_holds_one_to_max_list_length_voiceprints() -> None:
    check_list_length("voiceprints", ["a"], 1)
    check_list_length("voiceprints", 5, 5)
    with pytest.raises(RequestError) as empty:
        check_list_length("voiceprints", [], 5)
    assert (empty.value.field, empty.value.reason) == (("voiceprints",), "too_short")
    assert empty.value.message.startswith("voiceprints is empty")
    with pytest.raises(RequestError) as long:
        check_list_length("voiceprints", 6, 5)
    assert (long.value.field, long.value.reason) == (("voiceprints",), "too_long")
    assert long.value.context == {"limit": 5, "length": 6}
    assert "more than 5 (max_list_length)" in long.value.message


def test_a_comparison_checks_each_list_then_the_matrix() -> None:
    check_comparison_lists(3, 4, max_list_length=4, max_matrix_size=12)
    with pytest.raises(RequestError) as first_empty:
        check_comparison_lists(0, 0, 4, 12)
    assert first_empty.value.field == ("voiceprints_a",)
    with pytest.raises(RequestError) as second_long:
        check_comparison_lists(1, 5, 4, 12)
    assert (second_long.value.field, second_long.value.reason) == (("voiceprints_b",), "too_long")
    with pytest.raises(RequestError) as matrix:
        check_comparison_lists(4, 4, 4, 12)
    assert (matrix.value.field, matrix.value.reason) == ((), "matrix_too_large")
    assert matrix.value.context == {"limit": 12}
    assert matrix.value.message == (
        "len(voiceprints_a) x len(voiceprints_b) = 4 x 4 = 16 exceeds the maximum matrix size 12"
        " (max_matrix_size)"
    )


def test_lists_still_arriving_may_be_empty_but_not_too_long() -> None:
    check_growing_comparison_lists(0, 0, 4, 12)
    check_growing_comparison_lists(4, 0, 4, 12)
    with pytest.raises(RequestError, match="voiceprints_a has 5"):
        check_growing_comparison_lists(5, 0, 4, 12)
    with pytest.raises(RequestError) as matrix:
        check_growing_comparison_lists(4, 4, 4, 12)
    assert matrix.value.reason == "matrix_too_large"


def test_a_speech_cap_of_zero_or_none_is_no_cap() -> None:
    assert speech_cap(None) is None
    assert speech_cap(0.0) is None
    assert speech_cap(20.0) == 20.0
    for bad in (-1.0, math.nan):
        with pytest.raises(RequestError) as caught:
            speech_cap(bad, ("config", "speech_length"))
        assert (caught.value.field, caught.value.reason) == (("config", "speech_length"), "range")
        assert caught.value.message.startswith("config.speech_length must not be negative")


def test_channels_are_numbers_below_max_channels_each_once() -> None:
    assert parse_channels(" ") is None
    assert parse_channels("1, 0") == [1, 0]
    assert parse_channels(str(MAX_CHANNELS - 1)) == [MAX_CHANNELS - 1]
    for text in ("0,x", str(MAX_CHANNELS), "-1", "\u00b2", "1" * 5000, "0,,1"):
        with pytest.raises(RequestError) as caught:
            parse_channels(text)
        assert (caught.value.field, caught.value.reason) == (("channels",), "channels_invalid")
        assert caught.value.message.startswith("channels must be like 0,1")
    with pytest.raises(RequestError) as twice:
        parse_channels("0,1,0")
    assert (twice.value.reason, twice.value.message) == (
        "channels_invalid",
        "channel 0 is listed twice",
    )


def test_the_decoder_applies_the_same_channel_rules() -> None:
    # A Python caller's list meets the rules a request's text does, as an AudioError too.
    for channels, expected in (([], "the channel list is empty"), ([2, 2], "listed twice")):
        with pytest.raises(AudioError, match=expected) as caught:
            stream_audio(b"not read", channels=channels)
        assert isinstance(caught.value, RequestError)
        assert caught.value.reason == "channels_invalid"


def test_the_channel_mode_is_split_or_mix() -> None:
    assert parse_channel_mode("split") == "split"
    assert parse_channel_mode("mix") == "mix"
    with pytest.raises(RequestError) as caught:
        parse_channel_mode(3)
    assert (caught.value.field, caught.value.reason) == (("channel_mode",), "enum")
    assert caught.value.message == "channel_mode must be 'split' or 'mix', got 3"


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        (-1.0, None, "start", "time range start must be a finite number >= 0, got -1.0"),
        (None, math.inf, "end", "time range end must be a finite number >= 0, got inf"),
        (5.0, 5.0, "end", "time range end (5 s) must be after its start (5 s)"),
    ],
)
def test_a_time_range_is_finite_and_ends_after_it_starts(
    start: float | None, end: float | None, field: str, message: str
) -> None:
    assert TimeRange(1.0, 2.5) == TimeRange(start=1.0, end=2.5)
    with pytest.raises(AudioError) as caught:
        TimeRange(start, end)
    assert isinstance(caught.value, RequestError)
    assert (caught.value.field, caught.value.reason, caught.value.message) == (
        (field,),
        "range",
        message,
    )
