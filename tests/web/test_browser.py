"""The console in a real headless Chromium, beside the real daemon.

An institution sees its BOM file rejected with the hint (Chinese, then English); another institution
cannot reach it; an operator replays the fixed file from the page and it is forwarded. Screenshots of
the main pages go to ``$FDEP_SCREENSHOTS`` (default ``var/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness.daemon import d1001_body, d1001_name, drop, wait_for
from tests.conftest import REPO
from tests.web.conftest import BOM, OTHER_ORG, PASSWORDS, Site, outcome

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not Path(CHROMEDRIVER).exists(),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
SHOTS = Path(os.environ.get("FDEP_SCREENSHOTS") or REPO / "var" / "screenshots")
BOM_HINT_ZH = "请另存为“UTF-8（无 BOM）”后重新报送"
BOM_HINT_EN = "save as 'UTF-8 without BOM' and send again"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module, on a fresh profile, with nothing that would reach the network."""
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",  # Chromium runs as root here
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        "--lang=zh-CN",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a driver or browser
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    finally:
        if offline is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = offline
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shown(driver: Any, by: str, value: str, holding: str, *, timeout: float = 15) -> Any:
    """The element at ``value`` once its text holds ``holding``: after a click the browser may still show
    the page it is leaving (a form's POST and redirect take their time on a busy machine)."""

    def found(driver: Any) -> Any:
        element = driver.find_element(by, value)
        return element if holding in element.text else None

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(
        found, f"{value!r} holding {holding!r}"
    )


def log_in(driver: Any, site: Site, username: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{site.url}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[username])
    driver.find_element(By.ID, "login").click()
    wait_for(lambda: "/login" not in driver.current_url, timeout=15, what=f"{username} to be logged in")


def text(driver: Any) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


@pytest.fixture(scope="module")
def bad_file(site: Site) -> dict[str, Any]:
    """A file with a BOM, dropped into institution A's inbox while the daemon runs."""
    name = d1001_name(part=7)
    drop(site.gateway.inbox(), name, BOM + d1001_body())
    event = outcome(site.gateway, name)
    assert event["event"] == "rejected"
    return event


def test_institution_sees_its_file_with_the_bom_finding_in_chinese_then_english(
    browser: Any, site: Site, bad_file: dict[str, Any]
) -> None:
    log_in(browser, site, "inst-a")
    assert browser.current_url.endswith("/files")

    def listed() -> bool:
        browser.refresh()
        return bad_file["name"] in text(browser)

    wait_for(listed, timeout=30, what="the file on the institution's page")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-file-id="{bad_file["file_id"]}"]')
    assert "未通过校验" in row.text
    browser.save_screenshot(str(SHOTS / "institution-files.png"))

    row.find_element(By.TAG_NAME, "a").click()
    shown(browser, By.CSS_SELECTOR, 'tr.finding[data-code="BOM_PRESENT"] .finding-hint', BOM_HINT_ZH)
    assert "|BAD|" in browser.find_element(By.ID, "receipt").text
    browser.save_screenshot(str(SHOTS / "institution-file.png"))

    browser.find_element(By.ID, "lang-switch").click()
    shown(browser, By.CSS_SELECTOR, 'tr.finding[data-code="BOM_PRESENT"] .finding-hint', BOM_HINT_EN)
    assert "rejected" in browser.find_element(By.ID, "file-state").text
    browser.save_screenshot(str(SHOTS / "institution-file-en.png"))


def test_another_institution_cannot_reach_the_file(
    browser: Any, site: Site, bad_file: dict[str, Any]
) -> None:
    log_in(browser, site, "inst-b")
    assert site.files["b_good"]["name"] in text(browser)  # its own file is there
    assert bad_file["name"] not in text(browser)
    for path in (f"/files/{bad_file['file_id']}", f"/files/{bad_file['file_id']}/receipt"):
        browser.get(site.url + path)
        page = text(browser)
        assert "未找到该文件" in page
        assert bad_file["name"] not in page and "41210000" not in page
    browser.get(f"{site.url}/files?name={bad_file['name']}&institution=41210000")
    assert browser.find_elements(By.ID, "no-files")
    assert OTHER_ORG in text(browser)  # the header names its own institution, nothing of the other


def test_operator_replays_the_fixed_file_and_it_is_forwarded(
    browser: Any, site: Site, bad_file: dict[str, Any]
) -> None:
    quarantined = [
        p
        for p in (site.gateway.spool / "k1237" / ".gateway" / "quarantine").rglob(f"{bad_file['file_id']}.*")
        if not p.name.endswith("reason.json")
    ]
    assert len(quarantined) == 1
    quarantined[0].write_bytes(d1001_body())  # the institution sent the fix; the operator puts it in place

    log_in(browser, site, "ops")
    assert browser.current_url.endswith("/ops")
    row = browser.find_element(By.CSS_SELECTOR, f'#quarantine tr[data-file-id="{bad_file["file_id"]}"]')
    assert "BOM_PRESENT" in row.text
    browser.save_screenshot(str(SHOTS / "operator.png"))
    row.find_element(By.CLASS_NAME, "replay").click()
    shown(browser, By.ID, "notice", "已重新送入处理")

    wait_for(
        lambda: site.gateway.outcome_events(bad_file["name"])[-1]["event"] == "forwarded",
        timeout=30,
        what="the replayed file to be forwarded",
    )
    replayed = [
        e for e in site.gateway.events() if e["event"] == "replayed" and e["file_id"] == bad_file["file_id"]
    ]
    assert replayed[0]["detail"]["by"] == "console:ops"

    browser.get(f"{site.url}/files?name={bad_file['name']}")
    states = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#files td.state")]
    assert "已同步" in states and "已重新处理" in states
    browser.save_screenshot(str(SHOTS / "operator-files.png"))
