"""The options of an extraction, from query parameters, form fields and the `config` field.

SPE4 takes the options as query parameters, and newer versions also as a form field `config`
holding a JSON object; HTML forms and many clients send them as plain form fields. All three
are read with the same checks. An option given in more than one place must have the same value
everywhere, else the request is refused (422): no silent precedence to guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types
import msgspec
from pydantic import AllowInfNan, TypeAdapter, ValidationError

from voxmatch.audio import TimeRange, parse_channel_mode, parse_channels
from voxmatch.request_checks import MAX_SECONDS as MAX_SECONDS  # the bound of Seconds, in docs
from voxmatch.request_checks import RequestError
from voxmatch.rest.errors import Location, request_error, validation_error
from voxmatch.tasks import JsonObject

Seconds = Annotated[
    float, annotated_types.Ge(0), annotated_types.Le(MAX_SECONDS), AllowInfNan(False)
]
PositiveSeconds = Annotated[
    float, annotated_types.Gt(0), annotated_types.Le(MAX_SECONDS), AllowInfNan(False)
]

OPTION_NAMES = (
    "channel_mode",
    "channels",
    "include_vector_voiceprint",
    "max_speech_length",
    "start",
    "end",
)
CONFIG_FIELD = "config"


@dataclass(frozen=True)
class ExtractionOptions:
    channel_mode: str = "split"
    channels: list[int] | None = None
    include_vector_voiceprint: bool = False
    max_speech_length: float | None = None
    start: float | None = None
    end: float | None = None

    def params(self) -> JsonObject:
        return {name: getattr(self, name) for name in OPTION_NAMES}


def _channel_mode(value: object, location: Location) -> str:
    try:
        return parse_channel_mode(value)
    except RequestError as error:
        raise request_error(error, location) from None


def _channels(value: object, location: Location) -> list[int] | None:
    # A JSON list is read as the text it stands for, so both forms meet the same rules.
    if isinstance(value, list) and all(
        isinstance(number, int) and not isinstance(number, bool) and number >= 0 for number in value
    ):
        value = ",".join(str(number) for number in value)
    if isinstance(value, str):
        try:
            return parse_channels(value)
        except RequestError as error:
            raise request_error(error, location) from None
    raise validation_error(
        location,
        f"channels must be a list of channel numbers or a text like 0,1; got {value!r}",
        "channels_invalid",
    )


def _checked_by(adapter: TypeAdapter[Any]) -> Callable[[object, Location], Any]:
    def check(value: object, location: Location) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as error:
            problem = error.errors()[0]
            raise validation_error(location, problem["msg"], problem["type"]) from None

    return check


_CHECKS: dict[str, Callable[[object, Location], Any]] = {
    "channel_mode": _channel_mode,
    "channels": _channels,
    "include_vector_voiceprint": _checked_by(TypeAdapter(bool)),
    "max_speech_length": _checked_by(TypeAdapter(PositiveSeconds)),
    "start": _checked_by(TypeAdapter(Seconds)),
    "end": _checked_by(TypeAdapter(PositiveSeconds)),
}


def _config_values(text: str) -> dict[str, Any]:
    """The JSON object of the `config` field (unknown keys are ignored, as SPE4 ignores them)."""
    location: Location = ["body", CONFIG_FIELD]
    try:
        decoded = msgspec.json.decode(text)
    except msgspec.DecodeError as error:
        raise validation_error(
            location, f"config cannot be read as JSON: {error}", "json_invalid"
        ) from None
    if not isinstance(decoded, dict):
        raise validation_error(
            location, f"config must be a JSON object, got {type(decoded).__name__}", "type_error"
        )
    return decoded


def parse_options(query: Mapping[str, object], form: Mapping[str, str]) -> ExtractionOptions:
    """Check every option wherever it was given; raise ApiError (422) naming the first problem.

    `query` holds the query parameters that were given (absent ones are None); `form` the text
    fields of the multipart body. An empty form field counts as not given.
    """
    config_text = form.get(CONFIG_FIELD, "")
    config = _config_values(config_text) if config_text.strip() else {}
    chosen: dict[str, Any] = {}
    where: dict[str, Location] = {}
    for name in OPTION_NAMES:
        given: list[tuple[Location, object]] = []
        if query.get(name) is not None:
            given.append((["query", name], query[name]))
        if form.get(name, "") != "":
            given.append((["body", name], form[name]))
        if config.get(name) is not None:
            given.append((["body", CONFIG_FIELD, name], config[name]))
        for location, value in given:
            parsed = _CHECKS[name](value, location)
            if name not in chosen:
                chosen[name], where[name] = parsed, location
            elif parsed != chosen[name]:
                raise validation_error(
                    location,
                    f"{name} is given twice with different values: {chosen[name]!r} in"
                    f" {_place(where[name])} and {parsed!r} in {_place(location)}",
                    "conflict",
                )
    options = ExtractionOptions(**chosen)
    try:
        TimeRange(options.start, options.end)
    except RequestError as error:
        raise request_error(error, where[str(error.field[0])]) from None
    return options


def _place(location: Location) -> str:
    if location[0] == "query":
        return "the query"
    if len(location) == 3:
        return "the config field"
    return "a form field"
