"""End-to-end: a finished small study (2 learning rates × 2 seeds, 2 IMP levels, a reinit control, the Optuna study in
sqlite) read the way a researcher reads it: TensorBoard in headless Chromium (run names, tag groups, HParams table,
a screenshot), and the Optuna study database that optuna-dashboard shows.

The browser is Debian's ``chromium`` driven through its ``chromedriver`` with Selenium; ``.ci/run`` installs both.
Screenshots go to the test's tmp dir; with ``LTH_TUNE_SCREENSHOTS=DIR`` they are also written (palette PNGs, small)
to DIR — ``LTH_TUNE_SCREENSHOTS=docs/img`` refreshes the README's pictures.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from tests.tune.studies import write_study

pytestmark = pytest.mark.e2e

RUNS = ["lr=0.02 seed=0", "lr=0.02 seed=1", "lr=0.2 seed=0", "lr=0.2 seed=1", "lr=0.02 mean", "lr=0.2 mean"]
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1000"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The finished study: (experiment dir, stdout of `lth-tune sweep`)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("browser")
    path = write_study(tmp, str(tmp_path_factory.getbasetemp() / "data"), "tb", levels=2,
                       space={"train.lr": {"choice": [0.02, 0.2]}, "seed": {"choice": [0, 1]}},
                       experiment={"controls": {"kinds": ["reinit"], "levels": "last"}},
                       search={"storage": "sqlite"})
    out = subprocess.run([sys.executable, "-m", "lth_tune.cli", "sweep", str(path)], capture_output=True, text=True,
                         timeout=900, env=dict(os.environ, PYTHONUNBUFFERED="1"), check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp / "results" / "tb", out.stdout


def test_console_is_concise_and_closes_with_tensorboard_and_report(study):
    exp, stdout = study
    lines = stdout.splitlines()
    assert len(lines) < 40, stdout  # Tune's tables print hundreds
    assert not re.search(r"Trial \w+ (result|config)|Configuration for experiment|To visualize", stdout)
    assert any(line.startswith("trials 4/4 done · 0 running · 0 errored   levels 12/12") for line in lines), stdout
    assert f"TensorBoard: tensorboard --logdir {exp / 'tensorboard'}" in lines
    assert lines[-1] == f"report: {exp / 'report.html'}"


def test_optuna_study_database_holds_the_trials_for_optuna_dashboard(study):
    exp, _ = study
    df = pd.read_csv(exp / "results.csv")
    ot = optuna.load_study(study_name="tb", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert ot.metric_names == ["val_acc"] and ot.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted((t.params["train.lr"], t.params["seed"]) for t in done) == [(0.02, 0), (0.02, 1), (0.2, 0), (0.2, 1)]
    last = df[(df["level"] == 2) & (df["branch"] == "ticket")]
    expected = {(r["config/train.lr"], r["config/seed"]): r["val_acc"] for _, r in last.iterrows()}
    for t in done:  # the objective is the study metric at the trial's last level
        assert t.value == pytest.approx(expected[(t.params["train.lr"], t.params["seed"])])


# --------------------------------------------------------------------------- the browser

def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -c constraints.txt -e '.[dev]'")
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no Chromium + chromedriver on this machine (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*BROWSER_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='lth-chromium-')}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tensorboard_url(study, tmp_path_factory):
    exp, _ = study
    port = _free_port()
    log = tmp_path_factory.mktemp("tensorboard") / "tensorboard.log"
    exe = Path(sys.executable).with_name("tensorboard")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "--logdir", str(exp / "tensorboard"), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as r:
                    if set(RUNS) <= set(json.load(r)):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"TensorBoard did not serve the runs: {log.read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _screenshot(browser, tmp_path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    target = os.environ.get("LTH_TUNE_SCREENSHOTS")
    if target:
        from PIL import Image

        Path(target).mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("RGB").quantize(colors=128).save(Path(target) / f"{name}.png", optimize=True)
    return path


def _wait_for(browser, condition, what: str, timeout: float = 90):
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while time.time() < deadline:
        text = browser.find_element(By.TAG_NAME, "body").text
        if condition(text):
            return text
        time.sleep(1)
    pytest.fail(f"TensorBoard never showed {what}; the page said: {text[:3000]}")


def test_tensorboard_in_a_browser_shows_named_runs_grouped_tags_and_hparams(tensorboard_url, tmp_path):
    browser = _browser()
    try:
        browser.get(f"{tensorboard_url}/#timeseries")
        # no smoothing: 3 IMP levels are points, not a signal to smooth (TensorBoard keeps settings per browser)
        browser.execute_script("for (const k of ['_tb_global_settings', '_tb_global_settings.timeseries']) "
                               "localStorage.setItem(k, JSON.stringify({scalarSmoothing: 0, "
                               "timeSeriesSettingsPaneOpened: false}))")
        browser.refresh()
        text = _wait_for(browser, lambda t: all(r in t for r in RUNS) and re.search(r"ticket\s*\d+ cards", t),
                         "the runs named by their searched values and the ticket group")
        for group in ("accuracy", "loss", "ticket", "reinit", "verdict"):
            assert re.search(rf"\b{group}\s*\d+ cards", text), group
        assert "ray/tune" not in text and "training_iteration" not in text and "trial_" not in text
        time.sleep(5)  # the charts draw after the text is there
        shot = _screenshot(browser, tmp_path, "tensorboard")
        assert shot.stat().st_size > 10_000

        browser.get(f"{tensorboard_url}/#hparams")
        text = _wait_for(browser, lambda t: all(r in t for r in RUNS) and "train.lr" in t,
                         "the HParams table with one session per run")
        for column in ("seed", "train.lr", "test acc (sparsest)", "density (sparsest)", "winning density"):
            assert column in text, column
        time.sleep(2)
        _screenshot(browser, tmp_path, "tensorboard_hparams")

        browser.get(f"{tensorboard_url}/#custom_scalars")
        _wait_for(browser, lambda t: "test accuracy: ticket, reinit, random_prune" in t and "Matches (6)" in t,
                  "the custom-scalars charts with every configuration")
    finally:
        browser.quit()
