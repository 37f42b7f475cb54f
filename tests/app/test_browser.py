"""The pages in a real browser (Debian's headless Chromium through Selenium): the blind test
answered, reloaded and continued; a generation heard and seen. Screenshots are kept in
test-artifacts/."""

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.app.live import served
from tests.conftest import save_tiny_model_with_codec
from tests.listening.systems import two_systems

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(
        "no Chromium here: install Debian's chromium and chromium-driver (.ci/run does)",
        allow_module_level=True,
    )

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
        "--window-size=1100,1700", f"--user-data-dir={tmp_path / 'chromium'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, seconds: float = 60):
    return WebDriverWait(driver, seconds).until(condition)


def play_both(driver) -> None:
    """Play each sample until it has really advanced (audio decoded and running)."""
    for slot in ("first", "second"):
        wait_for(driver, lambda d, s=slot: d.execute_script(
            f"const a = document.getElementById('{s}'); a.muted = true; a.play();"
            "return a.currentTime > 0.05;"))  # fmt: skip
    wait_for(driver, expected_conditions.element_to_be_clickable((By.ID, "choose-first")))


def progress_text(driver) -> str:
    return driver.find_element(By.ID, "progress-text").text


def start_rating(driver, url: str, rater: str) -> None:
    """Open the A/B page, sign in as `rater` and wait for the first pair."""
    driver.get(f"{url}/compare")
    driver.find_element(By.ID, "rater").send_keys(rater)
    driver.find_element(By.ID, "begin").click()
    wait_for(driver, lambda d: progress_text(d) == "Pair 1 of 5")


def test_a_rater_answers_three_pairs_reloads_and_continues(browser, tmp_path):
    a, b = two_systems(tmp_path / "systems")
    answers = tmp_path / "answers.jsonl"
    with served("--compare", str(a), str(b), "--answers", str(answers)) as (url, _):
        start_rating(browser, url, "rater-07")
        assert not browser.find_element(By.ID, "choose-first").is_enabled()  # listen first
        prompts = []
        for number, button in enumerate(["choose-first", "choose-second", "choose-first"], 1):
            wait_for(browser, lambda d, n=number: progress_text(d) == f"Pair {n} of 5")
            prompts.append(browser.find_element(By.ID, "prompt").text.strip("“”"))
            play_both(browser)
            browser.find_element(By.ID, button).click()
        wait_for(browser, lambda d: progress_text(d) == "Pair 4 of 5")
        saved = [json.loads(line) for line in answers.read_text().splitlines()]
        assert [s["prompt"] for s in saved] == prompts and len(set(prompts)) == 3
        assert {s["rater"] for s in saved} == {"rater-07"}

        browser.refresh()  # the rater id is remembered; the test continues at pair 4
        wait_for(browser, lambda d: progress_text(d) == "Pair 4 of 5")
        fourth = browser.find_element(By.ID, "prompt").text.strip("“”")
        assert fourth not in prompts
        play_both(browser)
        durations = browser.execute_script(
            "return ['first', 'second'].map((id) => document.getElementById(id).duration)"
        )
        assert durations == pytest.approx([0.5, 0.5], abs=0.01)  # the whole wavs were served
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "listening-test.png"))
        body = browser.find_element(By.TAG_NAME, "body").text
        assert str(a) not in body and str(b) not in body and "delay" not in body


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model_with_codec(tmp_path_factory.mktemp("model"), "stack_delay", 3)


def test_the_generate_page_plays_and_shows_what_it_made(browser, model_dir, tmp_path):
    with served("--model", str(model_dir), "--output_dir", str(tmp_path / "served")) as (url, _):
        browser.get(url)
        wait_for(browser, lambda d: "a codebook LM" in d.find_element(By.ID, "family").text)
        top_k = browser.find_element(By.ID, "sampling-top_k")  # the family's own options
        assert top_k.get_attribute("value") == "250"
        top_k.clear()
        top_k.send_keys("20")
        prompts = browser.find_element(By.ID, "prompts")
        prompts.clear()
        prompts.send_keys("calm piano\nfast drums")
        seconds = browser.find_element(By.ID, "seconds")
        seconds.clear()
        seconds.send_keys("0.5")
        browser.find_element(By.ID, "generate").click()
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result audio")) == 2)
        assert browser.find_element(By.ID, "error").text == ""
        progress = browser.find_element(By.ID, "progress")
        assert progress.get_attribute("value") == progress.get_attribute("max") != "1"
        images = browser.find_elements(By.CSS_SELECTOR, ".result img")
        wait_for(
            browser,
            lambda d: all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                for i in images
            ),
        )
        audio = browser.find_elements(By.CSS_SELECTOR, ".result audio")[0]
        wait_for(browser, lambda d: d.execute_script(
            "const a = arguments[0]; a.muted = true; a.play(); return a.currentTime > 0.05;",
            audio))  # fmt: skip
        settings = json.loads(
            browser.execute_script("return document.querySelector('.result pre').textContent")
        )
        assert settings["prompt"] == "calm piano" and settings["pattern"] == "stack_delay"
        assert settings["sampling"]["top_k"] == 20
        time.sleep(0.2)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "generate-page.png"))


def test_an_answer_the_server_could_not_save_is_shown_and_can_be_sent_again(browser, tmp_path):
    a, b = two_systems(tmp_path / "systems")
    answers = tmp_path / "answers.jsonl"
    with served("--compare", str(a), str(b), "--answers", str(answers)) as (url, _):
        start_rating(browser, url, "rater-08")
        play_both(browser)
        answers.unlink()
        answers.mkdir()  # the next write fails (as on a full or broken disk)
        browser.find_element(By.ID, "choose-first").click()
        wait_for(browser, lambda d: "Not saved" in d.find_element(By.ID, "error").text)
        assert progress_text(browser) == "Pair 1 of 5"
        answers.rmdir()
        answers.write_text("")
        wait_for(browser, expected_conditions.element_to_be_clickable((By.ID, "choose-first")))
        browser.find_element(By.ID, "choose-first").click()
        wait_for(browser, lambda d: progress_text(d) == "Pair 2 of 5")
        assert browser.find_element(By.ID, "error").text == ""
        assert len(answers.read_text().splitlines()) == 1


def test_pairs_whose_wavs_were_removed_mid_test_are_skipped_with_a_note(browser, tmp_path):
    """A player that cannot load its wav left the page stuck (its buttons wait for both
    samples to play); the page asks the server why and moves on past such pairs."""
    a, b = two_systems(tmp_path / "systems")
    answers = tmp_path / "answers.jsonl"
    with served("--compare", str(a), str(b), "--answers", str(answers)) as (url, _):
        kept = sorted(b.glob("*.wav"))[0]
        for wav in sorted(b.glob("*.wav"))[1:]:  # removed after serve paired them
            wav.unlink()
        browser.get(f"{url}/compare")
        browser.find_element(By.ID, "rater").send_keys("rater-09")
        browser.find_element(By.ID, "begin").click()
        wait_for(browser, lambda d: progress_text(d) == "Pair 1 of 1")
        wait_for(browser, lambda d: "A pair was skipped" in d.find_element(By.ID, "error").text)
        assert "restart serve" in browser.find_element(By.ID, "error").text
        assert json.loads(kept.with_suffix(".json").read_text())["prompt"] in (
            browser.find_element(By.ID, "prompt").text
        )
        play_both(browser)
        browser.find_element(By.ID, "choose-first").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "done").is_displayed())
        assert len(answers.read_text().splitlines()) == 1
