"""A user's own model: import paths ``package.module:factory``, ``wideberth.models`` entry
points, and checkpoints that rebuild them in a fresh process with no registration code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import wideberth as wb
from wideberth.cli import main
from wideberth.models import ModelSpecError, build_model, list_models, model_record

SRC = str(Path(__file__).resolve().parents[1] / "src")

MYNET = '''
from torch import nn


def build(input_shape, num_classes, width=16):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(),
                         nn.Linear(width, num_classes))
'''

TINY = ["--set", "run.steps=3", "--set", "run.epochs=null", "--set", "data.train_subset=64",
        "--set", "eval.test_n=32", "--set", "data.val_size=0", "--quiet"]


def run_python(code: str, cwd: Path, pythonpath: str = SRC) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``tmp_path/mynet.py`` with the current directory there; the module is forgotten after."""
    (tmp_path / "mynet.py").write_text(MYNET)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("mynet", None)


def test_trained_import_path_model_reloads_in_a_fresh_process_elsewhere(user_module, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--set", "model.name=mynet:build", "--set", "model.params.width=12",
                 *TINY, "--out", str(run)]) == 0
    meta = wb.train.read_checkpoint_meta(run / "checkpoints" / "last.safetensors")
    rec = meta["model"]
    assert rec["source"] == "import" and rec["spec"] == "mynet:build"
    assert rec["file"] == str((tmp_path / "mynet.py").resolve())
    assert rec["params"] == {"width": 12}
    # the trained weights, through the user's own module in this process
    ckpt = wb.train.load_checkpoint(run / "checkpoints" / "last.safetensors")  # no val: no best
    import mynet  # type: ignore[import-not-found]

    net = mynet.build((1, 8, 8), 10, width=12)
    net.load_state_dict(ckpt.model)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net.eval()(x)
    save_file({"x": x, "logits": expected}, str(tmp_path / "probe.safetensors"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_python(f"""
        import json, sys, torch
        from safetensors.torch import load_file
        import wideberth as wb
        from wideberth.cli import main
        assert "mynet" not in sys.modules
        probe = load_file({str(tmp_path / "probe.safetensors")!r})
        model = wb.load_model({str(run)!r})
        with torch.no_grad():
            got = model(probe["x"])
        print(json.dumps({{"equal": bool(torch.equal(got, probe["logits"])),
                           "diff": float((got - probe["logits"]).abs().max())}}))
        sys.exit(main(["evaluate", {str(run)!r}]))
    """, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert json.loads(first) == {"equal": True, "diff": 0.0}
    assert any("clean accuracy" in line for line in rest)


def test_factory_convention(tmp_path, monkeypatch):
    (tmp_path / "facmod.py").write_text(textwrap.dedent('''
        from torch import nn
        CALLS = []

        def plain(width=3):                      # names neither input_shape nor num_classes
            CALLS.append(("plain", {"width": width}))
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def classes_only(num_classes, width=3):
            CALLS.append(("classes_only", {"num_classes": num_classes, "width": width}))
            return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))

        def anything(**kw):
            CALLS.append(("anything", dict(kw)))
            return nn.Sequential(nn.Flatten(), nn.Linear(64, kw["num_classes"]))

        class Net(nn.Module):
            def __init__(self, input_shape, num_classes, hidden=5):
                super().__init__()
                c, h, w = input_shape
                self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden),
                                        nn.Linear(hidden, num_classes))
            def forward(self, x):
                return self.fc(x)

        class Holder:
            make = staticmethod(plain)
    '''))
    monkeypatch.chdir(tmp_path)
    try:
        build_model("facmod:plain", (1, 8, 8), 10, width=7)
        build_model("facmod:classes_only", (1, 8, 8), 10)
        build_model("facmod:anything", (1, 8, 8), 10, depth=2)
        net = build_model("facmod:Net", (1, 8, 8), 4, hidden=9)
        build_model("facmod:Holder.make", (1, 8, 8), 10)  # a dotted attribute
        import facmod  # type: ignore[import-not-found]

        assert facmod.CALLS == [
            ("plain", {"width": 7}),
            ("classes_only", {"num_classes": 10, "width": 3}),
            ("anything", {"depth": 2, "input_shape": (1, 8, 8), "num_classes": 10}),
            ("plain", {"width": 3}),
        ]
        assert isinstance(net, facmod.Net) and net.fc[1].out_features == 9
        assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
        with pytest.raises(ModelSpecError, match=r"must give logits of shape \[1, 7\], got "
                                                 r"\(1, 10\)"):
            build_model("facmod:plain", (1, 8, 8), 7)
        with pytest.raises(ModelSpecError, match=r"bad params \['depth'\].*takes: width=3"):
            build_model("facmod:plain", (1, 8, 8), 10, depth=3)
    finally:
        sys.modules.pop("facmod", None)


@pytest.mark.parametrize(
    ("spec", "params", "expected"),
    [
        ("nosuchmodule:build", [], "cannot import module 'nosuchmodule'"),
        ("mynet:nope", [], "has no attribute 'nope'; its public callables: build"),
        ("mynet:build", ["--set", "model.params.depth=3"], r"bad params \['depth'\]"),
        ("no-such-model", [], "unknown model 'no-such-model'; valid models: "),
    ],
)
def test_model_errors_come_before_any_data_loads(user_module, capsys, spec, params, expected):
    out = user_module / "never"
    argv = ["train", "--set", f"model.name={spec}", *params,
            "--set", f"data.name=npz:{user_module / 'missing.npz'}", *TINY, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert "missing.npz" not in err  # the data were never touched
    assert not out.exists()


def test_a_broken_dependency_of_the_module_is_named(tmp_path, monkeypatch):
    (tmp_path / "needsdep.py").write_text("import not_installed_dep\n\ndef build(): ...\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSpecError, match="a dependency of it is missing; install "
                                             "'not_installed_dep'"):
        model_record("needsdep:build")


def _site(tmp_path: Path) -> Path:
    """A folder holding an 'installed' distribution mypkg 0.1 with wideberth.models entries."""
    site = tmp_path / "site"
    (site / "mypkg").mkdir(parents=True)
    (site / "mypkg" / "__init__.py").write_text(textwrap.dedent('''
        from torch import nn

        class TinyNet(nn.Module):
            def __init__(self, input_shape, num_classes, hidden=6):
                super().__init__()
                c, h, w = input_shape
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                                         nn.Linear(hidden, num_classes))
            def forward(self, x):
                return self.net(x)
    '''))
    dist = site / "mypkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[wideberth.models]\ntinynet = mypkg:TinyNet\nbrokennet = mypkg.nothere:Net\n"
    )
    return site


def test_entry_point_models_and_python_only_registrations(tmp_path):
    site = _site(tmp_path)
    proc = run_python("""
        import json, torch
        from wideberth.models import (MODELS, ModelSpecError, build_model, list_models,
                                      model_record, rebuild_model, register_model)
        out = {"listed": [n for n in list_models() if n in ("tinynet", "brokennet")]}
        net = build_model("tinynet", (1, 8, 8), 3, hidden=4)
        out["shape"] = list(net(torch.zeros(2, 1, 8, 8)).shape)
        out["record"] = model_record("tinynet", {"hidden": 4})
        again = rebuild_model(out["record"], (1, 8, 8), 3, hidden=4)
        out["rebuilt"] = type(again).__name__
        try:
            build_model("brokennet", (1, 8, 8), 3)
        except ModelSpecError as exc:
            out["broken"] = str(exc)

        @register_model("scriptnet", "registered in a script only")
        def scriptnet(input_shape, num_classes):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))

        rec = model_record("scriptnet")
        del MODELS["scriptnet"]  # what a fresh process sees
        try:
            rebuild_model(rec, (1, 8, 8), 10)
        except ModelSpecError as exc:
            out["scripted"] = [rec["source"], str(exc)]
        print(json.dumps(out))
    """, cwd=tmp_path, pythonpath=f"{site}{os.pathsep}{SRC}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["listed"] == ["brokennet", "tinynet"]
    assert out["shape"] == [2, 3] and out["rebuilt"] == "TinyNet"
    rec = out["record"]
    assert (rec["source"], rec["distribution"], rec["module"]) == ("entry-point", "mypkg", "mypkg")
    assert rec["params"] == {"hidden": 4}
    assert "registered by the installed package 'mypkg'" in out["broken"]
    assert "mypkg.nothere:Net" in out["broken"] and "ModuleNotFoundError" in out["broken"]
    source, msg = out["scripted"]
    assert source == "registered"
    assert "cannot rebuild it" in msg and "'package.module:factory'" in msg
    assert "tinynet" not in list_models()  # this process has no such distribution


def test_an_interrupted_import_path_run_resumes_from_another_directory(
    user_module, tmp_path, interrupt_after
):
    # The resumed run rebuilds the model from the checkpoint's record (the module's file),
    # so it needs neither the training directory nor the module on sys.path, and it ends
    # exactly where an uninterrupted run ends.
    from wideberth.config import apply_overrides, load_recipe
    from wideberth.train import train

    cfg = apply_overrides(load_recipe("digits-standard"), [
        "model.name=mynet:build", "model.params.width=12", "run.epochs=2",
        "data.train_subset=128", "eval.test_n=32", "data.val_size=0"])
    whole = train(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, callbacks=[interrupt_after(epoch=1)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_python(f"""
        import json, sys
        from wideberth.train import resume
        assert "mynet" not in sys.modules
        print(json.dumps(resume({str(tmp_path / "cut")!r}, progress=False).test))
    """, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == pytest.approx(whole.test)

