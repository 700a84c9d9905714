"""The gRPC server: Phonexia's speaker-identification services, health and status, on one port.

`build_grpc_server` returns a bound, not yet started `grpc.Server`; voxmatch's `serve` starts
and stops it beside the REST server. Threads, not asyncio: the work (decoding, the matrix
product, onnxruntime) releases the GIL, and a thread per call is what `maximum_concurrent_rpcs`
counts. Calls beyond that limit are refused at once with RESOURCE_EXHAUSTED, which tells a
client that the server is saturated rather than leaving it waiting in a queue. Within the
limit, heavy work waits its turn for a compute slot (the CPU budget shared with REST tasks)
until the call's deadline, as a gRPC client expects of a busy server.

Every request deserializer is `request_parser`'s, so that bytes which do not parse are the
client's INVALID_ARGUMENT, not a traceback in the log and INTERNAL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf import any_pb2, wrappers_pb2
from grpc_health.v1 import health, health_pb2
from phonexia.grpc.common import licensing_pb2, status_pb2
from phonexia.grpc.technologies.speaker_identification.v1 import (
    speaker_identification_pb2 as sid,
)

from voxmatch._version import __version__
from voxmatch.api_keys import KeyRing
from voxmatch.compute_slots import ComputeSlots
from voxmatch.config import Settings
from voxmatch.grpc.auth import ApiKeyInterceptor
from voxmatch.grpc.interceptor import CallMetricsInterceptor
from voxmatch.grpc.services import (
    Comparison,
    Conversion,
    Extraction,
    Limits,
    Merging,
    guard_streaming,
    guard_unary,
    prepare_spool_dir,
    request_parser,
)
from voxmatch.metrics import Metrics
from voxmatch.models.registry import UnknownModelError, describe
from voxmatch.shared_extractor import SharedExtractor

SPEAKER_IDENTIFICATION = "phonexia.grpc.technologies.speaker_identification.v1"
COMPARISON_SERVICE = f"{SPEAKER_IDENTIFICATION}.VoiceprintComparison"
EXTRACTION_SERVICE = f"{SPEAKER_IDENTIFICATION}.VoiceprintExtraction"
MERGING_SERVICE = f"{SPEAKER_IDENTIFICATION}.VoiceprintMerging"
CONVERSION_SERVICE = f"{SPEAKER_IDENTIFICATION}.VoiceprintConversion"
STATUS_SERVICE = "phonexia.grpc.common.Status"
HEALTH_SERVICE = "grpc.health.v1.Health"
SERVICES = (
    COMPARISON_SERVICE,
    EXTRACTION_SERVICE,
    MERGING_SERVICE,
    CONVERSION_SERVICE,
    STATUS_SERVICE,
)
TECHNOLOGY_NAME = "speaker_identification"


def _already_serialized(message: bytes) -> bytes:
    """Responses assembled as wire bytes by voxmatch.grpc._wire go out as they are."""
    return message


class Status:
    """phonexia.grpc.common.Status.GetStatus: what this server is and how it is configured."""

    def __init__(
        self, settings: Settings, extractor: SharedExtractor, compute_slots: ComputeSlots
    ) -> None:
        self.settings = settings
        self.extractor = extractor
        self.compute_slots = compute_slots

    def get_status(
        self, request: status_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> status_pb2.GetStatusResponse:
        model_name = self._model_name()
        try:
            description = describe(model_name)
        except UnknownModelError:
            description = None
        # No model version exists as such: the weights' SHA-256 identifies them exactly.
        version = (
            description.weights.sha256[:16]
            if description is not None and description.weights is not None
            else "user-model"
        )
        settings = self.settings
        configuration: dict[str, Any] = {
            "model": wrappers_pb2.StringValue(value=model_name),
            "max_list_length": wrappers_pb2.Int64Value(value=settings.max_list_length),
            "max_matrix_size": wrappers_pb2.Int64Value(value=settings.max_matrix_size),
            "grpc_max_concurrent_rpcs": wrappers_pb2.Int64Value(
                value=settings.grpc_max_concurrent_rpcs
            ),
            "model_loaded": wrappers_pb2.BoolValue(value=self.extractor.loaded),
            # The CPU budget and its use now (a snapshot: it changes as calls come and go).
            "compute_slots": wrappers_pb2.Int64Value(value=self.compute_slots.size),
            "compute_slots_busy": wrappers_pb2.Int64Value(value=self.compute_slots.busy),
            "compute_slots_waiting": wrappers_pb2.Int64Value(value=self.compute_slots.waiting),
        }
        if description is not None:
            configuration["embedding_dim"] = wrappers_pb2.Int64Value(
                value=description.embedding_dim
            )
        packed: dict[str, any_pb2.Any] = {}
        for key, value in configuration.items():
            packed[key] = any_pb2.Any()
            packed[key].Pack(value)
        return status_pb2.GetStatusResponse(
            name="voxmatch",
            version=__version__,
            technology_name=TECHNOLOGY_NAME,
            model_info=licensing_pb2.ModelInfo(name=model_name, version=version),
            configuration=packed,
        )

    def _model_name(self) -> str:
        if self.extractor.loaded:
            return self.extractor.get().description.name
        settings = self.settings
        if settings.model_file is not None:
            return settings.model_name or settings.model_file.stem
        return settings.default_model


def _handlers(
    settings: Settings, extractor: SharedExtractor, compute_slots: ComputeSlots
) -> list[grpc.GenericRpcHandler[Any, Any]]:
    limits = Limits(
        max_list_length=settings.max_list_length,
        max_matrix_size=settings.max_matrix_size,
        max_audio_bytes=settings.max_upload_bytes,
        max_audio_seconds=settings.max_audio_seconds,
        memory_budget=settings.memory_budget_bytes,
    )
    comparison = Comparison(limits, compute_slots)
    extraction = Extraction(extractor, limits, compute_slots, prepare_spool_dir(settings.data_dir))
    merging = Merging(limits)
    conversion = Conversion()
    status = Status(settings, extractor, compute_slots)
    health = _health()
    methods = {
        COMPARISON_SERVICE: {
            "Compare": grpc.stream_stream_rpc_method_handler(
                guard_streaming("Compare", comparison.compare),
                request_deserializer=request_parser(sid.CompareRequest),
                response_serializer=_already_serialized,
            )
        },
        EXTRACTION_SERVICE: {
            "Extract": grpc.stream_unary_rpc_method_handler(
                guard_unary("Extract", extraction.extract, streamed_requests=True),
                request_deserializer=request_parser(sid.ExtractRequest),
                response_serializer=sid.ExtractResponse.SerializeToString,
            )
        },
        MERGING_SERVICE: {
            "Merge": grpc.unary_unary_rpc_method_handler(
                guard_unary("Merge", merging.merge),
                request_deserializer=request_parser(sid.MergeRequest),
                response_serializer=sid.MergeResponse.SerializeToString,
            )
        },
        CONVERSION_SERVICE: {
            "Convert": grpc.stream_stream_rpc_method_handler(
                guard_streaming("Convert", conversion.convert),
                request_deserializer=request_parser(sid.ConvertRequest),
                response_serializer=_already_serialized,
            )
        },
        STATUS_SERVICE: {
            "GetStatus": grpc.unary_unary_rpc_method_handler(
                guard_unary("GetStatus", status.get_status),
                request_deserializer=request_parser(status_pb2.GetStatusRequest),
                response_serializer=status_pb2.GetStatusResponse.SerializeToString,
            )
        },
        # Registered here rather than with grpc_health's helper, whose deserializers raise.
        # Its servicer implements Check and Watch (List is left UNIMPLEMENTED, as gRPC answers
        # for any method not registered).
        HEALTH_SERVICE: {
            "Check": grpc.unary_unary_rpc_method_handler(
                guard_unary("Check", health.Check),
                request_deserializer=request_parser(health_pb2.HealthCheckRequest),
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                guard_streaming("Watch", health.Watch, streamed_requests=False),
                request_deserializer=request_parser(health_pb2.HealthCheckRequest),
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            ),
        },
    }
    return [
        grpc.method_handlers_generic_handler(service, handlers)
        for service, handlers in methods.items()
    ]


def _health() -> health.HealthServicer:
    servicer = health.HealthServicer()
    serving = health_pb2.HealthCheckResponse.SERVING
    servicer.set("", serving)  # the server as a whole
    for service in SERVICES:
        servicer.set(service, serving)
    return servicer


def grpc_target(host: str, port: int) -> str:
    """host:port as gRPC writes it (IPv6 addresses in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def build_grpc_server(
    settings: Settings,
    extractor: SharedExtractor,
    compute_slots: ComputeSlots,
    *,
    api_keys: KeyRing | None,
    metrics: Metrics,
) -> tuple[grpc.Server, int]:
    """The gRPC server with every service registered, bound but not started, and its port.

    Heavy calls draw on `compute_slots`, the CPU budget the REST task workers share.

    TLS when `tls_cert` and `tls_key` are set, plaintext otherwise. Calls need a key of
    `api_keys` when given. Raises OSError when the address cannot be bound or the certificate
    files cannot be read.
    """
    options = [
        # Without this, Linux lets a second server bind the same port and share its calls.
        ("grpc.so_reuseport", 0),
        # Requests may be large (a Merge of many voiceprints, an audio chunk): the REST body
        # limit applies. Responses stay under gRPC's default 4 MiB (see services.py).
        ("grpc.max_receive_message_length", settings.max_request_bytes),
    ]
    workers = settings.grpc_max_concurrent_rpcs
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxmatch-grpc"),
        handlers=_handlers(settings, extractor, compute_slots),
        # Metrics outermost, so that refused (UNAUTHENTICATED) calls are counted too.
        interceptors=[
            CallMetricsInterceptor(metrics),
            *([ApiKeyInterceptor(api_keys)] if api_keys is not None else []),
        ],
        options=options,
        maximum_concurrent_rpcs=workers,
    )
    target = grpc_target(settings.grpc_address, settings.grpc_port)
    try:
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
            )
            port = server.add_secure_port(target, credentials)
        else:
            port = server.add_insecure_port(target)
    except RuntimeError as error:  # what grpc raises when it cannot bind
        raise OSError(f"cannot listen for gRPC on {target}: {error}") from None
    if port == 0:  # older grpc versions report a failed bind this way
        raise OSError(f"cannot listen for gRPC on {target}")
    return server, port
