"""Finding and launching the headless browser of the browser tests (Playwright + Debian's Chromium).

``scripts/install_browser.sh`` installs Chromium; ``$SAMKIT_TEST_BROWSER`` names another one.
The ``browser`` fixture in conftest.py uses :func:`launched_chromium`, so every browser test
skips the same way, with the same message, when no browser or no Playwright is there.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Iterator

import pytest

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync"]


def find_browser() -> str | None:
    """``$SAMKIT_TEST_BROWSER``, else /usr/bin/chromium, else a Chromium or Chrome on the PATH."""
    candidates = [os.environ.get("SAMKIT_TEST_BROWSER"), "/usr/bin/chromium"]
    candidates += [shutil.which(name) for name in BROWSER_NAMES]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def launched_chromium() -> Iterator[Any]:
    """Yield a launched headless Playwright Chromium (closed afterwards), or skip the test."""
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium or Chrome browser found (looked for /usr/bin/chromium and {', '.join(BROWSER_NAMES)} "
                    "on the PATH); run scripts/install_browser.sh to install one")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the browser test needs Playwright's Python package: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=BROWSER_ARGS)
        yield chromium
        chromium.close()
