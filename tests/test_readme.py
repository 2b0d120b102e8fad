"""The README's "Bring your own" block runs as written on a clean folder: a user's model
file and npz train, a fresh process elsewhere evaluates the run, bare weights evaluate."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> str:
    """The fenced block right after ``<!-- readme-test: marker -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- readme-test: {re.escape(marker)} -->\n```\w*\n(.*?)\n```", text,
                      re.S)
    assert found, f"README.md has no block marked {marker!r}"
    return found.group(1)


def test_bring_your_own_block_runs_as_written(tmp_path):
    script = readme_block("bring-your-own")
    # the `wideberth` console script of this checkout, whichever environment runs the tests
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "wideberth"
    # -P (Python >= 3.11): the current folder is not on sys.path, as for the console script
    flag = "-P " if sys.version_info >= (3, 11) else ""
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {flag}-m wideberth \"$@\"\n")
    launcher.chmod(0o755)
    python = bin_dir / "python3"
    python.symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # step 2: the run folder re-evaluated from "/" (the model module is not importable there)
    # and step 3: the bare weights on all 1,797 examples of mine.npz
    assert re.search(r"clean accuracy 0\.\d{4} on 359 examples", out), out
    assert re.search(r"clean accuracy 0\.\d{4} on 1797 examples", out), out
    assert out.count("robust accuracy") == 2
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "best.safetensors").is_file()
    # the Python block continues in the same folder (it needs torchattacks)
    if importlib.util.find_spec("torchattacks") is None:
        pytest.skip("torchattacks is not installed (pip install --no-deps torchattacks)")
    code = readme_block("bring-your-own-python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    intervals, broken_by = (ast.literal_eval(line) for line in proc.stdout.splitlines()[-2:])
    assert set(intervals) == set(broken_by) == {"0.05", "0.1"}
    assert all(0 <= lo <= hi <= 1 for lo, hi in intervals.values())
    assert all(set(b) <= {"pgd-ce-20x1", "torchattacks-pgd"} for b in broken_by.values())
