"""The web page in a real browser: headless Chromium (Debian's) driven by Selenium.

Selenium is given Debian's ``/usr/bin/chromedriver`` and ``chromium`` explicitly, so its driver
manager never tries to download one. The test skips only where no Chromium is installed (CI installs
``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import TOKEN, ServerProcess, resampling_bundle

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

CHROMEDRIVER = "/usr/bin/chromedriver"


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


@pytest.fixture
def browser(tmp_path: Path):  # noqa: ANN201 - a WebDriver
    binary = _chromium()
    if binary is None or not Path(CHROMEDRIVER).is_file():
        pytest.skip("no Chromium installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--disable-gpu", "--window-size=1400,1000", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run its sandbox as root
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_a_demo_case_and_see_the_overlay(tmp_path: Path, browser) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from seg.data.synthetic import make_synthetic_dataset

    demo = make_synthetic_dataset(tmp_path / "demo", 3, num_train=1, num_test=1)
    (case,) = sorted((demo / "imagesTs").iterdir())
    bundle = resampling_bundle(tmp_path / "demo3d", patch_size=[16, 16, 16])
    server = ServerProcess(tmp_path, [bundle], tmp_path / "store")
    try:
        browser.get(f"{server.url}/")
        token = browser.find_element(By.ID, "token")
        token.send_keys(TOKEN)
        browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value") == "demo3d")
        browser.find_element(By.ID, "file").send_keys(str(case))
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-overlay") == "drawn"
                   or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
        status = browser.find_element(By.ID, "status").text
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-overlay") == "drawn", status
        coloured = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-overlay-pixels"))
        legend = browser.find_element(By.ID, "legend").text
        wait.until(expected_conditions.element_attribute_to_include((By.ID, "download"), "download"))
        link = browser.find_element(By.ID, "download").get_attribute("href")
        # A pixel of the axial canvas that is coloured by a label, read back from the canvas itself.
        tinted = browser.execute_script(_TINTED_PIXELS, "axial")
        screenshot = tmp_path / "serve_page.png"  # the artifact: the page with the overlay
        assert browser.save_screenshot(str(screenshot))
        browser.find_element(By.ID, "opacity").send_keys("\ue012" * 10)  # arrow left: opacity to 0
        untinted = browser.execute_script(_TINTED_PIXELS, "axial")
    finally:
        server.stop()
    assert status.endswith("done.") and coloured > 0
    assert "1: class1" in legend and "2: class2" in legend
    assert link.startswith("blob:")
    assert tinted > 0 and untinted == 0
    assert screenshot.stat().st_size > 10_000


# Pixels whose red, green and blue differ (the scan is grey: only the label overlay adds colour).
_TINTED_PIXELS = """
const canvas = document.getElementById(arguments[0]);
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let count = 0;
for (let i = 0; i < data.length; i += 4) { if (data[i] !== data[i + 1] || data[i + 1] !== data[i + 2]) count++; }
return count;
"""
