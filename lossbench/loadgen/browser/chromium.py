"""Launching Debian's Chromium through Playwright, fenced to loopback. The one launch used everywhere.

The fence, a hard requirement: every name resolves to NOTFOUND but the test names (which go to loopback),
background networking, component updates, sync and the default apps are off, QUIC is off, and all
traffic goes through lossbench's SOCKS5 proxy on 127.0.0.1, which routes only test names, and only to
loopback. Every launch gets a fresh temporary ``--user-data-dir``, removed when it closes.
``playwright install`` is never needed (nor run): the browser is ``/usr/bin/chromium``.

Each launch is one regular profile (Playwright's persistent context), not an off-the-record context of a
shared browser (``Browser.new_context``): Chromium has no loading predictor in an off-the-record profile,
and without it drops a page's ``<link rel=preconnect>`` and DNS prefetch hints; a user's browser is a
regular profile. One browser per profile also keeps each its own socket pools, with their limit of 32
sockets per proxy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.loadgen.browser.proxy import DOMAIN

CHROMIUM = Path(os.environ.get("LOSSBENCH_CHROMIUM", "/usr/bin/chromium"))
"""Debian's launcher: it sources /etc/chromium.d (Google API keys, --enable-remote-extensions), which turns
on calls to Google's account and update hosts, so the binary it runs is launched directly instead."""
CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")
INSTALL_HINT = (
    "the browser client needs Debian's Chromium and Playwright: "
    "`apt-get update && apt-get install -y chromium` and `pip install '.[browser]'` "
    "(never `playwright install`)"
)
RESOLVER_RULES = f"MAP *.{DOMAIN} 127.0.0.1, MAP {DOMAIN} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
"""Test names go to loopback, every other name fails; the proxy's address is an IP literal."""

FENCE_ARGS: tuple[str, ...] = (
    f"--host-resolver-rules={RESOLVER_RULES}",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    # Playwright's own --disable-features list already holds NetworkTimeServiceQuerying and
    # OptimizationHints; a second --disable-features would replace it (the last one wins).
    # Google's account (Gaia) and update services are pointed at a closed loopback port: with their
    # default hosts, Chromium asks for accounts.google.com and update.googleapis.com at start.
    "--gaia-url=http://127.0.0.1:9",
    "--google-apis-url=http://127.0.0.1:9",
    "--lso-url=http://127.0.0.1:9",
    "--component-updater=url-source=http://127.0.0.1:9",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--disable-extensions",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-pings",
)


class ChromiumMissing(RuntimeError):
    """Chromium or Playwright is not installed; the message names the install lines."""


def chromium_path() -> Path:
    """The Chromium executable (Debian's binary behind its launcher), or ChromiumMissing naming how to
    install it."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        raise ChromiumMissing(f"{CHROMIUM} not found: {INSTALL_HINT}")
    if str(CHROMIUM) == "/usr/bin/chromium" and os.access(CHROMIUM_BINARY, os.X_OK):
        return CHROMIUM_BINARY
    return CHROMIUM


def require_playwright() -> Any:
    """``playwright.async_api``, or ChromiumMissing naming the extra."""
    try:
        from playwright import async_api
    except ImportError:
        raise ChromiumMissing(f"Playwright is not installed: {INSTALL_HINT}") from None
    return async_api


def launch_args(proxy_port: int, net_log: Path | None = None) -> list[str]:
    """Chromium's command line: the fence, the proxy, and optionally a NetLog (the safety test reads the
    names the resolver was asked for in it)."""
    args = [*FENCE_ARGS, f"--proxy-server=socks5://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    if net_log is not None:
        args += [f"--log-net-log={net_log}", "--net-log-capture-mode=Default"]
    return args


@dataclass
class Profile:
    """A headless Chromium with a regular profile of its own: its context (``new_page``) and directory."""

    context: Any
    directory: Path

    async def close(self) -> None:
        """Close the browser, then remove its profile directory."""
        try:
            await self.context.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


async def launch(playwright: Any, proxy_port: int, *, net_log: Path | None = None) -> Profile:
    """Headless Chromium with a fresh regular profile, fenced, all traffic through the proxy on
    ``proxy_port``."""
    executable = chromium_path()
    directory = Path(tempfile.mkdtemp(prefix="lossbench-chromium-"))
    try:
        context = await playwright.chromium.launch_persistent_context(
            str(directory),
            executable_path=str(executable),
            headless=True,
            args=launch_args(proxy_port, net_log),
            chromium_sandbox=False,
            timeout=30_000,
            env=_clean_env(),
        )
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
        raise
    return Profile(context, directory)


def _clean_env() -> dict[str, str]:
    """The environment without Google API keys (with them, Chromium signs in to Google services)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")}


def version() -> str:
    """Chromium's version string, for run.json."""
    import subprocess

    try:
        out = subprocess.run([str(chromium_path()), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError, ChromiumMissing):
        return "unknown"
    return out.stdout.strip() or "unknown"
