"""The web page for people, at `/`: the package's own files, and wavesurfer.js from the cache.

The page (src/voxmatch/web/, plain HTML, CSS and JavaScript modules) talks to the server through
the public REST API only, so everything it does a script can do too. Its third-party scripts are
members of a pinned npm package (voxmatch.web_assets): located on the first request that needs
them (in `models_dir`, then the model cache, then fetched from the registry once) and then served
from disk, so a server that fetched them once serves the page with no network. A server that
cannot get them still serves the page, which then says so and draws its own plain waveforms.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from voxmatch.assets import AssetError, locate_all
from voxmatch.config import Settings
from voxmatch.rest.errors import ApiError, detail_item
from voxmatch.web_assets import WAVESURFER_VERSION, WEB_ASSETS

PAGE_PATH = "/"
STATIC_PATH = "/web"
VENDOR_PATH = "/web/vendor"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:;"
    " media-src 'self' blob:; worker-src 'self' blob:; object-src 'none'; base-uri 'none';"
    " frame-ancestors 'none'; style-src 'self' 'unsafe-inline'"
)
"""Nothing but the server itself: the page can reach no other host, whatever a script says.
Inline styles are allowed because wavesurfer.js styles its shadow DOM with a <style> element."""

_logger = logging.getLogger(__name__)


def _static_folder() -> Path:
    return Path(str(resources.files("voxmatch") / "web"))


class VendorFiles:
    """The page's third-party files: located once, on the first request that needs them."""

    def __init__(self, settings: Settings) -> None:
        self._cache_dir = settings.model_cache
        self._search_dirs = [settings.models_dir] if settings.models_dir else []
        self._lock = threading.Lock()
        self._paths: dict[str, Path] | None = None

    def paths(self) -> dict[str, Path]:
        """Name -> verified local file; raises AssetError when they cannot be had. A failure is
        not remembered: the next page load tries again (the network may be back)."""
        with self._lock:
            if self._paths is None:
                names = list(WEB_ASSETS)
                located = locate_all(
                    [WEB_ASSETS[name] for name in names], self._cache_dir, self._search_dirs
                )
                self._paths = dict(zip(names, located, strict=True))
            return self._paths


def _unavailable() -> ApiError:
    return ApiError(
        503,
        "The page's waveform library (wavesurfer.js) is not available on this server.",
        [
            detail_item(
                ["path", "name"],
                f"wavesurfer.js {WAVESURFER_VERSION} could not be fetched from the npm registry"
                " nor found in models_dir; run `voxmatch models pull` where there is network",
                "asset.unavailable",
            )
        ],
        error_type="asset.unavailable",
    )


def install_web(app: FastAPI, settings: Settings) -> None:
    """Serve the page at `/`, its files under /web, and wavesurfer.js under /web/vendor."""
    vendor = VendorFiles(settings)
    folder = _static_folder()
    router = APIRouter(include_in_schema=False)
    headers = {"content-security-policy": CONTENT_SECURITY_POLICY}

    async def vendor_paths() -> dict[str, Path] | None:
        try:
            return await run_in_threadpool(vendor.paths)
        except (AssetError, OSError) as error:
            # The detail names folders of the server: for its log, not for the page.
            _logger.warning("web page assets unavailable: %s", error)
            return None

    @router.get(PAGE_PATH)
    async def page() -> FileResponse:
        return FileResponse(folder / "index.html", media_type="text/html", headers=headers)

    @router.get(f"{VENDOR_PATH}.json")
    async def vendor_status() -> JSONResponse:
        """Whether the waveform library can be loaded: asked before importing it, so that a
        server without it gives the page a message to show rather than a failed import."""
        paths = await vendor_paths()
        return JSONResponse(
            {
                "wavesurfer": {
                    "available": paths is not None,
                    "version": WAVESURFER_VERSION,
                    "message": None if paths is not None else _unavailable().detail[0]["message"],
                }
            }
        )

    @router.get(f"{VENDOR_PATH}/{{name}}")
    async def vendor_file(name: str) -> FileResponse:
        if name not in WEB_ASSETS:
            raise ApiError(
                404,
                "Not found.",
                [detail_item(["path", "name"], f"no such file: {name}", "resource.not-found")],
                error_type="resource.not-found",
            )
        paths = await vendor_paths()
        if paths is None:
            raise _unavailable()
        media_type = "text/javascript" if name.endswith(".js") else "text/plain"
        return FileResponse(
            paths[name], media_type=media_type, headers={"cache-control": "max-age=86400"}
        )

    app.include_router(router)
    # After the vendor routes, which it would otherwise shadow.
    app.mount(STATIC_PATH, StaticFiles(directory=str(folder)), name="web")
