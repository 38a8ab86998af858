"""Headless Chromium (Debian's `chromium` and `chromedriver`, installed by scripts/setup.sh) for
the pages `serve` renders, cut off from everything but 127.0.0.1: no background traffic, no
component updates, and every other host sent to a proxy on a closed local port."""
from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess
import time
from typing import Any, Iterator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
ISOLATION = ("--disable-background-networking", "--disable-component-update", "--no-first-run",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost")


def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A driver for one test module (use it in a module-scoped fixture)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "headless Chromium is missing: scripts/setup.sh installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", *ISOLATION):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


async def wait_for(driver: Any, script: str, timeout: float = 60.0) -> Any:
    """Poll a JavaScript expression in the page until it is truthy (the event loop keeps running)."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        await asyncio.sleep(0.2)


def decode_qr(png: pathlib.Path) -> list[str]:
    """The QR codes zbarimg (zbar-tools) reads in a picture."""
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg is missing: scripts/setup.sh installs Debian's zbar-tools"
    proc = subprocess.run([zbarimg, "--raw", "-q", "-Sdisable", "-Sqrcode.enable", str(png)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 4), proc.stderr   # 4: nothing found
    return [line for line in proc.stdout.splitlines() if line]


def keep_screenshot(source: pathlib.Path, name: str) -> None:
    """With KACCY_SAVE_SCREENSHOTS=1, the picture becomes docs/<name> (the README shows them)."""
    if os.environ.get("KACCY_SAVE_SCREENSHOTS") == "1":
        shutil.copyfile(source, DOCS / name)
