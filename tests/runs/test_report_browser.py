"""The report in real headless Chromium: it loads from disk with no console error, shows the verdict,
the metric table, the curves and the overlays (every image decoded), and its tables sort on a click.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian packages ``chromium`` and
``chromium-driver``) and Selenium; the driver path is given explicitly, so Selenium Manager never
downloads anything. The screenshot's path is printed (``pytest -s``); ``make report-screenshot``
copies it to ``docs/images/run_report.png``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from .test_report_support import HOSTILE_PNG, engine_run_dir  # noqa: F401 (engine_run_dir is a fixture)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH = 1400

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},1000", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def loaded(browser, engine_run_dir):  # noqa: F811
    """The report that ``xaiready report`` wrote for a real ``xaiready run``, opened from disk."""
    browser.get((engine_run_dir / "report.html").resolve().as_uri())
    browser.execute_script("return document.readyState")
    return browser


def click(driver, element) -> None:
    """A real click, with the element scrolled clear of the sticky navigation bar."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", element)
    element.click()


def column(driver, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))"
        ".map(r => r.cells[arguments[1]].getAttribute('data-sort'))", table_id, index)


def test_loads_with_no_console_error(loaded):
    errors = [e for e in loaded.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert loaded.title.startswith("xaiready run report")  # a hostile name's onerror would change it


def test_verdict_table_curves_and_overlays_are_there(loaded):
    from selenium.webdriver.common.by import By

    verdict = loaded.find_element(By.ID, "verdict")
    assert verdict.get_attribute("data-verdict") == "full" and "full" in verdict.text
    assert "Grad-CAM beats random" in loaded.find_element(By.ID, "headlines").text
    rows = loaded.find_elements(By.CSS_SELECTOR, "#scores-table tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text.split()[0] for r in rows] == [
        "Grad-CAM", "Integrated", "random", "center"]
    charts = loaded.find_elements(By.CSS_SELECTOR, "svg.curve")
    assert len(charts) == 2 and all(c.size["width"] > 300 for c in charts)
    assert len(loaded.find_elements(By.CSS_SELECTOR, "svg.curve polyline.mean")) == 2 * 4
    images = loaded.execute_script(
        "return Array.from(document.images).map(i => [i.className, i.complete, i.naturalWidth])")
    overlays = [i for i in images if "overlay" in i[0]]
    assert len(overlays) == 2 * 9 and len(images) == 2 * 2 * 9
    assert all(complete and width > 0 for _, complete, width in images), images
    assert HOSTILE_PNG in loaded.find_element(By.ID, "examples").text.replace("\n", "")


def test_screenshot(loaded, tmp_path_factory):
    """The whole page as it first opens (before the sort test reorders its tables)."""
    loaded.execute_script("window.scrollTo({top: 0, behavior: 'instant'})")
    height = loaded.execute_script("return document.documentElement.scrollHeight")
    shot = loaded.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}})
    path = tmp_path_factory.mktemp("screenshot") / "run_report.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (WIDTH, height)
        assert len(img.convert("RGB").getcolors(1 << 24)) > 1000  # a rendered page, not a blank one
    print(f"\nreport screenshot: {path}")


def test_clicking_a_header_sorts_the_table(loaded):
    from selenium.webdriver.common.by import By

    header = loaded.find_elements(By.CSS_SELECTOR, "#slowest-table thead th")[2]  # total seconds
    click(loaded, header)
    up = [float(v) for v in column(loaded, "slowest-table", 2)]
    assert up == sorted(up) and header.get_attribute("aria-sort") == "ascending"
    click(loaded, header)
    down = [float(v) for v in column(loaded, "slowest-table", 2)]
    assert down == sorted(up, reverse=True) and header.get_attribute("aria-sort") == "descending"
    deletion = loaded.find_elements(By.CSS_SELECTOR, "#scores-table thead th")[1]
    click(loaded, deletion)
    means = [float(v) for v in column(loaded, "scores-table", 1)]
    assert means == sorted(means) and len(means) == 4
