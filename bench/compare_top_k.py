"""End-to-end REST comparison with `top_k` against in-process floors of the same work.

For each shape (len(a) x len(b), k), two floors are measured in this process:
- the kernel floor, the least the server must do: decode the request body (JSON, base64,
  voiceprint checks), rank a for every voiceprint of b with `top_k.search_top_k` (slices of
  b as the task ranks them), and encode the result JSON; one BLAS thread, as the server's task;
- the matrix floor, the obvious NumPy way: decode, the whole score matrix, `np.argpartition`
  and a sort of the k best per row, and the same JSON. It needs len(a) x len(b) floats at once.
The end-to-end time is a real client against a real `voxmatch serve` on loopback: POST, poll
until done, GET the JSON. Ratios are end-to-end / kernel floor (target <= 2), and kernel floor
/ matrix floor (how the blocked ranking compares with ranking the whole matrix).

    .venv/bin/python -m bench.compare_top_k [--repeats N]
"""

from __future__ import annotations

import argparse
import functools
import sys

import msgspec
import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from bench._common import measure, random_voiceprints, running_server
from bench.compare_rest import Client, end_to_end
from voxmatch._malloc import retain_freed_memory
from voxmatch.models.registry import describe
from voxmatch.scoring import Traits, score_matrix
from voxmatch.tasks.jobs import TOP_K_ROWS
from voxmatch.top_k import search_top_k
from voxmatch.voiceprint import VoiceprintBatch, decode_base64_batch

SHAPES = [(50_000, 20, 10), (50_000, 1000, 10), (10_000, 1000, 100)]
"""(len(a), len(b), k): a few calls against a watchlist; many calls, beyond max_matrix_size."""


class Body(msgspec.Struct):
    voiceprints_a: list[str]
    voiceprints_b: list[str]
    top_k: int


_decoder = msgspec.json.Decoder(Body)


def _decoded(body: bytes) -> tuple[VoiceprintBatch, VoiceprintBatch, int]:
    request = _decoder.decode(body)
    batch_a = decode_base64_batch(request.voiceprints_a)
    batch_b = decode_base64_batch(request.voiceprints_b, model=batch_a.model)
    return batch_a, batch_b, min(request.top_k, len(batch_a))


def _rendered(indices: np.ndarray, scores: np.ndarray) -> bytes:
    return orjson.dumps(
        {
            "task": {"task_id": "00000000-0000-0000-0000-000000000000", "state": "done"},
            "result": {
                "top_k": {
                    "rows_count": indices.shape[0],
                    "k": indices.shape[1],
                    "indices": np.ascontiguousarray(indices, np.int32).reshape(-1),
                    "scores": np.ascontiguousarray(scores, np.float32).reshape(-1),
                }
            },
            "error": None,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def kernel_floor(body: bytes) -> bytes:
    batch_a, batch_b, k = _decoded(body)
    calibration = describe(batch_a.model).calibration
    traits_a, traits_b = Traits.of(batch_a), Traits.of(batch_b)
    indices = np.empty((len(batch_b), k), np.int32)
    scores = np.empty((len(batch_b), k), np.float32)
    for start in range(0, len(batch_b), TOP_K_ROWS):
        stop = min(start + TOP_K_ROWS, len(batch_b))
        found = search_top_k(
            batch_b.embeddings[start:stop],
            batch_a.embeddings,
            calibration,
            k,
            row_traits=traits_b[start:stop],
            column_traits=traits_a,
        )
        indices[start:stop], scores[start:stop] = found.columns, found.scores
    return _rendered(indices, scores)


def matrix_floor(body: bytes) -> bytes:
    batch_a, batch_b, k = _decoded(body)
    matrix = score_matrix(
        batch_b.embeddings,
        batch_a.embeddings,
        describe(batch_a.model).calibration,
        row_traits=Traits.of(batch_b),
        column_traits=Traits.of(batch_a),
    )
    width = matrix.shape[1]
    best = np.argpartition(matrix, width - k, axis=1)[:, width - k :]
    best_scores = np.take_along_axis(matrix, best, axis=1)
    order = np.argsort(-best_scores, axis=1)
    indices = np.take_along_axis(best, order, axis=1)
    return _rendered(indices, np.take_along_axis(best_scores, order, axis=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    retain_freed_memory()
    # As the server runs every task (`blas_threads`): idle OpenBLAS threads would spin on the
    # core the ranking between two products needs.
    threadpool_limits(1, user_api="blas")

    ratios = []
    with running_server() as endpoints:
        for count_a, count_b, k in SHAPES:
            body = orjson.dumps(
                {
                    "voiceprints_a": random_voiceprints(count_a, seed=1),
                    "voiceprints_b": random_voiceprints(count_b, seed=2),
                    "top_k": k,
                }
            )
            kernel = measure(functools.partial(kernel_floor, body), args.repeats)
            matrix = measure(functools.partial(matrix_floor, body), args.repeats)
            # A fresh connection: the floors take longer than the server keeps an idle one.
            client = Client(endpoints["rest"])
            e2e = measure(functools.partial(end_to_end, client, body), args.repeats)
            ratio = e2e.best / kernel.best
            ratios.append(ratio)
            print(f"{count_a} x {count_b}, top_k {k} ({len(body) / 1e6:.1f} MB request)")
            print(f"  kernel floor (in-process)  {kernel}")
            print(f"  matrix floor (in-process)  {matrix}")
            print(f"  end to end over HTTP       {e2e}")
            print(f"  ratio end-to-end / kernel  {ratio:.2f}  (target <= 2)")
            print(f"  ratio kernel / matrix      {kernel.best / matrix.best:.2f}")
    return 0 if all(ratio <= 2 for ratio in ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
