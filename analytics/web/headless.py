"""Debian's Chromium under Playwright, for the browser tests and the web benchmark: Playwright's
own browser download is not what these machines have, so the system's binary is driven with the
flags a container without a GPU or a session bus needs."""

from __future__ import annotations

from pathlib import Path

from telemetry.errors import UsageError

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run")


def launch_chromium(playwright):
    if not CHROMIUM.exists():
        raise UsageError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(FLAGS))
