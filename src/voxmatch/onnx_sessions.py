"""The onnxruntime session options of every network voxmatch runs (speaker models, the VAD)."""

from __future__ import annotations

import onnxruntime as ort


def session_options(threads: int) -> ort.SessionOptions:
    """Options for one inference session: `threads` intra-op threads, nodes run one after
    another (the graphs are chains, so inter-op parallelism would only add threads), all graph
    optimisations on, no memory arena."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The arena keeps the peak of the longest input ever seen (about 0.8 GB after 5 min of audio
    # through the speaker model) for the life of the process; without it that memory goes back
    # after the call, and 10 s embeddings measured no slower. The VAD's blocks are of one fixed
    # size, so for it the arena saves nothing either (docs/models.md, Sessions).
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return options
