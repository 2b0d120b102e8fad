"""Bare weight files: safetensors and torch.load(weights_only=True) only, never full
unpickling; containers and DataParallel prefixes unwrapped; clear errors."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wideberth.models import WeightsError, build_model, load_weights, unwrap_state_dict

SRC = str(Path(__file__).resolve().parents[1] / "src")


def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("cnn-small", (1, 8, 8), 10, channels=(4, 8), hidden=16).state_dict()


def assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_safetensors_and_pt_state_dicts_load_equal(tmp_path):
    state = small_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    # safetensors is recognised by its content, whatever the extension
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.bin"))
    a = load_weights(tmp_path / "w.safetensors")
    assert_equal_states(a, state)
    assert_equal_states(load_weights(tmp_path / "w.pt"), state)
    assert_equal_states(load_weights(tmp_path / "w.bin"), state)


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict", "net"])
def test_containers_and_module_prefix_are_unwrapped(tmp_path, key):
    state = small_state()
    wrapped = {key: {f"module.{k}": v for k, v in state.items()}, "epoch": 3, "acc": 0.9}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    assert_equal_states(load_weights(tmp_path / "ckpt.pth"), state)
    assert_equal_states(unwrap_state_dict({"outer": 1, key: state}), state)


def test_a_prefix_only_some_keys_have_is_kept():
    state = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    assert sorted(unwrap_state_dict(state)) == ["b", "module.a"]


class _Payload:
    """Unpickling this object calls ``pathlib.Path(target).touch()``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_a_file_that_needs_full_unpickling_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": small_state(), "hook": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    msg = str(err.value)
    assert "refused" in msg and "full unpickling" in msg and "would run code" in msg
    assert "torch.save(model.state_dict()" in msg  # how to fix it
    assert not marker.exists()
    # the control: full unpickling would have created the marker
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_content_that_is_not_a_state_dict_is_a_clear_error(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="hold a list, not a state dict"):
        load_weights(tmp_path / "list.pt")
    torch.save({"weights": torch.zeros(2), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(WeightsError, match=r"entries 'epoch' are not tensors"):
        load_weights(tmp_path / "mixed.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError, match="neither a safetensors file nor a readable"):
        load_weights(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(tmp_path / "missing.pt")


def test_evaluate_of_a_pt_file_says_it_is_not_a_wideberth_checkpoint(tmp_path):
    torch.save(small_state(), tmp_path / "mynet.pt")
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-m", "wideberth", "evaluate", "mynet.pt"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "not a wideberth checkpoint" in proc.stderr
    assert "--weights" in proc.stderr and "wideberth import" in proc.stderr
    assert "truncated" not in proc.stderr
    assert "Traceback" not in proc.stderr
