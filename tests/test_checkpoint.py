"""Atomic, pickle-free checkpoints: round trip, crash safety, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wideberth.train.checkpoint as ckpt_mod
from wideberth.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_from_flat,
    read_checkpoint_meta,
    save_checkpoint,
)


def _model_and_opt(kind="sgd"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    if kind == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_roundtrip_restores_model_optimizer_state_and_meta(tmp_path, kind):
    model, opt = _model_and_opt(kind)
    path = save_checkpoint(
        tmp_path / "c.safetensors",
        model_state=model.state_dict(),
        optimizer=opt,
        example_state={"eps": torch.arange(5.0)},
        meta={"epoch": 3, "nested": {"a": [1, 2.5]}},
    )
    ck = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model[k], v)
    assert torch.equal(ck.example_state["eps"], torch.arange(5.0))
    assert ck.meta["epoch"] == 3 and ck.meta["nested"] == {"a": [1, 2.5]}
    # the optimiser continues identically after a reload
    model2, opt2 = _model_and_opt(kind)
    model2.load_state_dict(ck.model)
    opt2.load_state_dict(optimizer_from_flat(ck.optim, ck.meta["optimizer"]))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _model_and_opt()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model_state=model.state_dict(), optimizer=opt, meta={"epoch": 1})
    before = path.read_bytes()

    def crashing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)  # a partial write...
        raise OSError("disk full")  # ...then the crash

    monkeypatch.setattr(ckpt_mod, "save_file", crashing_save)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model_state=model.state_dict(), optimizer=opt, meta={"epoch": 2})
    assert path.read_bytes() == before
    assert read_checkpoint_meta(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_truncated_or_foreign_files_give_clear_errors(tmp_path):
    model, _ = _model_and_opt()
    path = save_checkpoint(tmp_path / "c.safetensors", model_state=model.state_dict(), meta={})
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a wideberth checkpoint"):
        read_checkpoint_meta(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint_meta(tmp_path / "missing.safetensors")


def test_no_pickle_in_checkpoints(tmp_path):
    model, opt = _model_and_opt("adam")
    path = save_checkpoint(
        tmp_path / "c.safetensors", model_state=model.state_dict(), optimizer=opt, meta={}
    )
    raw = path.read_bytes()
    assert raw[8:9] == b"{"  # safetensors: 8-byte header length, then JSON
    assert b"\x80\x04" not in raw[:64] and b"torch._utils" not in raw
