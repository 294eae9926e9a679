"""The page kerasgen serve shows at /, in a real browser: Debian's chromium, headless,
driven through its chromedriver by Selenium (no browser is downloaded).

Skipped when chromium or chromedriver is missing, unless KERASGEN_REQUIRE_BROWSER=1
(as .ci/run sets, after installing them), when it fails instead.
"""

import os
import shutil
import time

import pytest
from serving import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("KERASGEN_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromium-driver are required (apt-get install them)")
        pytest.skip("chromium or chromedriver is not installed")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=390,844",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_page_streams_text_and_stop_ends_it(browser, trained_run):
    from selenium.webdriver.common.by import By

    # A length the tiny model takes seconds to write, so Stop comes while it streams.
    with running_server(trained_run[1], "--max_tokens", "2000000") as (url, _):
        browser.get(url + "/")
        find = browser.find_element
        assert wait_for(lambda: "lstm" in find(By.ID, "model").text)
        prime = find(By.ID, "prime")
        prime.clear()
        prime.send_keys("KING")
        length = find(By.ID, "length")
        length.clear()
        length.send_keys("2000000")
        find(By.ID, "seed").send_keys("3")
        find(By.ID, "generate").click()
        first = wait_for(lambda: len(find(By.ID, "out").text) > 4 and find(By.ID, "out").text)
        assert first.startswith("KING")
        grown = wait_for(
            lambda: len(find(By.ID, "out").text) > len(first) + 20 and find(By.ID, "out").text
        )
        assert grown.startswith(first)
        find(By.ID, "stop").click()
        assert wait_for(lambda: find(By.ID, "status").text == "stopped")
        stopped = len(find(By.ID, "out").text)
        assert stopped < 2000004 and find(By.ID, "generate").is_enabled()
        # The server frees the row of the stream the page left.
        import httpx

        assert wait_for(lambda: httpx.get(url + "/health").json()["active_rows"] == 0)
        # A short one runs to its end.
        length.clear()
        length.send_keys("60")
        find(By.ID, "generate").click()
        assert wait_for(lambda: find(By.ID, "status").text == "done")
        assert len(find(By.ID, "out").text) == 64 and find(By.ID, "out").text.startswith("KING")
