"""`wideberth evaluate|attack|margins --model SPEC --weights FILE --data SPEC`: bare weights
with no run folder, read safely, loaded strictly, recorded with their SHA-256."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wideberth.cli import main
from wideberth.data import load_eval_data
from wideberth.evaluation.clean import clean_metrics
from wideberth.evaluation.robustness import evaluate
from wideberth.models import build_model


@pytest.fixture(scope="module")
def mlp_weights(tmp_path_factory):
    """An mlp (hidden [16]) for digits, saved as .pt and .safetensors, and the model."""
    d = tmp_path_factory.mktemp("bare")
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=[16])
    torch.save(model.state_dict(), d / "w.pt")
    save_file(model.state_dict(), str(d / "w.safetensors"))
    return d, model.eval()


@pytest.mark.parametrize("fname", ["w.pt", "w.safetensors"])
def test_evaluate_bare_weights_equals_python_api(mlp_weights, fname, capsys):
    d, model = mlp_weights
    out = d / f"{fname}.json"
    code = main(["evaluate", "--model", "mlp", "--model-params", "{hidden: [16]}",
                 "--weights", str(d / fname), "--data", "digits", "--norm", "linf",
                 "--eps", "0.05", "--suite", "quick", "--quiet", "--json", str(out)])
    assert code == 0
    rep = json.loads(out.read_text())
    x, y, _ = load_eval_data("digits")
    clean = clean_metrics(model, x, y, 500)
    robust = evaluate(model, x, y, norm="linf", epsilons=[0.05], suite="quick", seed=0)
    assert rep["n"] == 360 == clean["n"]
    assert rep["clean_loss"] == clean["loss"]
    expected = json.loads(json.dumps(robust.to_dict()))
    for key in ("clean_accuracy", "robust_accuracy", "avg_acc", "avg_rob_acc"):
        assert rep[key] == expected[key], key
    # the report names the model and the weights (with their hash), not a run
    assert "run" not in rep and "checkpoint" not in rep
    assert rep["model"] == "mlp" and rep["model_params"] == {"hidden": [16]}
    assert rep["weights_sha256"] == hashlib.sha256((d / fname).read_bytes()).hexdigest()


def test_user_model_file_and_npz_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynet_bw.py").write_text(
        "import torch.nn as nn\n"
        "def build(input_shape, num_classes, width=8):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(),\n"
        "                         nn.Linear(width, num_classes))\n")
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, size=(40, 1, 6, 6), dtype=np.uint8)
    ys = rng.integers(0, 3, size=40).astype(np.int64)
    ys[:3] = [0, 1, 2]
    np.savez(tmp_path / "mine.npz", x=xs, y=ys)
    torch.manual_seed(1)
    net = build_model("mynet_bw:build", (1, 6, 6), 3)  # imported from the cwd
    torch.save(net.state_dict(), tmp_path / "w.pt")
    code = main(["evaluate", "--model", "mynet_bw:build", "--weights", "w.pt",
                 "--data", "npz:mine.npz", "--norm", "linf", "--eps", "0.1", "--suite", "quick",
                 "--quiet", "--json", "r.json"])
    assert code == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    with torch.no_grad():
        pred = net.eval()(torch.from_numpy(xs).float() / 255).argmax(1).numpy()
    assert rep["n"] == 40
    assert rep["clean_accuracy"] == pytest.approx(float((pred == ys).mean()), abs=1e-12)
    assert 0.0 <= rep["robust_accuracy"]["0.1"] <= rep["clean_accuracy"]


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_needing_code_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    torch.save({"net.1.weight": _Evil(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()
    code = main(["evaluate", "--model", "mlp", "--weights", str(tmp_path / "evil.pt"),
                 "--data", "digits"])
    err = capsys.readouterr().err
    assert code == 2
    assert "refused" in err and "truncated" not in err
    assert not marker.exists()


def test_mismatched_weights_name_the_keys_and_suggest_import(mlp_weights, tmp_path, capsys):
    d, model = mlp_weights
    state = {f"module.body.{k}": v for k, v in model.state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "odd.safetensors"))
    code = main(["attack", "--model", "mlp", "--model-params", "{hidden: [16]}",
                 "--weights", str(tmp_path / "odd.safetensors"), "--data", "digits",
                 "--eps", "0.1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing: net.1.bias" in err and "unexpected:" in err and "extra.weight" in err
    assert "wideberth import" in err and "trades|mma|robustbench" in err


@pytest.mark.parametrize("argv, message", [
    (["evaluate"], "no model given"),
    (["evaluate", "runs/x", "--model", "mlp"], "not both"),
    (["margins", "--model", "mlp", "--data", "digits"], "--weights is missing"),
    (["attack", "--weights", "w.pt", "--data", "digits", "--eps", "0.1"], "--model is missing"),
    (["evaluate", "--model", "mlp", "--weights", "w.pt"], "--weights needs --data"),
])
def test_source_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_margins_bare_weights_records_the_weights(mlp_weights, tmp_path, capsys):
    d, _ = mlp_weights
    out = tmp_path / "m.json"
    code = main(["margins", "--model", "mlp", "--model-params", "{hidden: [16]}",
                 "--weights", str(d / "w.safetensors"), "--data", "digits", "--n", "20",
                 "--json", str(out)])
    assert code == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == 20 and len(rep["distances"]) == 20
    assert rep["weights_sha256"] == hashlib.sha256((d / "w.safetensors").read_bytes()).hexdigest()
