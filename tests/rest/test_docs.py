"""The interactive docs through a real server: a page that needs no network."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from _helpers import RunningServer

# Every URL the page names: attributes, and the OpenAPI document Swagger UI loads.
_REFERENCES = re.compile(r"""(?:href|src)="([^"]+)"|url: '([^']+)'""")
_ABSOLUTE_URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")
_CONTENT_TYPES = {".css": "text/css", ".js": "javascript", ".png": "image/png"}


def test_docs_page_names_no_other_host(server: RunningServer) -> None:
    page = server.client().get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    own_host = urlsplit(server.base_url).netloc
    for url in _ABSOLUTE_URL.findall(page.text):
        assert urlsplit(url).netloc == own_host, url
    # Swagger UI would otherwise send the document to validator.swagger.io.
    assert '"validatorUrl": null' in page.text


def test_every_asset_of_the_docs_page_is_served(server: RunningServer) -> None:
    client = server.client()
    page = client.get("/docs").text
    references = [href or url for href, url in _REFERENCES.findall(page)]
    assets = [url for url in references if not url.endswith("/openapi.json")]
    assert {url.rsplit(".", 1)[-1] for url in assets} == {"css", "js", "png"}
    for url in assets:
        response = client.get(urljoin(f"{server.base_url}/docs", url))
        assert response.status_code == 200, url
        expected = _CONTENT_TYPES["." + url.rsplit(".", 1)[-1]]
        assert expected in response.headers["content-type"], (url, response.headers)
        assert len(response.content) > 100, url
    (openapi,) = [url for url in references if url.endswith("/openapi.json")]
    document = client.get(urljoin(f"{server.base_url}/docs", openapi))
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "voxmatch"


def test_redoc_is_off(server: RunningServer) -> None:
    assert server.client().get("/redoc").status_code == 404
