"""The browser plumbing itself: Chromium drives a page of a real stack, 127.0.0.1 is a secure
context (so `Secure` cookies work over plain http there), screenshots have the widths asked."""

from __future__ import annotations

import struct
from typing import Any

from tests.browser.conftest import PHONE_WIDTH, Stack, shoot


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_browser_on_a_running_stack(browser: Any, stack: Stack) -> None:
    browser.get(f"{stack.url}/healthz")
    assert '"ok"' in browser.page_source
    # Chromium treats loopback as potentially trustworthy: `Secure` cookies are kept on http.
    assert browser.execute_script("return window.isSecureContext") is True
    desktop, phone = shoot(browser, "plumbing-healthz")
    assert png_size(desktop.read_bytes())[0] == 1280
    assert png_size(phone.read_bytes())[0] == PHONE_WIDTH
