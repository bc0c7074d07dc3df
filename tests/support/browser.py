"""Debian's Chromium, headless, driven by Playwright; screenshots go to test-artifacts/."""

import contextlib
from pathlib import Path

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
#: As this machine's probe starts it: no sandbox as root, nothing that reaches the network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def page(width: int = 1280, height: int = 900):
    """A page in a window of a common laptop's size."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    """What the page showed when a step failed, kept beside the other artifacts."""
    try:
        yield
    except BaseException:
        screenshot(page, name)
        raise
