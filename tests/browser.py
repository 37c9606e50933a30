"""Headless Chromium for tests: load a page, dump its DOM or screenshot it.

Chromium is Debian's ``chromium`` package; :func:`ensure_chromium` installs it
through ``scripts/install_chromium.sh`` when it is missing and skips the calling
test, saying why, when it cannot be installed (no root, no mirror).

Each call starts a fresh browser with a throw-away profile and
``--virtual-time-budget``: Chromium runs the page's timers and fetches in virtual
time until the budget is spent, then dumps or shoots, so a page that polls every
2 s shows its third poll after a 5000 ms budget without the test waiting 5 s.
Every subprocess has a timeout, and a browser that overruns it is killed with its
whole process group.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["CHROMIUM", "INSTALL_SCRIPT", "dump_dom", "ensure_chromium", "screenshot"]

CHROMIUM = os.environ.get("RAYFLEET_CHROMIUM", "/usr/bin/chromium")
INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_chromium.sh"

INSTALL_TIMEOUT_S = 600.0
# Real seconds a browser may take beyond its virtual-time budget: start-up,
# page load and rendering on a slow, busy machine.
BROWSER_SLACK_S = 45.0

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-device-scale-factor=1",
)


def _executable() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


@functools.cache
def _install() -> tuple[str | None, str]:
    """The browser's path, installing it once per session; else why not."""
    found = _executable()
    if found is not None:
        return found, ""
    if not INSTALL_SCRIPT.is_file():
        return None, f"{INSTALL_SCRIPT} is missing"
    try:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
    except subprocess.TimeoutExpired:
        return None, f"{INSTALL_SCRIPT.name} took over {INSTALL_TIMEOUT_S:g} s"
    found = _executable()
    if found is None:
        why = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
        return None, why
    return found, ""


def ensure_chromium() -> str:
    """The path of a headless-capable Chromium, installed if need be.

    Calls :func:`pytest.skip` with the reason when it cannot be installed.
    """
    path, why = _install()
    if path is None:
        pytest.skip(
            f"headless chromium is not available and could not be installed ({why}); "
            f"run scripts/install_chromium.sh as root, or set RAYFLEET_CHROMIUM"
        )
    return path


def _run_browser(extra: list[str], url: str, wait_ms: int) -> str:
    """Run one headless browser on ``url``; its stdout."""
    if wait_ms < 0:
        raise ValueError(f"wait_ms must be >= 0: {wait_ms}")
    browser = ensure_chromium()
    timeout_s = wait_ms / 1000 + BROWSER_SLACK_S
    with tempfile.TemporaryDirectory(
        prefix="rayfleet-chromium-", ignore_cleanup_errors=True
    ) as profile:
        command = [
            browser,
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={wait_ms}",
            *extra,
            url,
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
            raise AssertionError(
                f"chromium did not finish {url} within {timeout_s:g} s"
            ) from None
        finally:
            # Helpers (zygote, GPU, network service) may outlive the browser.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-20:])
        raise AssertionError(f"chromium exited {process.returncode} on {url}:\n{tail}")
    return out


def dump_dom(url: str, *, wait_ms: int = 3000) -> str:
    """The page's serialized DOM after ``wait_ms`` of virtual time."""
    return _run_browser(["--dump-dom"], url, wait_ms)


def screenshot(
    url: str,
    path: str | os.PathLike[str],
    *,
    width: int = 1280,
    height: int = 900,
    wait_ms: int = 3000,
) -> Path:
    """A PNG of the page's top ``width`` x ``height`` pixels after ``wait_ms``."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    _run_browser(
        [f"--window-size={width},{height}", f"--screenshot={target}"], url, wait_ms
    )
    if not target.is_file() or target.stat().st_size == 0:
        raise AssertionError(f"chromium wrote no screenshot of {url} to {target}")
    return target
