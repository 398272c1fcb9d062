"""The pages in real headless Chromium (Debian's ``chromium`` and ``chromium-driver``) against a real
``xaiready serve`` with a worker: sign in with a token, upload a model through the form, wait for its
verdict badge, open the model page and the explain form, upload an image and see the overlays.

Screenshots of the model list, the model page and the explain result are saved to the folder this test
prints (``$XAIREADY_SCREENSHOTS`` when set; ``make serve-screenshots`` copies them into docs/images).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARCH = "xaiready.testing.zoo:HealthyCNN"
WAIT_S = 90


@pytest.fixture(scope="module")
def db():
    """The pages are the same on either database: one SQLite server keeps this test short."""
    return None


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1360,900", "--no-first-run", "--disable-extensions", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no Selenium Manager download
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("XAIREADY_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def upload(client, path: Path, name: str, **fields):
    with open(path, "rb") as fh:
        return client.post("/api/models", files={"file": (path.name, fh)}, data={"name": name, **fields})


def screenshot(driver, path: Path) -> None:
    """The whole page, not only the window (Chrome DevTools' beyond-viewport capture)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000, f"{path} looks blank"


def severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_sign_in_upload_check_and_explain_in_chromium(server, tokens, model_files, browser, shots, capsys):
    wait = WebDriverWait(browser, WAIT_S)
    # two more models for the list: a broken one and a pickle that would run code (refused as untrusted)
    with server.client(tokens["admin"]) as c:
        for path, name, arch in ((model_files["DetachBetweenBlocks"], "detach-between-blocks",
                                  "xaiready.testing.zoo:DetachBetweenBlocks"),
                                 (model_files["hostile"], "downloaded-checkpoint", None)):
            model = upload(c, path, name, **({"arch": arch} if arch else {})).json()
            assert c.post(f"/api/models/{model['id']}/check", json={"input_shape": "1,3,32,32"}).status_code == 202

    browser.get(server.url + "/models")
    assert "/login" in browser.current_url, "a page without the cookie sends the browser to the login form"
    browser.find_element(By.ID, "token").send_keys(tokens["admin"])
    browser.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "upload")))
    assert browser.find_element(By.CSS_SELECTOR, ".who .team").text == "vision"

    browser.find_element(By.ID, "file").send_keys(str(model_files["HealthyCNN"]))
    browser.find_element(By.ID, "name").send_keys("healthy-cnn")
    browser.find_element(By.ID, "arch").send_keys(ARCH)
    browser.find_element(By.ID, "input_shape").send_keys("1,3,32,32")
    browser.find_element(By.ID, "upload-submit").click()

    # the model page follows its check job over server-sent events and shows the verdict when it ends
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".pagehead [data-verdict='full']")))
    assert browser.find_element(By.ID, "model-name").text.startswith("healthy-cnn")
    checks = browser.find_elements(By.CSS_SELECTOR, "#checks tbody tr")
    assert len(checks) >= 5 and "gradient-correct" in browser.find_element(By.ID, "checks").text
    assert "default" in browser.find_element(By.ID, "cam-layers").text
    assert browser.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    model_url = browser.current_url
    screenshot(browser, shots / "serve_model.png")

    browser.get(server.url + "/models")
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#models [data-verdict='pending']"))
    badges = {row.find_element(By.CSS_SELECTOR, "a.name").text: row.find_element(By.CSS_SELECTOR, "[data-verdict]")
              .get_attribute("data-verdict") for row in browser.find_elements(By.CSS_SELECTOR, "#models tbody tr")}
    assert badges == {"healthy-cnn": "full", "detach-between-blocks": "inference-only",
                      "downloaded-checkpoint": "refused"}, badges
    screenshot(browser, shots / "serve_models.png")

    browser.get(model_url)
    browser.find_element(By.ID, "explain-link").click()
    wait.until(ec.presence_of_element_located((By.ID, "explain-form")))
    checked = {e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, "input[name=methods]:checked")}
    assert checked == {"gradcam", "saliency"}, checked
    browser.find_element(By.ID, "images").send_keys(str(model_files["image"]))
    browser.find_element(By.ID, "explain-submit").click()

    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#overlays img.overlay")))
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                             for img in d.find_elements(By.CSS_SELECTOR, "#overlays img.overlay")))
    overlays = browser.find_elements(By.CSS_SELECTOR, "#overlays img.overlay")
    assert len(overlays) == 2
    assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in overlays)
    assert "map-values" in browser.find_element(By.ID, "overlays").text, "the health findings sit by each overlay"
    screenshot(browser, shots / "serve_explain.png")

    errors = severe(browser)
    assert not errors, errors
    with capsys.disabled():
        print(f"\nscreenshots: {shots}/serve_models.png, serve_model.png, serve_explain.png")
