"""01_parse and 04_generate run in real JupyterLab, driven in headless Chromium (issue 17, item 6).

What a student does: open the notebook in JupyterLab, Run → Run All Cells, wait for the kernel to
go idle. Then every code cell ran, no cell shows an error, every output image loaded
(``naturalWidth > 0``) and at least one ``<audio>`` plays a WAV data URI of a duration above 0.

The notebooks run as copies in a temporary folder (never the committed ones), with their
``run_dir`` parameter pointing at a run prepared first by ``python -m midilstm run --to 03_train``
(small settings: 04 needs 01-03's files, not a good model). 01 writes into a run directory of its
own, so that 04 reads the prepared run untouched.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them where apt-get is
usable) and selenium (requirements.lock); without them the test is skipped with one line saying
why. ``MIDILSTM_BROWSER_TIMEOUT`` (seconds, default 300) bounds each notebook's run.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
RUN_TIMEOUT = float(os.environ.get("MIDILSTM_BROWSER_TIMEOUT", "300"))
# The prepared run: small enough for CI's 2 cores; 04 only needs a model, not a good one.
PREPARE = ["-p", "epochs", "1", "-p", "hidden_size", "32", "-p", "seq_len", "32",
           "-p", "n_events", "60"]
# What the copies change in their parameters cell besides run_dir.
SMALL = {"01_parse": {}, "04_generate": {"n_events": 60}}
WAV_URI = "data:audio/wav;base64,"

pytestmark = pytest.mark.slow


class _Report:
    """The lines printed at the end of the run: pytest captures a passing test's output."""

    name = "midilstm-browser-report"

    def __init__(self):
        self.lines = []

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.section("notebooks run in JupyterLab with headless Chromium")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def browser_report(request) -> list:
    """A list of lines for the terminal summary (no conftest.py here: tests/conftest.py is the
    ``conftest`` that the unit tests import from)."""
    plugins = request.config.pluginmanager
    report = plugins.get_plugin(_Report.name)
    if report is None:
        report = _Report()
        plugins.register(report, _Report.name)
    return report.lines


def _find(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _why_no_browser():
    """None when the test can run, else the one line saying what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements.lock pins it; make setup installs it)"
    missing = [what for what, names in (("chromium", ("chromium", "chromium-browser")),
                                        ("chromedriver", ("chromedriver",)))
               if not _find(*names)]
    if missing:
        return (f"no {' or '.join(missing)} on PATH: install Debian's chromium and chromium-driver "
                f"(.ci/run does where apt-get is usable, as root or with sudo)")
    return None


# --------------------------------------------------------------------------- the copies

def set_parameters(notebook, values):
    """Rewrite ``name: type = value  # comment`` lines of the parameters cell with new values."""
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    lines, left = cell.source.split("\n"), dict(values)
    for i, line in enumerate(lines):
        match = re.match(r"^(\w+)(\s*:[^=]*)=\s*(.*?)(\s+#.*)?$", line)
        if match and match.group(1) in left:
            name = match.group(1)
            lines[i] = f"{name}{match.group(2)}= {left.pop(name)!r}{match.group(4) or ''}"
    assert not left, f"not in the parameters cell: {sorted(left)}"
    cell.source = "\n".join(lines)


def copy_notebook(name, folder, run_dir):
    """The committed notebook without its outputs, its run_dir set, written into ``folder``."""
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    set_parameters(notebook, {"run_dir": str(run_dir), **SMALL[name]})
    nbformat.write(notebook, folder / f"{name}.ipynb")
    return sum(cell.cell_type == "code" for cell in notebook.cells)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    why = _why_no_browser()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("browser")
    run = root / "run"
    started = time.monotonic()
    prepared = subprocess.run(
        [sys.executable, "-m", "midilstm", "run", "--out", str(run), "--to", "03_train", *PREPARE],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert prepared.returncode == 0, ("preparing the run (01-03) failed:\n"
                                      + (prepared.stdout + prepared.stderr)[-3000:])
    lab = root / "lab"
    lab.mkdir()
    cells = {"01_parse": copy_notebook("01_parse", lab, root / "run_01"),
             "04_generate": copy_notebook("04_generate", lab, run)}
    return dict(root=root, lab=lab, cells=cells, prepare_s=time.monotonic() - started)


# --------------------------------------------------------------------------- the server

def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    """``jupyter lab`` on 127.0.0.1 with a port and token of its own, its log in a file."""

    def __init__(self, root, lab):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = root / "lab-settings"
        # No windowing: every cell stays in the page, so the checks below see every output.
        # No news or update checks: nothing to fetch, no notification over the notebook.
        for plugin, value in (("notebook-extension/tracker", {"windowingMode": "none"}),
                              ("apputils-extension/notification",
                               {"fetchNews": "false", "checkForUpdates": False})):
            path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(root / "lab-workspaces"),
                   JUPYTER_CONFIG_DIR=str(root / "jupyter-config"),
                   JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"))
        env.pop("MPLBACKEND", None)  # the notebooks choose %matplotlib inline themselves
        self.log_path = root / "jupyter-lab.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={lab}",
             "--ServerApp.shutdown_no_activity_timeout=1800",  # a safety net, should we leak it
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
            cwd=lab, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, chars=3000):
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def api(self, path, method="GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited with status {self.process.returncode}:\n"
                            + self.log_tail())
            try:
                self.api("/api/status")
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer on {self.url} within {timeout} s:\n"
                    + self.log_tail())

    def kernel_state(self, notebook):
        """The execution state of the notebook's kernel ('starting', 'idle', 'busy'), or None."""
        for session in self.api("/api/sessions"):
            if session.get("path") == notebook and session.get("kernel"):
                return session["kernel"].get("execution_state")
        return None

    def shut_down_kernels(self):
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server, its kernels
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def lab(work):
    server = Lab(work["root"], work["lab"])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(work):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find("chromium", "chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--mute-audio", "--no-first-run",
                     "--autoplay-policy=no-user-gesture-required",
                     f"--user-data-dir={work['root'] / 'chromium-profile'}"):
        options.add_argument(argument)
    service = Service(executable_path=_find("chromedriver"),
                      log_output=str(work["root"] / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# --------------------------------------------------------------------------- the page

PROMPTS = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
return cells.map(cell => {
  const prompt = cell.querySelector('.jp-InputArea-prompt');
  const source = cell.querySelector('.jp-InputArea-editor .cm-content');
  return [prompt ? prompt.innerText.trim() : '', source ? source.innerText.slice(0, 70) : ''];
});
"""

OUTPUTS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
const text = e => e.innerText || '';
return {
  stderr: [...panel.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')].map(text),
  widget_errors: [...panel.querySelectorAll('.jp-OutputArea-output')].map(text)
      .filter(t => t.includes('Error displaying widget')),
  images: [...panel.querySelectorAll('.jp-OutputArea-output img')].map(img => {
      img.scrollIntoView({block: 'center'});
      return {complete: img.complete, width: img.naturalWidth, src: img.src.slice(0, 30)};
  }),
};
"""

AUDIO = """
const done = arguments[arguments.length - 1];
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
const audios = [...panel.querySelectorAll('.jp-OutputArea-output audio')];
const metadata = audio => new Promise(resolve => {
  let answered = false;
  const answer = why => {
    if (answered) return;
    answered = true;
    const source = audio.currentSrc || audio.src || (audio.querySelector('source') || {}).src || '';
    resolve({src: source.slice(0, 40), duration: audio.duration, readyState: audio.readyState,
             error: audio.error ? audio.error.code : null, why: why});
  };
  audio.scrollIntoView({block: 'center'});
  if (audio.readyState >= 1) return answer('already loaded');
  audio.addEventListener('loadedmetadata', () => answer('loadedmetadata'), {once: true});
  audio.addEventListener('error', () => answer('error'), {once: true});
  setTimeout(() => answer('timeout'), 30000);
  audio.preload = 'metadata';
  audio.load();
});
Promise.all(audios.map(metadata)).then(done);
"""


def wait_for(what, predicate, timeout, lab, poll=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if lab.process.poll() is not None:
            pytest.fail(f"jupyter lab exited while waiting for {what}:\n" + lab.log_tail())
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def dialog_text(driver):
    from selenium.webdriver.common.by import By
    dialogs = driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog")
    return " | ".join(d.text.replace("\n", " ") for d in dialogs if d.is_displayed())


def open_notebook(driver, lab, name):
    """Open the notebook in a fresh workspace and wait for its kernel to be idle."""
    from selenium.webdriver.common.by import By

    notebook = f"{name}.ipynb"
    driver.get(f"{lab.url}/lab/workspaces/test-{name}/tree/{notebook}?token={lab.token}")
    wait_for(f"{notebook} to open in JupyterLab",
             lambda: driver.find_elements(By.CSS_SELECTOR,
                                          ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell"),
             90, lab)

    def idle():
        if dialog_text(driver):
            pytest.fail(f"a dialog opened over {notebook}: {dialog_text(driver)}")
        return lab.kernel_state(notebook) == "idle"
    wait_for(f"the kernel of {notebook} to start and go idle", idle, 120, lab)


def run_all_cells(driver, lab, name, n_cells):
    """Run → Run All Cells from the menu bar; wait until every cell ran or the run stopped."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    notebook = f"{name}.ipynb"
    prompts = driver.execute_script(PROMPTS)
    assert len(prompts) == n_cells, f"{notebook}: the page shows {len(prompts)} of {n_cells} code cells"
    WebDriverWait(driver, 30).until(ready.element_to_be_clickable(
        (By.XPATH, "//li[contains(@class, 'lm-MenuBar-item')][.//*[normalize-space()='Run']]")),
        "no Run menu in JupyterLab's menu bar").click()
    WebDriverWait(driver, 30).until(ready.element_to_be_clickable(
        (By.XPATH, "//li[contains(@class, 'lm-Menu-item')]"
                   "[.//*[contains(@class, 'lm-Menu-itemLabel')][normalize-space()='Run All Cells']]")),
        "no 'Run All Cells' in the Run menu").click()
    started = time.monotonic()

    quiet = {"polls": 0, "since": None}

    def finished():
        if dialog_text(driver):
            pytest.fail(f"a dialog opened while {notebook} ran: {dialog_text(driver)}")
        prompts = driver.execute_script(PROMPTS)
        busy = any("*" in prompt for prompt, _ in prompts)
        ran = sum(bool(re.search(r"\d", prompt)) for prompt, _ in prompts)
        if busy or ran == 0 or lab.kernel_state(notebook) != "idle":
            quiet.update(polls=0, since=None)
            return None
        quiet["polls"] += 1  # idle with nothing queued, three polls in a row: the run is over
        quiet["since"] = quiet["since"] or time.monotonic()
        return prompts if quiet["polls"] >= 3 else None
    prompts = wait_for(f"Run All Cells of {notebook} to finish (the kernel to go idle)", finished,
                       RUN_TIMEOUT, lab)
    seconds = quiet["since"] - started  # until the first of the polls that found it over
    not_run = [f"cell {i} ({prompt or 'no prompt'}): {source!r}"
               for i, (prompt, source) in enumerate(prompts) if not re.search(r"\d", prompt)]
    return seconds, not_run


def check_outputs(driver, lab, notebook):
    """The error outputs, the images (once all are loaded) and the audio players of the page."""
    def loaded():
        outputs = driver.execute_script(OUTPUTS)
        return outputs if all(image["complete"] for image in outputs["images"]) else None
    outputs = wait_for(f"the images of {notebook} to load", loaded, 60, lab)
    audio = driver.execute_async_script(AUDIO)
    return outputs, audio


ERROR = re.compile(r"Traceback|^\s*\w*(Error|Exception)\b", re.MULTILINE)


@pytest.mark.parametrize("name", ["01_parse", "04_generate"])
def test_run_all_cells_in_jupyterlab(name, work, lab, browser, browser_report):
    notebook = f"{name}.ipynb"
    if not browser_report:
        browser_report.append(f"run prepared for 04 (01-03, small settings) in {work['prepare_s']:.1f} s")
    opened = time.monotonic()
    open_notebook(browser, lab, name)
    open_s = time.monotonic() - opened
    seconds, not_run = run_all_cells(browser, lab, name, work["cells"][name])
    outputs, audio = check_outputs(browser, lab, notebook)
    lab.shut_down_kernels()  # the next notebook starts with the CPUs to itself

    errors = [text[-1500:] for text in outputs["stderr"] if ERROR.search(text)]
    warnings = [text[:200] for text in outputs["stderr"] if not ERROR.search(text)]
    images = outputs["images"]
    broken = [image for image in images if not image["width"] > 0]
    wavs = [a for a in audio if a["src"].startswith(WAV_URI)]
    playable = [a for a in wavs if a["duration"] and 0 < a["duration"] < float("inf")]
    line = (f"{notebook}: Run All Cells took {seconds:.1f} s (opening and kernel start "
            f"{open_s:.1f} s); {work['cells'][name]} code cells, {len(not_run)} not run, "
            f"{len(errors)} error outputs, {len(images)} images ({len(broken)} not loaded), "
            f"{len(audio)} audio players ({len(playable)} WAV data URIs with a duration: "
            + ", ".join(f"{a['duration']:.1f} s" for a in playable) + ")")
    browser_report.append(line)
    if warnings:
        browser_report.append(f"  {notebook} stderr (not errors): {warnings}")
    print(line)

    assert not errors, f"{notebook} shows error output in JupyterLab:\n" + "\n---\n".join(errors)
    assert not outputs["widget_errors"], f"{notebook}: {outputs['widget_errors']}"
    assert not not_run, (f"{notebook}: Run All Cells stopped; cells without an execution "
                         f"count:\n" + "\n".join(not_run))
    assert images, f"{notebook} shows no image after Run All Cells"
    assert not broken, f"{notebook}: images that did not load: {broken}"
    assert playable, (f"{notebook}: no <audio> with a {WAV_URI}... source and a duration above "
                      f"0; the players: {audio}")
