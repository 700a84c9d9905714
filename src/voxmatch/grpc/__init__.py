"""The Phonexia gRPC API (`phonexia.grpc.technologies.speaker_identification.v1`) of voxmatch.

See docs/grpc.md. `build_grpc_server` is the entry point; the services are in `services`.
"""

from voxmatch.grpc.server import build_grpc_server

__all__ = ["build_grpc_server"]
