"""The listening test end to end in a real browser: prepare -> serve -> webMUSHRA in Chromium -> analyze.

A small test (3 trials; sinc, folding and the session's tiny exported model; speech-like signals)
is prepared and served with ``listening_test.serving`` (PHP's built-in server on a copy of
webMUSHRA), and headless Chromium, driven by selenium, goes through it as an assessor would: the
start page, the volume page, every MUSHRA page (plays the reference and each condition, drags each
slider with the mouse and sets the exact score with the arrow keys, as webMUSHRA's keyboard
support allows), the finish page (assessor code, Send). Then ``analyze`` runs on the mushra.csv
that webMUSHRA wrote, and every score entered must come back, exactly, under the condition the key
says was behind its blinded name: the hidden reference, both anchors and the three systems.

Needs php (Debian: php-cli), chromium, chromedriver (chromium-driver), selenium (the test extra)
and a webMUSHRA folder (``listening_test.find_webmushra``); without one of them the test is skipped
and says which. ``BWE_REQUIRE_BROWSER_TEST=1`` (set by .ci/run when it could install them) turns
that skip into a failure. Screenshots of the first MUSHRA page and of the finish page, the CSV, the
report and the browser's console log are written to ``$BWE_TEST_ARTIFACTS/listening_browser``
(default: test-artifacts/listening_browser in the checkout).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from eval import listening_test as lt
from signals import speech_like, write_wav

pytestmark = pytest.mark.browser

RATE = 16000
TRIALS = 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(os.environ.get("BWE_TEST_ARTIFACTS", os.path.join(REPO, "test-artifacts")), "listening_browser")
# The score the assessor gives each condition in trial t (0, 1, 2 in the order the pages come):
# distinct per condition and per trial, so a score that comes back under the wrong condition or
# trial cannot match by chance. The hidden reference stays >= 90, so post-screening keeps the assessor.
BASE_SCORES = {"hidden_reference": 92, "tiny": 71, "folding": 58, "sinc": 37, "anchor_lp35": 24, "anchor_narrowband": 9}
ASSESSOR = "browser-bot"
TIMEOUT_S = 20.0


def _first_executable(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_tools() -> tuple[dict, str | None]:
    """({"php", "chromium", "chromedriver", "webmushra"}, None), or ({}, why the test cannot run)."""
    missing = []
    tools = {
        "php": _first_executable("php"),
        "chromium": _first_executable("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"),
        "chromedriver": _first_executable("chromedriver"),
    }
    packages = {"php": "php-cli", "chromium": "chromium", "chromedriver": "chromium-driver"}
    missing += [f"{name} (Debian: apt-get install {packages[name]})" for name, path in tools.items() if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    try:
        tools["webmushra"] = lt.find_webmushra()
    except lt.ListeningTestError:
        missing.append("webMUSHRA (set BWE_WEBMUSHRA to its folder)")
    return (tools, None) if not missing else ({}, "browser test needs " + ", ".join(missing))


@pytest.fixture(scope="module")
def tools() -> dict:
    found, reason = browser_tools()
    if reason is not None:
        if os.environ.get("BWE_REQUIRE_BROWSER_TEST") == "1":
            pytest.fail(f"BWE_REQUIRE_BROWSER_TEST=1 but the {reason}")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def prepared_test(tools, tmp_path_factory) -> tuple[str, dict]:
    """A 3-trial test of sinc, folding and the tiny export, from 3 generated 5 s clips."""
    from exported_tiny import exported_tiny

    _, _, export_dir = exported_tiny()
    corpus = tmp_path_factory.mktemp("browser_corpus")
    for i in range(TRIALS):
        write_wav(corpus / f"clip{i}.wav", speech_like(5.0, RATE, seed=40 + i), RATE)
    out = str(tmp_path_factory.mktemp("browser_test") / "mushra")
    with pytest.warns(UserWarning, match="'sinc' as a model"):
        key = lt.prepare(["sinc", "folding", f"tiny={export_dir}"], str(corpus), out, trials=TRIALS, seed=0)
    return out, key


# --------------------------------------------------------------------------------------------
# Driving webMUSHRA
# --------------------------------------------------------------------------------------------


def start_chromium(tools: dict):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = tools["chromium"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1100", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given and SE_OFFLINE set: Selenium Manager never goes to the network for a driver.
    os.environ.setdefault("SE_OFFLINE", "true")
    return webdriver.Chrome(options=options, service=Service(executable_path=tools["chromedriver"]))


def wait_for(driver, script: str, what: str, timeout_s: float = TIMEOUT_S):
    """Poll the JavaScript expression ``script`` until it is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        if time.monotonic() > deadline:
            errors = driver.execute_script("return typeof errorHandler === 'undefined' ? null : errorHandler.getErrors();")
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (webMUSHRA errors: {errors})")
        time.sleep(0.05)


def page_name(driver) -> str:
    return driver.execute_script("return $('#page_header').text();")


def click_next(driver) -> None:
    from selenium.webdriver.common.by import By

    index = driver.execute_script("return pageManager.getPageIndex();")
    driver.find_element(By.ID, "__button_next").click()
    wait_for(driver, f"pageManager.getPageIndex() === {index + 1}", f"page {index + 2}")


def play_and_check(driver, button_id: str, expected: str) -> None:
    """Click a play button; the stimulus named ``expected`` must play: selected, and its position moving."""
    from selenium.webdriver.common.by import By

    control = "pageManager.getCurrentPage().mushraAudioControl"
    driver.find_element(By.ID, button_id).click()
    wait_for(driver, f"{control}.audioPlaying && {control}.audioStimulus && {control}.audioStimulus.getId() === '{expected}'",
             f"{button_id} to play {expected}")
    start = driver.execute_script(f"return {control}.audioCurrentPosition;")
    wait_for(driver, f"{control}.audioCurrentPosition !== {start}", f"{expected} to advance (audio running)")


def move_slider(driver, cell, target: int) -> int:
    """Drag the slider in ``cell`` to about ``target`` with the mouse, then set it exactly with the
    arrow keys (webMUSHRA moves the slider of the playing condition by 1 per key); its value."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    handle = cell.find_element(By.CSS_SELECTOR, "a.ui-slider-handle")
    track = cell.find_element(By.CSS_SELECTOR, "div.ui-slider-track")
    field = cell.find_element(By.CSS_SELECTOR, "input.scales")
    assert field.is_enabled(), f"slider {field.get_attribute('name')} is still disabled after playing its condition"
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", track)
    box, knob = track.rect, handle.rect
    dy = box["y"] + box["height"] * (1.0 - target / 100.0) - (knob["y"] + knob["height"] / 2.0)
    ActionChains(driver).click_and_hold(handle).move_by_offset(0, int(round(dy))).release().perform()
    dragged = int(field.get_attribute("value"))
    assert abs(dragged - target) <= 10, f"the mouse drag went to {dragged}, not near {target}"
    # Keys go to webMUSHRA's document-wide shortcuts, not to the focused slider handle.
    driver.execute_script("document.activeElement.blur();")
    for _ in range(20):
        value = int(field.get_attribute("value"))
        if value == target:
            break
        ActionChains(driver).send_keys(Keys.ARROW_UP if value < target else Keys.ARROW_DOWN).perform()
    return int(field.get_attribute("value"))


def rate_mushra_page(driver, key: dict, trial_index: int) -> tuple[str, dict[str, int]]:
    """Play the reference and every condition, rate each; (trial id, {stimulus name: score})."""
    from selenium.webdriver.common.by import By

    page = "pageManager.getCurrentPage()"
    trial = driver.execute_script(f"return {page}.pageConfig.id;")
    assert driver.execute_script(f"return {page}.isMushra === true;"), f"{trial} is not a MUSHRA page"
    stimuli = key["trials"][trial]["stimuli"]
    play_and_check(driver, "buttonReference", "reference")
    cells = driver.find_elements(By.CSS_SELECTOR, "#mushra_items td.spaceForSlider")
    assert len(cells) == len(stimuli), f"{trial}: {len(cells)} sliders for {len(stimuli)} conditions"
    entered = {}
    for i, cell in enumerate(cells):
        name = cell.find_element(By.CSS_SELECTOR, "input.scales").get_attribute("name")
        play_and_check(driver, f"buttonConditions{i}", name)
        target = BASE_SCORES[stimuli[name]] + trial_index
        entered[name] = move_slider(driver, cell, target)
        assert entered[name] == target, f"{trial} {name}: slider at {entered[name]}, wanted {target}"
    assert sorted(entered) == sorted(stimuli), f"{trial}: the page's conditions {sorted(entered)} are not the key's"
    return trial, entered


def not_found(server_log: str) -> list[str]:
    """The paths PHP's server answered 404 (a config naming files that are not there)."""
    with open(server_log, encoding="utf-8", errors="replace") as f:
        return [line.split("[404]: ", 1)[1].split(" - ")[0] for line in f if "[404]: " in line]


def run_assessor(driver, server: lt.Server, key: dict) -> dict[str, dict[str, int]]:
    """Go through the whole test in the browser; the scores entered, {trial: {stimulus: score}}."""
    from selenium.webdriver.common.by import By

    driver.get(server.url)
    try:
        wait_for(driver, "typeof pageManager !== 'undefined' && pageManager !== null && pageManager.getPageIndex() >= 0",
                 "webMUSHRA to load the config and the audio")
    except AssertionError as e:
        missing = not_found(os.path.join(server.root, lt.SERVER_LOG))
        raise AssertionError(f"{e}; not found on the server: {missing[:5] or 'nothing'}") from None
    errors = driver.execute_script("return errorHandler.getErrors();")
    assert errors == [], f"webMUSHRA rejected the configuration: {errors}"
    pages = driver.execute_script("return pageManager.getNumPages();")
    assert pages == TRIALS + 3, f"webMUSHRA made {pages} pages of the config, expected {TRIALS + 3}"

    assert page_name(driver) == "Instructions"
    assert "basic audio quality" in driver.find_element(By.ID, "page_content").text
    click_next(driver)
    assert page_name(driver) == "Volume"
    driver.find_element(By.ID, "playCondition0").click()
    click_next(driver)

    entered = {}
    for t in range(TRIALS):
        trial, scores = rate_mushra_page(driver, key, t)
        entered[trial] = scores
        if t == 0:
            driver.execute_script("window.scrollTo(0, 0);")
            driver.save_screenshot(os.path.join(ARTIFACTS, "mushra_page_1.png"))
        click_next(driver)
    assert sorted(entered) == sorted(key["trials"]), "not every trial was shown once"

    assert page_name(driver) == "Thank you"
    send = driver.find_element(By.ID, "send_results")
    assert not send.is_enabled(), "Send is enabled before the assessor code is filled in"
    driver.find_element(By.ID, "assessor").send_keys(ASSESSOR)
    wait_for(driver, "!$('#send_results').is(':disabled')", "Send to be enabled")
    driver.save_screenshot(os.path.join(ARTIFACTS, "finish_page.png"))
    send.click()
    wait_for(driver, "$('#popupDialog').parent().hasClass('ui-popup-active')", "the thank-you dialog after Send")
    error_text = driver.execute_script("return $('#popupResultsContent').text();")
    assert "error" not in error_text.lower(), f"webMUSHRA could not store the results: {error_text}"
    driver.save_screenshot(os.path.join(ARTIFACTS, "finish_page_sent.png"))
    return entered


def test_an_assessor_runs_the_whole_test_in_chromium_and_analyze_unblinds_the_scores(tools, prepared_test):
    out, key = prepared_test
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    os.makedirs(ARTIFACTS)
    with lt.serving(out, tools["webmushra"], port=0) as server:
        assert not os.path.exists(server.results_csv)
        driver = start_chromium(tools)
        try:
            entered = run_assessor(driver, server, key)
        except BaseException:
            driver.save_screenshot(os.path.join(ARTIFACTS, "failure.png"))
            raise
        finally:
            with open(os.path.join(ARTIFACTS, "browser_console.json"), "w", encoding="utf-8") as f:
                json.dump(driver.get_log("browser"), f, indent=1)
            driver.quit()
            shutil.copy(os.path.join(server.root, lt.SERVER_LOG), ARTIFACTS)
    # The server is stopped; the ratings stay where serve said they would be.
    assert os.path.isfile(server.results_csv), f"webMUSHRA wrote no {server.results_csv}"
    shutil.copy(server.results_csv, ARTIFACTS)
    for name in ("mushra_page_1.png", "finish_page.png"):
        with open(os.path.join(ARTIFACTS, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name

    report = os.path.join(ARTIFACTS, "report")
    assert lt.main(["analyze", server.results_csv, "--key", server.key, "--out", report]) == 0
    # Every score entered comes back under the condition behind its blinded name, exactly.
    expected = {(trial, key["trials"][trial]["stimuli"][name], float(score))
                for trial, scores in entered.items() for name, score in scores.items()}
    ratings = lt.read_results(server.results_csv, key)
    assert {(r.trial, r.condition, r.score) for r in ratings} == expected
    assert len(ratings) == len(expected) == TRIALS * 6
    assert len({r.assessor for r in ratings}) == 1  # one session_uuid: one assessor
    assert {r.assessor for r in lt.read_results(server.results_csv, key, "assessor")} == {ASSESSOR}
    for condition, base in BASE_SCORES.items():
        scores = [base + t for t in range(TRIALS)]
        assert {(r.condition, r.score) for r in ratings if r.condition == condition} == {(condition, float(s)) for s in scores}

    with open(os.path.join(report, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["excluded"] == [] and len(summary["kept"]) == 1
    assert set(summary["conditions"]) == set(BASE_SCORES)
    for condition, base in BASE_SCORES.items():
        stats = summary["conditions"][condition]
        assert stats["n"] == TRIALS and stats["mean"] == pytest.approx(base + (TRIALS - 1) / 2, abs=1e-12), condition
    assert {(t["a"], t["b"]) for t in summary["wilcoxon"]} == {("sinc", "folding"), ("sinc", "tiny"), ("folding", "tiny")}
