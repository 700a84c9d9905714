"""Interactive API documentation (Swagger UI) that works with no network.

FastAPI's own /docs page loads Swagger UI from a CDN, which leaves a blank page on a machine
without internet. Here the page loads Swagger UI from the pinned PyPI package swagger-ui-bundle,
served by voxmatch itself. ReDoc has no pinned package to serve it from, so /redoc is off.
"""

from __future__ import annotations

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs and its files under /docs/assets (app made with docs_url=None)."""
    app.mount(
        ASSETS_PATH,
        StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)),
        name="swagger-ui-assets",
    )

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        assets = root + ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            # Swagger UI otherwise sends the document to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
