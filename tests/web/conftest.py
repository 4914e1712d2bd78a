"""Headless Chromium (Debian ``chromium`` + ``chromium-driver``) for the page tests.

One browser per test module: starting Chromium takes a second or two. The
tests skip, saying why, when Chromium, its driver or Selenium is missing.
Selenium calls block, so async tests reach the driver through ``Browser``,
which runs them in a thread while the server keeps serving on the loop.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
POLL_S = 0.05


class Browser:
    """A thin async face on a Selenium driver."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    async def get(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.driver.execute_script, script, *args)

    async def wait_js(self, script: str, *args: Any, timeout: float = 5.0, what: str = "") -> Any:
        """Poll a JS expression (``return ...``) until it gives a truthy value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"page never showed {what or script!r}")
            await asyncio.sleep(POLL_S)

    async def screenshot(self, name: str) -> Path:
        path = self.shots / name
        await asyncio.to_thread(self.driver.save_screenshot, str(path))
        return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(
            "Debian chromium and chromium-driver are not installed (scripts/bootstrap.sh --test)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (dev extra)"
    )
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="appliance-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(10)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(chromium, tmp_path_factory) -> Browser:
    return Browser(chromium, tmp_path_factory.mktemp("screens"))
