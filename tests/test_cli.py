"""The `wideberth` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "wideberth", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.mark.parametrize("command", ["train", "resume", "evaluate", "compare", "minmax", "recipes", "info", "attack", "margins"])
def test_every_command_has_help(command):
    out = run(command, "--help").stdout
    assert out.startswith("usage: wideberth " + command)


def test_train_evaluate_info_end_to_end(tmp_path):
    out = run("train", "--out", str(tmp_path / "r"), "--set", "run.epochs=3", "--quiet").stdout
    assert f"run folder: {tmp_path / 'r'}" in out
    acc = float(out.split("test accuracy: ")[1].split()[0])
    assert 0.5 < acc <= 1.0
    report_path = tmp_path / "eval.json"
    out = run("evaluate", str(tmp_path / "r"), "--json", str(report_path)).stdout
    report = json.loads(report_path.read_text())
    for key in (
        "n",
        "norm",
        "suite",
        "clean_accuracy",
        "robust_accuracy",
        "avg_acc",
        "avg_rob_acc",
        "flags",
    ):
        assert key in report
    assert report["n"] == 360
    assert report["clean_accuracy"] == pytest.approx(acc, abs=1e-4)
    assert "clean accuracy" in out
    robust_path = tmp_path / "robust.json"
    out = run("evaluate", str(tmp_path / "r"), "--norm", "linf", "--eps", "0.2", "0.05",
              "--suite", "quick", "--n", "60", "--json", str(robust_path),
              "--state", str(tmp_path / "state.json")).stdout
    rob = json.loads(robust_path.read_text())
    assert rob["suite"] == "quick" and rob["norm"] == "linf" and rob["n"] == 60
    assert list(rob["robust_accuracy"]) == ["0.05", "0.2"]
    r05, r2 = rob["robust_accuracy"].values()
    assert 0 <= r2 <= r05 <= rob["clean_accuracy"]
    assert "AvgRobAcc" in out and (tmp_path / "state.json").exists()
    # a report folder, then the two reports side by side
    out = run("evaluate", str(tmp_path / "r"), "--norm", "l2", "--eps", "0.3", "1.0",
              "--suite", "quick", "--n", "40", "--report", str(tmp_path / "rep"),
              "--report-n", "30", "--json", str(tmp_path / "l2.json"), "--quiet").stdout
    for f in ("report.json", "report.md", "robust_accuracy.png", "margins.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0, f
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Model | Cln Acc | AvgAcc | AvgRobAcc | ε=0.3 | ε=1 |" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["margins"]["n"] == 30
    out = run("compare", str(tmp_path / "l2.json"), str(tmp_path / "r"), "--norm", "l2",
              "--eps", "0.3", "1.0", "--suite", "quick", "--n", "40",
              "--plot", str(tmp_path / "cmp.png")).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[1].split("|")[2:] == rows[2].split("|")[2:]  # same model
    assert (tmp_path / "cmp.png").stat().st_size > 0
    out = run("minmax", "ensemble", str(tmp_path / "r"), str(tmp_path / "r"), "--eps", "0.1",
              "--n", "20", "--steps", "5", "--methods", "minmax", "avg",
              "--out", str(tmp_path / "mm")).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split() and line.split()[0] in ("minmax", "avg")}
    assert set(rows) == {"minmax", "avg"}
    for vals in rows.values():  # the same model twice: ASR_all equals each model's ASR
        assert vals[0] == vals[1] == vals[2]
    weights = json.loads((tmp_path / "mm" / "weights.json").read_text())
    assert len(weights["weights"]) == 20 and (tmp_path / "mm" / "weights.png").exists()
    out = run("minmax", "universal", str(tmp_path / "r"), "--eps", "0.2", "--n", "23",
              "--group-size", "4", "--steps", "5", "--out", str(tmp_path / "mu")).stdout
    assert "ASR_gp" in out
    weights = json.loads((tmp_path / "mu" / "weights.json").read_text())
    assert len(weights["weights"]) == 5 and weights["domains"] == [f"image {i}" for i in range(4)]
    out = run("minmax", "transforms", str(tmp_path / "r"), "--eps", "0.2", "--n", "10",
              "--steps", "5").stdout
    assert "ori" in out and "flh" in out and "hardest domain" in out
    bad = run("minmax", "universal", str(tmp_path / "r"), str(tmp_path / "r"), "--eps", "0.1",
              check=False)
    assert bad.returncode != 0 and "attacks one model" in bad.stderr
    info = json.loads(run("info", str(tmp_path / "r"), "--json").stdout)
    assert info["position"]["epoch"] == 3 and info["data"]["name"] == "digits"
    assert "progress:    epoch 3" in run("info", str(tmp_path / "r")).stdout


def test_default_out_folder_and_recipes(tmp_path):
    out = run("train", "--set", "run.steps=3", "--quiet", cwd=tmp_path).stdout
    assert "run folder: runs/digits-standard\n" in out
    out = run("train", "--set", "run.steps=3", "--quiet", cwd=tmp_path).stdout
    assert "run folder: runs/digits-standard-2\n" in out
    listing = run("recipes").stdout
    assert "digits-standard" in listing and "fashion-mnist-standard" in listing


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "optim.lr=-1"], "optim.lr must be >= 0"),
        (["train", "--set", "optim.lrr=1"], "unknown key optim.lrr"),
        (["train", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["evaluate", "does-not-exist"], "does not exist"),
        (["resume", "."], "no checkpoint to resume from"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    proc = run(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    run("train", "--out", str(out), "--set", "run.epochs=8", "--quiet")
    return out


def test_attack_command_reports_and_saves(trained_run, tmp_path):
    adv = tmp_path / "adv.safetensors"
    out = run("attack", str(trained_run), "--attack", "pgd", "--eps", "0.1", "--steps", "10",
              "--n", "100", "--out", str(adv)).stdout
    clean = float(out.split("clean accuracy:")[1].split()[0])
    robust = float(out.split("robust accuracy:")[1].split()[0])
    assert 0 <= robust < clean
    assert "perturbation linf norm, broken:" in out
    from safetensors.torch import load_file

    saved = load_file(str(adv))
    assert saved["x_adv"].shape == (100, 1, 8, 8) and saved["y"].shape == (100,)
    assert float(saved["x_adv"].min()) >= 0 and float(saved["x_adv"].max()) <= 1
    # the saved examples reproduce the printed robust accuracy
    import wideberth as wb

    model = wb.load_model(trained_run)
    acc = (model(saved["x_adv"]).argmax(1) == saved["y"]).float().mean().item()
    assert acc == pytest.approx(robust, abs=1e-4)


def test_margins_command_writes_json_and_plot(trained_run, tmp_path):
    js, png = tmp_path / "m.json", tmp_path / "m.png"
    out = run("margins", str(trained_run), "--n", "40", "--thresholds", "0.5",
              "--json", str(js), "--plot", str(png)).stdout
    assert "median" in out and "fraction below 0.5" in out
    report = json.loads(js.read_text())
    assert report["n"] == 40 and len(report["distances"]) == 40
    assert report["stats"]["count_misclassified"] == sum(d == 0 for d in report["distances"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
