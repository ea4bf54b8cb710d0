"""Every notebook run through a real JupyterLab in headless Chromium, on tiny demo outputs.

The test starts JupyterLab (a free localhost port, a token) and Debian's Chromium through
chromedriver (selenium), opens notebooks 01, 04, 06 and 07 one after the other (``IN_BROWSER``;
what 02 and 03 leave is made by the functions they call), each a copy with tiny parameters
injected as papermill would, runs all cells from the Run menu, saves, and checks:
the kernel started, no cell ended in an error (the failing cell's source and error are the
failure message), every cell with a figure shows an image in the page, and notebook 07's
widgets render and redraw after one change. One screenshot per notebook goes to
``tests/artifacts/``. 01-04 make the data and one run; the other runs 06-07 read are trained
in between (tiny, seconds). Only the processes started here are stopped.

Needs: ``apt-get install chromium chromium-driver``, and jupyterlab, ipywidgets, selenium (the
``dev`` extra). Without them the test skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from tiny_runs import train_tiny_run

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("ECHO_VLSM_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ECHO_VLSM_CHROMEDRIVER", "/usr/bin/chromedriver"))
CELL_TIMEOUT = 150  # seconds for one notebook's run-all
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in the visible tab


def _missing() -> list[str]:
    missing = [f"{p} (apt-get install chromium chromium-driver)"
               for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    for module in ("selenium", "jupyterlab", "ipywidgets"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python package {module} (pip install -e '.[dev]')")
    return missing


def _require_tools():
    missing = _missing()
    if missing and os.environ.get("CI") == "true":
        pytest.fail("browser test needs " + "; ".join(missing))
    if missing:
        pytest.skip("browser test needs " + "; ".join(missing))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen | None) -> None:
    """Stop a process this test started (its own process group), by its pid."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


# -- the notebooks' tiny parameters -----------------------------------------------------------
def parameters(work: Path) -> dict[str, dict]:
    data, synth, runs = work / "phantom", work / "phantom-synthetic", work / "runs"
    common = {"profile": "demo", "runs_root": str(runs), "figures_dir": str(work / "figures"),
              "tables_dir": str(work / "paper")}
    return {
        "01_data_preparation.ipynb": {"source": "phantom", "n_patients": 6, "seed": 0,
                                      "raw_dir": str(work / "raw"), "out_dir": str(data),
                                      "size": 128, "workers": 0},
        "02_sdm_synthesis.ipynb": {"real_dir": str(data), "out_dir": str(synth),
                                   "sdm_dir": str(runs / "sdm"), "size": "tiny",
                                   "train_steps": 3, "sampling_steps": 2, "n_per_map": 1,
                                   "device": "cpu", "timing_samplers": []},
        "03_prompt_generation.ipynb": {"real_dir": str(data), "synthetic_dir": str(synth)},
        "04_train_vlsm.ipynb": {"model": "clipseg", "size": "tiny", "prompt": "p1",
                                "strategy": "real", "encoders": "trained", "epochs": 1,
                                "batch_size": 8, "real_dir": str(data),
                                "synthetic_dir": str(synth), "runs_root": str(runs),
                                "device": "cpu"},
        "05_freeze_ablation.ipynb": common,
        "06_dice_difference_plots.ipynb": common,
        "07_explore.ipynb": {"runs_root": str(runs), "real_dir": str(data), "structure": "lv",
                             "prompt": "p1", "compare_prompt": "p0", "n_disagree": 1,
                             "device": "cpu", "interactive": True},
    }


#: Opened in JupyterLab: the data (figures), a training run (progress bars), the comparison
#: (tables and plots) and the explorer (widgets). 02, 03 and 05 run under nbval and their own
#: papermill tests; here their outputs are made by the functions they call (``prepare``).
IN_BROWSER = ("01_data_preparation.ipynb", "04_train_vlsm.ipynb",
              "06_dice_difference_plots.ipynb", "07_explore.ipynb")


def prepare(name: str, p: dict) -> None:
    """What notebook ``name`` (02 or 03; 05 writes nothing 06 or 07 read) would leave for the
    notebooks after it, with its tiny parameters ``p``, made without the browser."""
    if name == "02_sdm_synthesis.ipynb":
        from echo_vlsm.sdm import SDMConfig, load_sdm, synthesize, train_sdm

        train_sdm(Path(p["real_dir"]), Path(p["sdm_dir"]),
                  SDMConfig(size=p["size"], train_steps=p["train_steps"], seed=0, device="cpu"),
                  progress=False)
        synthesize(load_sdm(Path(p["sdm_dir"]), device="cpu"), Path(p["real_dir"]),
                   Path(p["out_dir"]), n_per_map=p["n_per_map"], sampler="dpm++",
                   steps=p["sampling_steps"], seed=0, progress=False)
    elif name == "03_prompt_generation.ipynb":
        from echo_vlsm.prompts import write_tasks

        write_tasks(Path(p["real_dir"]), "camus", "geometry")
        write_tasks(Path(p["synthetic_dir"]), "synthetic", "geometry", on_empty="skip")


def train_remaining_runs(work: Path) -> None:
    """The runs notebooks 05-07 compare, beside notebook 04's: both encoder settings of the
    three strategies (P1) and the empty prompt P0, tiny CLIPSeg, one epoch each."""
    data, synth, runs = work / "phantom", work / "phantom-synthetic", work / "runs"
    for encoders in ("trained", "frozen"):
        for strategy in ("synthetic", "real", "synth-pt-real-ft"):
            train_tiny_run(data, runs, prompt="p1", strategy=strategy, encoders=encoders,
                           epochs=1, synthetic_dir=synth)
    train_tiny_run(data, runs, prompt="p0", strategy="real", encoders="trained", epochs=1,
                   synthetic_dir=synth)


def write_parameterized(name: str, params: dict, lab: Path) -> Path:
    """Notebook ``name`` with ``params`` injected after its parameters cell (papermill's
    cell), saved into JupyterLab's folder."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(ROOT / "notebooks" / name)), params)
    out = lab / name
    nbformat.write(nb, out)
    return out


# -- JupyterLab and the browser -------------------------------------------------------------
class Lab:
    """A JupyterLab server on a free port (started and stopped here)."""

    def __init__(self, root: Path, home: Path):
        self.root, self.port, self.token = root, _free_port(), os.urandom(12).hex()
        settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
               "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "module://"
               "matplotlib_inline.backend_inline", "PYTHONWARNINGS": "ignore"}
        self.log = open(home / "jupyterlab.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", f"--ServerApp.token={self.token}",
             f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
             "--LabApp.news_url=", "--ServerApp.allow_root=True"],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def _wait(self, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab did not start; log: {self.log.name}")

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def start_browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(str(CHROMEDRIVER), popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    return driver, service


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _menu(driver, menu: str, command: str) -> None:
    """Click menu ``menu`` (e.g. Run), then the item of ``command`` (e.g. run all cells)."""
    from selenium.webdriver.common.by import By

    label = _wait_for(lambda: [e for e in driver.find_elements(
        By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == menu], 30, f"menu {menu}")
    label[0].click()
    item = _wait_for(lambda: driver.find_elements(
        By.CSS_SELECTOR, f".lm-Menu-item[data-command='{command}']"), 10, command)
    item[0].click()


def _prompts(driver) -> list[str]:

    return driver.execute_script(
        "return Array.from(document.querySelectorAll("
        f"'{PANEL} .jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent.trim())")


def _kernel_idle(driver) -> bool:
    text = driver.execute_script(
        "const s = document.querySelector('.jp-StatusBar-Widget'); "
        "return document.querySelector('#jp-main-statusbar') ? "
        "document.querySelector('#jp-main-statusbar').textContent : (s ? s.textContent : '')")
    return "Idle" in text


def run_in_browser(driver, lab: Lab, path: Path) -> nbformat.NotebookNode:
    """Open a notebook, wait for its kernel, run all cells, save; the saved notebook."""
    name = path.name
    before = path.stat().st_mtime_ns
    driver.get(lab.url(f"lab/tree/{name}") + "&reset")  # a fresh workspace: only this tab
    _wait_for(lambda: _prompts(driver), 60, f"{name} to open")
    _wait_for(lambda: _kernel_idle(driver), 60, f"the kernel of {name} to start (Idle)")
    _menu(driver, "Run", "runmenu:run-all")
    n_code = len(_prompts(driver))

    def finished():
        prompts = _prompts(driver)
        running = any("*" in p for p in prompts)
        executed = [p for p in prompts if any(c.isdigit() for c in p)]
        # run-all stops at an error: the cells after it stay unnumbered
        return not running and executed and _kernel_idle(driver) and (
            len(executed) == n_code or _has_error(driver))

    _wait_for(finished, CELL_TIMEOUT, f"{name} to finish (cell prompts {_prompts(driver)})")
    time.sleep(0.5)
    _menu(driver, "File", "docmanager:save")
    _wait_for(lambda: path.stat().st_mtime_ns != before, 30, f"{name} to be saved")
    time.sleep(0.3)
    return nbformat.read(path, as_version=4)


def close_notebook(driver, lab: Lab) -> None:
    """Shut the notebook's kernel down (through the server's API); the next page load starts
    with a fresh workspace."""
    with urllib.request.urlopen(lab.url("api/sessions"), timeout=10) as r:
        sessions = json.load(r)
    for session in sessions:
        request = urllib.request.Request(lab.url(f"api/sessions/{session['id']}"),
                                         method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def _has_error(driver) -> bool:
    return bool(driver.execute_script(
        f"return Array.from(document.querySelectorAll('{PANEL} .jp-OutputArea-output')).some("
        "e => /Traceback|Error\\b/.test(e.textContent) && "
        "e.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr')"))


def check_notebook(driver, nb: nbformat.NotebookNode, name: str) -> None:
    """No error output; every cell with a figure shows an image in the page."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise AssertionError(
                    f"{name}: code cell {i} failed with {out.get('ename')}: "
                    f"{out.get('evalue')}\n--- cell source ---\n{cell.source}")
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"{name}: code cells {unrun} did not run"
    with_figure = [i for i, c in enumerate(code)
                   if any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    shown = driver.execute_script(
        f"return Array.from(document.querySelectorAll('{PANEL} .jp-CodeCell')).map("
        "c => c.querySelectorAll('.jp-OutputArea-output img').length)")
    missing = [i for i in with_figure if shown[i] == 0]
    assert not missing, f"{name}: code cells {missing} have a figure that the page does not show"


def check_widgets(driver) -> str:
    """Notebook 07's explorer is on the page and redraws after a new prompt; returns the
    status line before and after."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    box = _wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".echo-vlsm-explorer"), 30,
                    "notebook 07's explorer widget")[0]
    driver.execute_script("arguments[0].scrollIntoView()", box)
    status = box.find_element(By.CSS_SELECTOR, ".widget-html")
    before = status.text
    assert "dice" in before and "Left ventricular cavity" in before, before
    select = [s for s in box.find_elements(By.CSS_SELECTOR, ".widget-dropdown")
              if s.find_element(By.TAG_NAME, "label").text == "prompt"][0]
    Select(select.find_element(By.TAG_NAME, "select")).select_by_visible_text("p0")
    _wait_for(lambda: status.text != before and "(empty)" in status.text, 30,
              "the explorer to redraw after choosing P0")
    return f"{before} -> {status.text}"


@pytest.mark.slow
@pytest.mark.browser
def test_notebooks_in_jupyterlab(tmp_path):
    _require_tools()
    work, lab_dir = tmp_path / "work", tmp_path / "lab"
    work.mkdir()
    lab_dir.mkdir()
    params = parameters(work)
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    lab = driver = service = None
    timings = {}
    try:
        lab = Lab(lab_dir, tmp_path)
        driver, service = start_browser(tmp_path / "chromium-profile")
        for name, p in params.items():
            if name == "05_freeze_ablation.ipynb":
                t0 = time.time()
                train_remaining_runs(work)
                timings["train runs for 06-07"] = time.time() - t0
            t0 = time.time()
            if name not in IN_BROWSER:
                prepare(name, p)
                timings[f"{name} (without the browser)"] = time.time() - t0
                continue
            nb = run_in_browser(driver, lab, write_parameterized(name, p, lab_dir))
            driver.save_screenshot(str(ARTIFACTS / f"{Path(name).stem}.png"))
            check_notebook(driver, nb, name)
            if name == "07_explore.ipynb":
                check_widgets(driver)
                driver.save_screenshot(str(ARTIFACTS / "07_explore_widgets.png"))
            close_notebook(driver, lab)
            timings[name] = time.time() - t0
    finally:
        if driver is not None:
            driver.quit()
        if service is not None and service.process is not None:
            _stop(service.process)
        if lab is not None:
            lab.stop()
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert len(shots) == len(IN_BROWSER) + 1, shots
