"""The third-party scripts of the web page: members of a pinned npm package, cached like models.

The page (src/voxmatch/web/) draws waveforms with wavesurfer.js and its regions plugin. Their
files come from the npm registry's tarball of one release, each checked against its SHA-256,
and are kept in the model cache (or found in a folder filled by `voxmatch models pull --to
DIR`), so that a server that fetched them once serves the page with no network.
"""

from __future__ import annotations

from voxmatch.assets import RegistryAsset

WAVESURFER_VERSION = "8.0.1"
_WAVESURFER_TARBALL = f"wavesurfer.js-{WAVESURFER_VERSION}.tgz"
_WAVESURFER_URL = f"https://registry.npmjs.org/wavesurfer.js/-/{_WAVESURFER_TARBALL}"


def _wavesurfer_member(name: str, member: str, sha256: str, size: int) -> RegistryAsset:
    return RegistryAsset(
        filename=f"wavesurfer.js-{WAVESURFER_VERSION}-{name}",
        package="wavesurfer.js",
        distribution=_WAVESURFER_TARBALL,
        member=f"package/{member}",
        sha256=sha256,
        size=size,
        url=_WAVESURFER_URL,
    )


WEB_ASSETS: dict[str, RegistryAsset] = {
    "wavesurfer.esm.js": _wavesurfer_member(
        "wavesurfer.esm.js",
        "dist/wavesurfer.esm.js",
        "079f3b142f37737f975b03ea8fd18652a316dc2120a2629aeca0844a0c08f2b1",
        51_732,
    ),
    "regions.esm.js": _wavesurfer_member(
        "regions.esm.js",
        "dist/plugins/regions.esm.js",
        "f3b9a81f56d0301affbeb5693dc9c43527efd6e97e534f17329192a7ce7fc4d4",
        21_186,
    ),
    "wavesurfer-LICENSE": _wavesurfer_member(
        "LICENSE",
        "LICENSE",
        "0fc992dc27cc34dde78bfeb024b4cadff6320f0dcbee2f1228efaeb533ca1364",
        1_531,
    ),
}
"""The files the page loads, by the name it asks for them under /web/vendor/."""
