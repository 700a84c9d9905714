"""Headless Chromium for the web page's tests and screenshots: Debian's browser, driven by
Playwright for Python (its own browser download needs a host these machines cannot reach).

`./scripts/test` installs Debian's `chromium` when it is missing (as root). Each launch gets a
fresh temporary profile (Playwright makes one per launch and deletes it after), and the flags
keep Chromium from calling home: without them it tries Google's update, sync and field-trial
hosts over and over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
"""A phone's CSS pixels (an iPhone 12 to 15, most Android phones are within a few)."""


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser, phone: bool = False) -> BrowserContext:
    """A context of desktop size (1280 x 800) or of a phone's (touch, mobile viewport)."""
    if phone:
        return browser.new_context(
            viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True
        )
    return browser.new_context(viewport=DESKTOP, accept_downloads=True)
