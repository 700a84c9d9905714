"""The approximate gallery index (`gallery_index = "hnsw"`) against exact search: recall@10,
search time, build time, on structured synthetic voiceprints.

In-process (`voxmatch.galleries.GalleryStore` on a temporary folder: the real SQLite file and
embeddings file), one gallery of `--speakers` speakers (default 1,000,000) enrolled once, then
searched exactly and through the HNSW graph by the same `--probes` probes (top 10). The graph
is built when the gallery is opened with `gallery_index = "hnsw"`, from the embeddings file.

Recall@10: of the 10 best speakers of the exact search, the share the approximate search also
returns (in its 10). Every score the approximate search returns is checked against the exact
score of that speaker, and its posteriors against the exact ones (they are lower bounds).
Memory: the growth of this process's resident memory while the graph is built (the graph holds
its own float32 copy of each vector, its links and the row numbers).

The voiceprints (`structured_voiceprints`) are not isotropic noise, whose nearest neighbours are
all alike and which no index can search: speakers are drawn around 500 group centres (say
language, sex, channel), on a 48-dimensional subspace of speaker variation plus a smaller
isotropic part, so neighbourhoods have structure, as real embeddings do; each probe is a new
recording of an enrolled speaker (its vector plus within-speaker noise, cosine about 0.85 to
it). Speech lengths run from 1 to 60 s and a tenth are narrowband, so the calibration (which
depends on both) does not rank exactly as the cosine does.

    .venv/bin/python -m bench.gallery_index [--speakers N] [--probes P] [--threads T]
        [--hnsw-m M] [--ef-search E]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from bench._common import memory_status
from voxmatch.galleries import Enrolment, GalleryStore, IndexSettings, Match
from voxmatch.models import CAMPPLUS
from voxmatch.voiceprint import NARROWBAND, WIDEBAND, VoiceprintBatch

TOP_K = 10
ENROL_BLOCK = 50_000


def structured_voiceprints(
    count: int, seed: int, *, probes_of: npt.NDArray[np.intp] | None = None
) -> VoiceprintBatch:
    """`count` synthetic speakers of the default model (see the module's docstring); with
    `probes_of`, new recordings of those speakers of the same `count` and `seed` instead."""
    dim = CAMPPLUS.embedding_dim
    structure = np.random.default_rng(seed)
    centres = structure.standard_normal((500, dim)).astype(np.float32)
    basis = (structure.standard_normal((48, dim)) / np.sqrt(48)).astype(np.float32)
    embeddings = np.empty((count, dim), np.float32)
    for start in range(0, count, ENROL_BLOCK):
        rows = min(ENROL_BLOCK, count - start)
        part = np.random.default_rng([seed, start])
        embeddings[start : start + rows] = (
            0.6 * centres[part.integers(0, len(centres), rows)]
            + part.standard_normal((rows, 48)).astype(np.float32) @ basis
            + 0.35 * part.standard_normal((rows, dim)).astype(np.float32)
        )
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    traits = np.random.default_rng([seed, count])
    speech = traits.uniform(1, 60, count).astype(np.float32)
    conditions = np.where(traits.random(count) < 0.1, NARROWBAND, WIDEBAND).astype(np.uint8)
    if probes_of is None:
        return VoiceprintBatch(embeddings, speech, CAMPPLUS.name, conditions)
    noise = np.random.default_rng([seed, count, 1])
    recordings = embeddings[probes_of] + 0.045 * noise.standard_normal(
        (len(probes_of), dim)
    ).astype(np.float32)
    return VoiceprintBatch(
        recordings.astype(np.float32),
        noise.uniform(3, 60, len(probes_of)).astype(np.float32),
        CAMPPLUS.name,
        conditions[probes_of],
    )


def enrol(store: GalleryStore, speakers: VoiceprintBatch) -> None:
    store.create("bench")
    gallery = store.gallery("bench")
    for start in range(0, len(speakers), ENROL_BLOCK):
        stop = min(start + ENROL_BLOCK, len(speakers))
        gallery.enrol(
            Enrolment(
                [f"speaker-{index}" for index in range(start, stop)],
                VoiceprintBatch(
                    speakers.embeddings[start:stop],
                    speakers.speech_lengths[start:stop],
                    speakers.model,
                    speakers.conditions[start:stop],
                ),
                np.arange(stop - start, dtype=np.intp),
                [None] * (stop - start),
            )
        )


def recall_at(exact: list[list[Match]], approximate: list[list[Match]]) -> float:
    found = sum(
        len({m.speaker_id for m in a} & {m.speaker_id for m in e})
        for e, a in zip(exact, approximate, strict=True)
    )
    return found / sum(len(e) for e in exact)


def agreement(
    exact: list[list[Match]], approximate: list[list[Match]]
) -> tuple[float, list[float]]:
    """The largest score difference over the speakers both found, and the ratios of
    approximate to exact posterior among them (<= 1: lower bounds)."""
    worst_score, ratios = 0.0, []
    for e, a in zip(exact, approximate, strict=True):
        by_id = {m.speaker_id: m for m in e}
        for match in a:
            if match.speaker_id in by_id:
                truth = by_id[match.speaker_id]
                worst_score = max(worst_score, abs(match.score - truth.score))
                if truth.probability > 0:
                    ratios.append(match.probability / truth.probability)
    return worst_score, ratios


def timed_searches(
    store: GalleryStore, probes: VoiceprintBatch, counts: tuple[int, ...]
) -> dict[int, float]:
    """Seconds per probe of searching `count` probes at once (best of 3)."""
    gallery = store.gallery("bench")
    timings = {}
    for count in counts:
        batch = VoiceprintBatch(
            probes.embeddings[:count], probes.speech_lengths[:count], probes.model
        )
        best = np.inf
        for _ in range(3):
            started = time.perf_counter()
            gallery.search(batch, top_k=TOP_K)
            best = min(best, time.perf_counter() - started)
        timings[count] = best / count
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hnsw-m", type=int, default=IndexSettings.hnsw_m)
    parser.add_argument("--ef-search", type=int, default=IndexSettings.hnsw_ef_search)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")
    speakers = structured_voiceprints(args.speakers, 7)
    who = np.random.default_rng(8).integers(0, args.speakers, args.probes).astype(np.intp)
    probes = structured_voiceprints(args.speakers, 7, probes_of=who)
    hnsw = IndexSettings("hnsw", hnsw_m=args.hnsw_m, hnsw_ef_search=args.ef_search)
    with tempfile.TemporaryDirectory() as folder:
        with GalleryStore(Path(folder)) as store:
            started = time.perf_counter()
            enrol(store, speakers)
            enrolling = time.perf_counter() - started
            exact = store.gallery("bench").search(probes, top_k=TOP_K)
            exact_times = timed_searches(store, probes, (1, 100))
        resident = memory_status(os.getpid())["VmRSS"]
        started = time.perf_counter()
        with GalleryStore(Path(folder), index=hnsw) as store:
            gallery = store.gallery("bench")
            building = time.perf_counter() - started
            graph_bytes = memory_status(os.getpid())["VmRSS"] - resident
            approximate = gallery.search(probes, top_k=TOP_K)
            hnsw_times = timed_searches(store, probes, (1, 100))
    recall = recall_at(exact, approximate)
    top1_exact, top1 = (
        np.mean([m[0].speaker_id == f"speaker-{s}" for m, s in zip(found, who, strict=True)])
        for found in (exact, approximate)
    )
    worst_score, ratios = agreement(exact, approximate)
    print(
        f"{args.speakers:,} structured synthetic speakers, {args.probes} probes, top {TOP_K},"
        f" {args.threads} thread(s); HNSW M={args.hnsw_m}, efSearch={args.ef_search},"
        f" efConstruction={hnsw.hnsw_ef_construction}"
    )
    print(f"  enrolment (exact store): {enrolling:.1f} s")
    print(
        f"  HNSW graph built on opening: {building:.1f} s,"
        f" {args.speakers / building:,.0f} speakers per second; resident memory grew by"
        f" {graph_bytes / 1e6:.0f} MB, {graph_bytes / args.speakers:.0f} bytes per speaker"
    )
    print(
        f"  recall@10 against exact search: {recall:.4f}; top-1 right: {top1:.3f}"
        f" (exact: {top1_exact:.3f})"
    )
    print(
        f"  scores of speakers found by both: largest difference {worst_score:.2e};"
        f" approximate / exact posterior: lowest {min(ratios):.3f}, median"
        f" {np.median(ratios):.3f}, highest {max(ratios):.6f}"
    )
    for count in (1, 100):
        print(
            f"  {count} probe(s) per search: exact {1000 * exact_times[count]:.2f} ms per probe,"
            f" hnsw {1000 * hnsw_times[count]:.2f} ms per probe"
            f" ({exact_times[count] / hnsw_times[count]:.0f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
