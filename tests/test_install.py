"""`pip install .` (not editable) ships what a run needs: the bundled music (with its hashes,
rights and sources) and the notebooks, found from the installed package outside the checkout."""
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from midilstm.music import expected_hashes

ROOT = Path(__file__).resolve().parent.parent
SERIES = ["01_parse", "02_encode", "03_train", "04_generate", "05_evaluate"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built offline from a copy of the sources (the build leaves nothing in the tree)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("midilstm", "music", "notebooks"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(dist), str(src)], check=True, capture_output=True,
                   timeout=300)
    return next(dist.glob("midilstm-*.whl"))


def test_the_wheel_holds_the_music_its_rights_and_the_notebooks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    music = {f"midilstm/_music/{n}" for n in expected_hashes()}
    assert music and music <= names
    assert {"midilstm/_music/SHA256SUMS", "midilstm/_music/README.md",
            "midilstm/_music/sources/josquin/COPYING"} <= names
    assert {f"midilstm/_notebooks/{n}.ipynb" for n in SERIES} <= names
    with zipfile.ZipFile(wheel) as zf:
        for name in expected_hashes():
            data = zf.read(f"midilstm/_music/{name}")
            assert hashlib.sha256(data).hexdigest() == expected_hashes()[name]


@pytest.mark.slow
def test_installed_package_runs_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the kernels inherit it too

    def python(*args):
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)

    found = python("-c", "import midilstm, midilstm.music as m, midilstm.runs as r; "
                         "print(midilstm.__file__, m.default_piece(), r.NOTEBOOK_DIR, sep='\\n')")
    assert found.returncode == 0, found.stderr
    assert all(line.startswith(str(site)) for line in found.stdout.splitlines())
    run = python("-m", "midilstm", "run", "--out", "out", "--to", "01_parse")
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "out" / "events.npz").exists()
    shutil.rmtree(site / "midilstm" / "_notebooks")
    missing = python("-m", "midilstm", "run", "--out", "out2")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "01_parse.ipynb: the notebook is missing" in missing.stderr
