"""The command as a newcomer meets it: quiet pipes, torch-free help, truthful defaults,
readable recipes, a finished run left alone, TensorBoard on request, logging from train()."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _py(code: str, **kw):
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120, **kw)


def test_recipes_into_a_closed_pipe_exits_quietly():
    # the reader is gone before anything is written: every write fails with EPIPE
    code = ("import os, sys\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
            "from wideberth.cli import main\n"
            "sys.exit(main(['recipes']))\n")
    res = _py(code)
    assert res.returncode in (0, 1)
    assert res.stderr == ""


def test_recipes_head_one_line():
    proc = subprocess.Popen([sys.executable, "-m", "wideberth", "recipes"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) in (0, 1)
    assert first.strip() and b"Traceback" not in err and err == b""


def test_help_and_version_do_not_import_torch():
    from wideberth.cli import build_parser

    commands = sorted(_subparsers(build_parser()))
    code = ("import sys, contextlib, io\n"
            "from wideberth.cli import main\n"
            f"for argv in [['--help'], ['--version']] + [[c, '--help'] for c in {commands!r}]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: main(argv)\n"
            "        except SystemExit: pass\n"
            "print('torch' in sys.modules)\n")
    res = _py(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    assert len(commands) >= 10


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


_DEFAULT_NUMBER = re.compile(r"default:?\s+(-?\d[\d.e+-]*)\b")


def test_every_option_has_help_with_its_true_default():
    from wideberth.cli import build_parser

    checked = 0
    for name, sub in _subparsers(build_parser()).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
            text = formatter._expand_help(action)
            for number in _DEFAULT_NUMBER.findall(text):
                assert float(number) == float(action.default), (
                    f"{name} {action.option_strings}: help says default {number}, "
                    f"parser default is {action.default!r}")
                checked += 1
    assert checked >= 15
    margins = _subparsers(build_parser())["margins"]
    n = next(a for a in margins._actions if a.dest == "n")
    assert n.default == 500 and "500" in margins._get_formatter()._expand_help(n)


def test_catalog_equals_the_attack_registry():
    from wideberth.attacks.registry import ATTACKS
    from wideberth.cli.catalog import ATTACK_INFO, SUITE_NAMES
    from wideberth.evaluation.suites import SUITES

    assert tuple(SUITES) == SUITE_NAMES
    assert [(a.name, a.kind, a.norms, a.summary, a.paper, a.aliases, a.default_steps)
            for a in ATTACK_INFO] == [
        (e.name, e.kind, tuple(e.norms), e.summary, e.paper, tuple(e.aliases), e.default_steps)
        for e in ATTACKS.values()]


def test_recipes_quick_first_with_one_sentence_descriptions(capsys):
    from wideberth.cli import main
    from wideberth.cli.info_cmd import QUICK_PREFIXES
    from wideberth.config import list_recipes, recipe_description

    for name in list_recipes():
        d = recipe_description(name)
        assert d.endswith(".") and ". " not in d[:-1] and len(d) <= 110, (name, d)
    assert main(["recipes"]) == 0
    listed = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()
              if ln.startswith("  ")]
    assert sorted(listed) == sorted(list_recipes())
    quick = [n.startswith(QUICK_PREFIXES) for n in listed]
    assert quick == sorted(quick, reverse=True) and quick[0] and not quick[-1]


def test_attack_header_claims_no_steps_for_fgsm():
    from wideberth.cli.attack_cmd import attack_header

    fgsm = attack_header("fgsm", "linf", 0.1, 1, 1, 10)
    assert "steps" not in fgsm and "single step" in fgsm
    assert "steps 40, restarts 2" in attack_header("pgd", "l2", 0.5, 40, 2, 10)


def test_tiny_run_tensorboard_logging_and_finished_resume(tmp_path, caplog, capsys):
    from wideberth.cli import main

    tensorboard = pytest.importorskip("tensorboard")  # noqa: F841
    run = tmp_path / "r"
    with caplog.at_level(logging.INFO, logger="wideberth"):
        assert main(["train", "--recipe", "digits-standard", "--out", str(run), "--quiet",
                     "--tensorboard", "--set", "run.steps=4", "--set", "data.val_size=50",
                     "--set", "model.name=mlp", "--set", "model.params.hidden=[8]"]) == 0
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    wideberth_records = [r for r in caplog.records if r.name.startswith("wideberth")]
    assert any("epoch 1/1" in r.getMessage() for r in wideberth_records)
    metrics = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["resume", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "is finished" in out and "--set run.epochs=" in out and "resuming" not in out
    assert (run / "metrics.jsonl").read_text() == metrics  # nothing ran again
    assert json.loads((run / "results.json").read_text())["steps"] == 4
