"""The approximate gallery index (`gallery_index = "hnsw"`): a FAISS HNSW graph over the
speakers' unit vectors, which proposes candidates; the exact calibration then scores them.

The graph finds, for each probe, the rows of highest cosine (inner product of unit vectors, the
vectors the exact search scores). The calibrated LLR is not a function of the cosine alone (it
depends on the conditions and speech lengths of both sides), so more candidates than asked for
are retrieved (`candidates_for`) and re-scored with `scoring.score_matrix`: every score returned
is the exact search's score of that speaker; only which speakers are found is approximate.

A node of the graph is a row of the gallery's embeddings file, by number: rows are only
appended, and the graph is extended with each enrolment, after its commit and before the
enrolment is acknowledged or seen by a search. Replaced and deleted rows stay in the graph (HNSW
cannot remove a node) and are filtered out during the search by the snapshot's validity mask, so
a search never returns them; when the gallery compacts its file (rows renumbered), the graph is
rebuilt from the new file. The graph is not durable: it is built from the embeddings file when
the gallery opens, a block of rows at a time (SQLite and the file stay the truth).

The posterior needs the likelihood ratios of all N speakers, and the graph sees M of them: see
`unseen_llr_bound` for the bound that stands in for the N - M unseen ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from voxmatch.models.registry import Calibration
from voxmatch.scoring import Traits, score_matrix, unit_rows
from voxmatch.stopping import StopCheck, check
from voxmatch.top_k import TopK
from voxmatch.voiceprint import NARROWBAND, WIDEBAND

if TYPE_CHECKING:
    import faiss

BUILD_BLOCK_ROWS = 65536
"""Rows normalised and added to the graph at a time when it is built from the file: the copy is
bounded (48 MB of 192-dimensional rows) whatever the gallery's size."""
MIN_CANDIDATES = 64
EXACT_GROUP = 16
"""A condition with at most this many times the candidates wanted is scored whole: cheap, and
the graph's search is least sure when it must skip most nodes."""


def candidates_for(top_k: int) -> int:
    """Speakers the graph proposes for a search of the `top_k` best: enough that a speaker of
    long speech ranked a little lower by cosine than one of short speech is still re-scored."""
    return max(4 * top_k, MIN_CANDIDATES)


@dataclass(frozen=True)
class IndexSettings:
    """How a gallery is searched: `kind` "exact" scores every speaker; "hnsw" asks the graph."""

    kind: Literal["exact", "hnsw"] = "exact"
    hnsw_m: int = 32
    """Links per node: more links, better recall, a slower build and more memory."""
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 128
    """Breadth of the graph search (at least the number of candidates wanted)."""
    threads: int = 1
    """OpenMP threads of FAISS (graph builds): as `blas_threads`, since idle OpenMP threads
    spin on the cores that other work needs."""


class HnswIndex:
    """The graphs of one gallery's rows, one per condition of the speakers (a node is named by
    its row's number). Thread-safe: FAISS does not allow a search while nodes are added, so
    both take the lock."""

    def __init__(self, dim: int, settings: IndexSettings) -> None:
        import faiss

        faiss.omp_set_num_threads(settings.threads)
        self.dim = dim
        self.settings = settings
        self._faiss = faiss
        self._graphs: dict[int, faiss.IndexIDMap] = {}
        self._lock = threading.Lock()
        self.size = 0
        """Rows added: the next row added is row `size`."""
        self.has_empty_rows = False
        """Whether any node is an empty (zero) vector: it scores 0 against every probe, whatever
        its cosine, which the bound on unseen speakers must allow for."""

    @classmethod
    def build(
        cls,
        rows: npt.NDArray[np.float32],
        conditions: npt.NDArray[np.uint8],
        settings: IndexSettings,
    ) -> HnswIndex:
        """The graphs of every row of `rows` (a memory map is read a block at a time)."""
        index = cls(int(rows.shape[1]), settings)
        for start in range(0, len(rows), BUILD_BLOCK_ROWS):
            stop = min(start + BUILD_BLOCK_ROWS, len(rows))
            index.add(start, rows[start:stop], conditions[start:stop])
        return index

    def add(
        self, start: int, rows: npt.NDArray[np.float32], conditions: npt.NDArray[np.uint8]
    ) -> None:
        """Add rows `start`, `start + 1`, ... (the next rows of the file, in order), each to the
        graph of its condition."""
        if len(rows) == 0:
            return
        unit, empty = unit_rows(rows)
        numbers = np.arange(start, start + len(rows), dtype=np.int64)
        with self._lock:
            if start != self.size:
                raise RuntimeError(f"row {start} added to a graph of {self.size} rows")
            for condition in np.unique(conditions).tolist():
                members = conditions == condition
                self._graph(condition).add_with_ids(unit[members], numbers[members])
            self.size = start + len(rows)
            self.has_empty_rows = self.has_empty_rows or bool(empty.any())

    def _graph(self, condition: int) -> faiss.IndexIDMap:
        graph = self._graphs.get(condition)
        if graph is None:
            nodes = self._faiss.IndexHNSWFlat(
                self.dim, self.settings.hnsw_m, self._faiss.METRIC_INNER_PRODUCT
            )
            nodes.hnsw.efConstruction = self.settings.hnsw_ef_construction
            # FAISS's Python constructor keeps `nodes` alive as long as the map.
            graph = self._faiss.IndexIDMap(nodes)
            self._graphs[condition] = graph
        return graph

    def search(
        self,
        probes: npt.NDArray[np.float32],
        valid: npt.NDArray[np.bool_],
        condition: int,
        candidates: int,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """For each probe, up to `candidates` rows of speakers of `condition` where `valid` is
        True (rows past `valid` are left out too), best cosine first: their numbers (-1 past
        the last found) and cosines. Replaced and deleted rows are skipped inside the graph
        search, so they neither crowd out live speakers nor come back."""
        unit, _ = unit_rows(probes)
        bitmap = np.packbits(valid, bitorder="little")
        selector = self._faiss.IDSelectorBitmap(len(bitmap), self._faiss.swig_ptr(bitmap))
        # Missing from the type stubs FAISS ships, present in its module since 1.7.3.
        parameters = self._faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
            sel=selector, efSearch=max(self.settings.hnsw_ef_search, candidates)
        )
        with self._lock:
            graph = self._graphs.get(condition)
            if graph is None:
                return (
                    np.full((len(unit), candidates), -1, np.int64),
                    np.full((len(unit), candidates), -np.inf, np.float32),
                )
            cosines, rows = graph.search(unit, candidates, params=parameters)
        return rows.astype(np.int64), cosines.astype(np.float32)


def unseen_llr_bound(
    calibration: Calibration,
    pair: int,
    probe_speech: float,
    shortest_speech: float,
    lowest_cosine: float,
    *,
    empty_rows: bool,
) -> float:
    """The highest LLR a probe (of `probe_speech` seconds) can have against a speaker of the
    pair of conditions `pair` (an index of `Calibration.pairs`) and of at least
    `shortest_speech` seconds that the graph did not retrieve, if every such speaker's cosine
    is at most `lowest_cosine` (the lowest of the retrieved ones): the calibration is linear in
    the cosine for a given quality, and in the quality for a given cosine, so the maximum is at
    an end of the cosine range [-1, lowest_cosine] and of the quality range the pair can have
    (that of the shorter side's speech, between min(probe, shortest) and the probe's). With
    `empty_rows`, 0 as well (an empty speaker scores 0 against everyone).

    A posterior computed with the N - M unseen speakers at this bound has a denominator at
    least the exact one, hence is at most the exact posterior: conservative. The one thing
    that can break the premise is the graph missing a speaker of higher cosine than its
    lowest candidate, which the measured recall says is rare, and then by a small margin.
    """
    floor, cap = calibration.speech_floor, calibration.speech_cap
    probe_quality = float(np.log(np.clip(probe_speech, floor, cap) / cap))
    shorter = min(probe_speech, shortest_speech)
    lowest_quality = float(np.log(np.clip(shorter, floor, cap) / cap))
    calibrated = calibration.pairs()[pair]
    bound = 0.0 if empty_rows else -np.inf
    for quality in (lowest_quality, probe_quality):
        scale = calibrated.scale + calibrated.scale_per_log_speech * quality
        offset = calibrated.offset + calibrated.offset_per_log_speech * quality
        for cosine in (-1.0, lowest_cosine):
            bound = max(bound, scale * cosine + offset)
    return float(bound)


@dataclass(frozen=True)
class _Group:
    """The valid speakers of one condition, as a search sees them."""

    condition: int
    size: int
    found: npt.NDArray[np.int64]
    """Each probe's candidates (-1: none)."""
    cosines: npt.NDArray[np.float32] | None = None
    """Their cosines; None when the condition is scored whole (no speaker of it unseen)."""
    short: int = 0
    """Speakers of less than the calibration's speech cap."""
    shortest: float = 0.0
    """The speech of the shortest of them."""


def approximate_top_k(
    index: HnswIndex,
    probes: npt.NDArray[np.float32],
    probe_traits: Traits,
    rows: npt.NDArray[np.float32],
    row_traits: Traits,
    valid: npt.NDArray[np.bool_],
    calibration: Calibration,
    k: int,
    *,
    should_stop: StopCheck | None = None,
) -> TopK:
    """`top_k.search_top_k`'s answer, from the candidates of the graph, scored exactly against
    each probe and ranked by LLR.

    The candidates are taken per condition of the speakers (each has its graph): the pair's
    calibration differs (a wideband probe against a narrowband speaker gets another scale and
    offset), so one ranking by cosine over both would crowd out the speakers of one condition
    that the calibration ranks high. For each condition, the `candidates_for(k)` valid rows
    of highest cosine; a condition with few speakers (at most `EXACT_GROUP` times that) is
    scored whole. `log_sum_lr` is the exact sum over the candidates plus, for each speaker not
    retrieved, the likelihood ratio of `unseen_llr_bound` for its condition.
    """
    counted = int(valid.sum())
    wanted = candidates_for(k)
    _, empty_probes = unit_rows(probes)
    cap = calibration.speech_cap
    groups = []
    for condition in (WIDEBAND, NARROWBAND):
        members = valid & (row_traits.conditions == condition)
        size = int(members.sum())
        if size == 0:
            continue
        if size <= EXACT_GROUP * wanted:
            whole = np.flatnonzero(members).astype(np.int64)
            groups.append(_Group(condition, size, np.broadcast_to(whole, (len(probes), size))))
        else:
            nearest, similarities = index.search(probes, valid, condition, wanted)
            short = members & (row_traits.speech_lengths < cap)
            groups.append(
                _Group(
                    condition,
                    size,
                    nearest,
                    similarities,
                    int(short.sum()),
                    float(row_traits.speech_lengths[short].min()) if short.any() else cap,
                )
            )
    columns = np.full((len(probes), k), -1, np.int64)
    scores = np.full((len(probes), k), -np.inf, np.float32)
    log_sum_lr = np.full(len(probes), -np.inf, np.float64)
    for probe in range(len(probes)):
        check(should_stop, "search")
        parts = []
        unseen_terms = []
        for group in groups:
            retrieved = group.found[probe] >= 0
            found = group.found[probe][retrieved]
            parts.append(found)
            if group.cosines is None:
                continue
            lowest = float(group.cosines[probe][retrieved].min()) if retrieved.any() else 1.0
            short_found = int((row_traits.speech_lengths[found] < cap).sum())
            # Speakers of at least `cap` seconds (most) pair with the probe at the probe's own
            # quality: their bound is tight; the short ones get the bound of the shortest.
            for unseen, shortest in (
                (group.size - group.short - (len(found) - short_found), cap),
                (group.short - short_found, group.shortest),
            ):
                if unseen <= 0:
                    continue
                if empty_probes[probe]:
                    bound = 0.0  # an empty probe scores 0 against everyone
                else:
                    bound = unseen_llr_bound(
                        calibration,
                        int(probe_traits.conditions[probe]) + group.condition,
                        float(probe_traits.speech_lengths[probe]),
                        shortest,
                        lowest,
                        empty_rows=index.has_empty_rows,
                    )
                unseen_terms.append(np.log(unseen) + bound)
        candidates = np.concatenate(parts)
        llrs = score_matrix(
            probes[probe : probe + 1],
            rows[candidates],
            calibration,
            row_traits=probe_traits[probe : probe + 1],
            column_traits=Traits(
                row_traits.conditions[candidates], row_traits.speech_lengths[candidates]
            ),
        )[0]
        best = np.argsort(-llrs, kind="stable")[:k]
        columns[probe, : len(best)] = candidates[best]
        scores[probe, : len(best)] = llrs[best]
        terms = np.concatenate([llrs.astype(np.float64), unseen_terms])
        if len(terms):
            peak = float(terms.max())
            log_sum_lr[probe] = peak + np.log(np.exp(terms - peak).sum())
    return TopK(columns, scores, log_sum_lr, counted)
