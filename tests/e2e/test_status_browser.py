"""The phone page in a real browser: Debian's chromium, headless, driven over the DevTools protocol by
Playwright (launched on the system binary: no browser download). A running daemon, the emulator as the
cloud, the page at phone width behind `[status] token`: it shows the counts the test caused, updates
without a reload when a read arrives, and a bib typed on it reaches the cloud exactly once. A screenshot
of the page is kept in $RUFUS_TEST_ARTIFACTS (default: artifacts/) as phone-page.png.

Chromium missing is a failure, not a skip: `make test` and .ci/run install Debian's `chromium`."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from gateway.emulator import Emulator
from tests.e2e.support import csv_lines, send, status_daemon, until
from tests.e2e.test_guards import clock_daemon
from tests.fixtures.daemon import Daemon, free_port

TOKEN = "finish-line-wifi-7731"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RUFUS_TEST_ARTIFACTS") or ROOT / "artifacts")
PHONE = {"width": 390, "height": 844}  # a current phone's CSS viewport


def chromium_binary() -> str:
    found = os.environ.get("RUFUS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is missing: apt-get install chromium (make test and .ci/run do it)"
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses to run as root with its sandbox
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium_binary(), headless=True, args=args)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def artifacts() -> Path:
    """Where the page's screenshot is kept (a CI artefact; README links the copy in docs/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def running(tmp_path: Path, enveloped: Emulator) -> AsyncIterator[tuple[Daemon, int, int]]:
    port, status_port = free_port(), free_port()
    d = status_daemon(
        tmp_path, enveloped, port, status_port, TOKEN, session={"alias": "Lakeside 10k", "timezone": "UTC"}
    )
    await d.start()
    try:
        yield d, port, status_port
    finally:
        await d.kill()


def lines_now(n: int, start: int = 0) -> list[str]:
    """csv reads stamped with the gateway's own clock (distinct chips: one passing each), as a mat reads them."""
    now = datetime.now(UTC)
    return [
        f"{100 + i},CHIP{100 + i},{(now + timedelta(milliseconds=10 * i)).isoformat()}" for i in range(start, start + n)
    ]


def cloud_bibs(emu: Emulator) -> list[str]:
    assert emu.store is not None
    return [p["bib"] for s in emu.state()["sessions"] for p in emu.store.passings_of(s, 1 << 30)]


async def open_page(browser: Browser, status_port: int) -> Page:
    page = await browser.new_page(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, timezone_id="UTC", locale="en-GB"
    )
    await page.goto(f"http://127.0.0.1:{status_port}/?token={TOKEN}")
    assert page.url == f"http://127.0.0.1:{status_port}/"  # the token left the address bar: a cookie has it
    return page


async def test_the_page_shows_the_run_updates_live_and_takes_a_manual_bib_once(
    browser: Browser, running: tuple[Daemon, int, int], enveloped: Emulator, artifacts: Path
) -> None:
    _daemon, port, status_port = running
    await send(port, lines_now(5))
    await until(lambda: len(cloud_bibs(enveloped)) == 5, what="5 passings in the cloud")
    page = await open_page(browser, status_port)
    await expect(page.locator("#sent")).to_have_text("5", timeout=10_000)
    await expect(page.locator("#pending")).to_have_text("0")
    await expect(page.locator("#rejected")).to_have_text("0")
    await expect(page.locator("#alias")).to_have_text("Lakeside 10k")
    reader = page.locator("#readers .reader[data-reader='finish']")
    await expect(reader.locator(".reads")).to_have_text("5")
    await expect(page.locator("#packup-answer")).to_have_text("YES: PACK UP", timeout=10_000)

    # a read arrives: the page shows it within 2 s, without a reload (the marker would be gone)
    await page.evaluate("window.__not_reloaded = true")
    await send(port, lines_now(1, start=5))
    await expect(reader.locator(".reads")).to_have_text("6", timeout=2_000)
    await expect(page.locator("#sent")).to_have_text("6", timeout=10_000)
    assert await page.evaluate("window.__not_reloaded === true")

    # bad input: one clear line on the page, nothing sent
    await page.click("#add")
    await expect(page.locator("#entry-msg")).to_have_text("bib: type the bib the mat missed")
    await page.fill("#bib", "12 34")
    await page.click("#add")
    await expect(page.locator("#entry-msg")).to_contain_text("'12 34' is not a bib")
    await page.fill("#bib", "77")
    await page.fill("#time", _in_ten_minutes())
    await page.click("#add")
    await expect(page.locator("#entry-msg")).to_contain_text("is in the future", timeout=5_000)

    # a bib the mat missed, tapped twice in a hurry: one passing in the cloud
    await page.fill("#time", "")
    await page.fill("#bib", "9001")
    await page.dblclick("#add")
    await expect(page.locator("#entry-msg")).to_contain_text("bib 9001 at", timeout=5_000)
    await expect(page.locator("#entry-msg")).to_contain_text("added")
    await expect(page.locator("#bib")).to_have_value("")
    await until(lambda: "9001" in cloud_bibs(enveloped), what="the typed bib in the cloud")
    await expect(page.locator("#sent")).to_have_text("7", timeout=10_000)
    await expect(page.locator("#pending")).to_have_text("0")
    assert sorted(cloud_bibs(enveloped)).count("9001") == 1
    assert len(cloud_bibs(enveloped)) == 7
    await expect(page.locator("#entries li")).to_have_count(1)
    await expect(page.locator("#entries li").first).to_contain_text("bib 9001")

    await page.screenshot(path=str(artifacts / "phone-page.png"), full_page=True)


async def test_a_mistyped_bib_is_voided_on_the_page_and_never_reaches_the_cloud(
    browser: Browser, tmp_path: Path, enveloped: Emulator
) -> None:
    """While the uploads are held (the Pi's clock is not synchronised yet, `hold_uploads_until_synced`), typed
    bibs stay Pending and never tried, so `mark --void`'s rule lets the page take one back. Then the clock syncs
    and only the kept one goes out."""
    port, status_port = free_port(), free_port()
    daemon, clock = clock_daemon(tmp_path, enveloped, port, status_port, "unsynced", TOKEN)
    await daemon.start()
    try:
        page = await open_page(browser, status_port)
        await expect(page.locator("#clock")).to_contain_text("uploads held", timeout=10_000)
        await send(port, csv_lines(2))
        await expect(page.locator("#pending")).to_have_text("2", timeout=10_000)
        for bib in ("4100", "41"):
            await page.fill("#bib", bib)
            await page.click("#add")
            await expect(page.locator("#entry-msg")).to_contain_text(f"bib {bib} at", timeout=5_000)
        await expect(page.locator("#pending")).to_have_text("4", timeout=10_000)
        await expect(page.locator("#packup-answer")).to_have_text("NOT YET: DON'T PACK UP")
        row = page.locator("#entries li", has_text="bib 4100")
        await row.locator("button.void").click()
        await expect(row.locator("button.void")).to_have_text("tap again to void #3")  # one tap is not enough
        await row.locator("button.void").click()
        await expect(page.locator("#entry-msg")).to_have_text("#3 voided: it will not be sent", timeout=5_000)
        await expect(row).to_contain_text("(voided)")
        await expect(page.locator("#pending")).to_have_text("3", timeout=10_000)
        assert daemon.query("SELECT bib, state, origin FROM passings WHERE num_passing = 3") == [
            ("4100", "Voided", "manual")
        ]
        clock.write_text("synced")
        await until(lambda: len(cloud_bibs(enveloped)) == 3, what="the 3 kept passings in the cloud")
        await expect(page.locator("#pending")).to_have_text("0", timeout=15_000)
        assert sorted(cloud_bibs(enveloped)) == ["100", "101", "41"]
        # once sent it cannot be taken back: the page says so, in one line
        kept = page.locator("#entries li", has_text="bib 41 ")
        await kept.locator("button.void").click()
        await kept.locator("button.void").click()
        await expect(page.locator("#entry-msg")).to_contain_text("not voided", timeout=5_000)
        await expect(page.locator("#entry-msg")).to_have_class("bad")
        assert sorted(cloud_bibs(enveloped)) == ["100", "101", "41"]
    finally:
        await daemon.kill()


def _in_ten_minutes() -> str:
    """A time ten minutes ahead as a crew types it (the page's zone is UTC); near midnight, with its date."""
    later = datetime.now(UTC) + timedelta(minutes=10)
    return later.strftime("%H:%M:%S") if later.date() == datetime.now(UTC).date() else later.isoformat("T", "seconds")
