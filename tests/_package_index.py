"""A package index on 127.0.0.1 serving wheels built from real cached model files, so that tests
exercise fetching (JSON simple API, download, SHA-256 check) without the network."""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from voxmatch.assets import RegistryAsset, sha256_of


@dataclass(frozen=True)
class LocalIndex:
    env: dict[str, str]
    """VOXMATCH_PACKAGE_INDEX pointing at this index."""
    distribution_sizes: dict[str, int]
    requests: list[str]
    """Every path asked for, in order."""


@contextmanager
def package_index(
    folder: Path, files: Sequence[tuple[RegistryAsset, Path]]
) -> Iterator[LocalIndex]:
    """Serve, from `folder`, one wheel per distribution holding each asset's file as its member."""
    members: dict[str, list[tuple[RegistryAsset, Path]]] = {}
    for asset, path in files:
        members.setdefault(asset.distribution, []).append((asset, path))
    packages: dict[str, str] = {}
    for distribution, contents in members.items():
        with zipfile.ZipFile(folder / distribution, "w") as bundle:
            for asset, path in contents:
                bundle.write(path, asset.member)
        packages[contents[0][0].package] = distribution
    requests: list[str] = []

    class Index(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            name = self.path.strip("/").split("/")[-1]
            if name in packages:
                distribution = packages[name]
                body = json.dumps(
                    {
                        "files": [
                            {
                                "filename": distribution,
                                "url": f"http://{self.headers['Host']}/files/{distribution}",
                                "hashes": {"sha256": sha256_of(folder / distribution)},
                            }
                        ]
                    }
                ).encode()
            elif self.path.startswith("/files/") and (folder / name).is_file():
                body = (folder / name).read_bytes()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalIndex(
            env={"VOXMATCH_PACKAGE_INDEX": f"http://127.0.0.1:{server.server_address[1]}"},
            distribution_sizes={name: (folder / name).stat().st_size for name in members},
            requests=requests,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
