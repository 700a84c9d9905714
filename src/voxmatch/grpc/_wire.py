"""Protobuf wire bytes of the big responses, assembled from NumPy arrays without Python floats.

Filling a `repeated float` field from Python costs a Python float per value: 1,000,000 scores
take about 160 ms through `values.extend(array)` and `SerializeToString`, eight times the whole
in-process work of a 1000 x 1000 comparison. On the wire a packed repeated float is only a tag,
a varint byte count and the raw little-endian float32 values, which NumPy has in memory already.
So the score matrix and the vector voiceprints are written here as bytes and handed to gRPC
with an identity serializer; the client cannot tell the difference (the tests parse every
message with the official classes).

Field numbers, from phonexia/grpc/common/core.proto and speaker_identification.proto:
    CompareResponse { Matrix scores = 1; }
    Matrix { uint64 rows_count = 1; uint64 columns_count = 2; repeated float values = 3; }
    ConvertResponse { repeated Vector vector_voiceprints = 1; }
    Vector { repeated float values = 1; }
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from voxmatch.vectors import has_speech

_VARINT = 0
_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints here are unsigned")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field_number: int, wire_type: int) -> bytes:
    return varint(field_number << 3 | wire_type)


def _length_delimited(field_number: int, payload_size: int) -> bytes:
    """Tag and length of a length-delimited field; the payload follows."""
    return _tag(field_number, _LENGTH_DELIMITED) + varint(payload_size)


def _float_bytes(values: npt.NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def compare_response(
    values: npt.NDArray[np.float32], shape: tuple[int, int] | None = None
) -> bytes:
    """A serialized CompareResponse carrying `values`, and the matrix shape when given."""
    packed = _float_bytes(values)
    matrix = b""
    if shape is not None:
        # proto3 omits zero scalars; a 0 count is never sent since lists are never empty.
        matrix = _tag(1, _VARINT) + varint(shape[0]) + _tag(2, _VARINT) + varint(shape[1])
    matrix_size = len(matrix) + len(_length_delimited(3, len(packed))) + len(packed)
    return b"".join(
        (_length_delimited(1, matrix_size), matrix, _length_delimited(3, len(packed)), packed)
    )


def compare_response_overhead() -> int:
    """Most bytes a CompareResponse adds around its float values (tags, lengths, the shape)."""
    # Outer tag + 10-byte varint, two counts as tag + 10-byte varints, values tag + varint.
    return 1 + 10 + 2 * (1 + 10) + 1 + 10


def matrix_chunks(scores: npt.NDArray[np.float32], max_message_bytes: int) -> Iterator[bytes]:
    """The row-major matrix as CompareResponse messages of at most `max_message_bytes` each.

    The first message carries rows_count and columns_count. Messages hold whole rows when a row
    fits in one; otherwise rows are split (clients concatenate the values of all messages).
    """
    rows, columns = scores.shape
    per_message = (max_message_bytes - compare_response_overhead()) // 4
    if per_message < 1:
        raise ValueError(f"max_message_bytes {max_message_bytes} cannot hold a single score")
    if columns <= per_message:
        per_message -= per_message % columns
    flat = scores.reshape(-1)
    for start in range(0, flat.size, per_message):
        shape = (rows, columns) if start == 0 else None
        yield compare_response(flat[start : start + per_message], shape)


def convert_response(vectors: npt.NDArray[np.float32]) -> bytes:
    """A serialized ConvertResponse: one Vector per row of `vector_voiceprints` output, empty for
    a voiceprint of no speech (see voxmatch.vectors)."""
    keep = has_speech(vectors)
    count, dim = vectors.shape
    payload = dim * 4
    vector_head = _length_delimited(1, payload)  # Vector.values, packed
    entry_head = _length_delimited(1, len(vector_head) + payload)  # ConvertResponse entry
    head = np.frombuffer(entry_head + vector_head, dtype=np.uint8)
    records = np.empty((count, head.size + payload), dtype=np.uint8)
    records[:, : head.size] = head
    records[:, head.size :] = (
        np.ascontiguousarray(vectors, dtype="<f4").view(np.uint8).reshape(count, payload)
    )
    if keep.all():
        return records.tobytes()
    empty_entry = _length_delimited(1, 0)
    return b"".join(
        record.tobytes() if kept else empty_entry
        for record, kept in zip(records, keep.tolist(), strict=True)
    )
