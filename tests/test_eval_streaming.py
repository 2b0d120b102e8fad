"""Streaming evaluation: a Dataset or DataLoader gives exactly the stacked-tensor numbers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import wideberth as wb
from wideberth.evaluation import clean_metrics, min_perturbation_distance, summarize_attack
from wideberth.evaluation.streaming import as_stream


class SeededImages(Dataset):
    """Items made on demand from their index: (x, y) or (x, y, 1000 + index)."""

    def __init__(self, n: int, with_index: bool = False, offset: float = 0.0) -> None:
        self.n, self.with_index, self.offset = n, with_index, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        x = (0.3 + 0.4 * torch.rand(1, 4, 4, generator=g) + self.offset).clamp(0, 1)
        y = int(torch.randint(0, 3, (), generator=g))
        return (x, y, 1000 + i) if self.with_index else (x, y)


class Stream(IterableDataset):
    """The same items without a length."""

    def __init__(self, n: int) -> None:
        self.ds = SeededImages(n)

    def __iter__(self):
        return (self.ds[i] for i in range(self.ds.n))


def stacked(ds: Dataset):
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


KW = dict(norm="linf", epsilons=[0.02, 0.1], suite="quick", batch_size=32, seed=2, sanity=False)


def test_dataset_and_loaders_give_bitwise_the_stacked_results():
    m, ds = model(), SeededImages(90)
    x, y = stacked(ds)
    ref = wb.evaluate(m, x, y, **KW)
    assert 0 < ref.robust_accuracy["0.1"] < ref.clean_accuracy  # the grid bites
    for data in (ds, DataLoader(ds, batch_size=32), DataLoader(ds, batch_size=13),
                 DataLoader(ds, batch_size=100), Stream(90), DataLoader(Stream(90), batch_size=7)):
        rep = wb.evaluate(m, data, **KW)
        assert torch.equal(rep.success, ref.success), type(data).__name__
        assert torch.equal(rep.first_broken, ref.first_broken)
        assert rep.to_dict() == ref.to_dict()  # ids are positions here too
    with_ids = wb.evaluate(m, DataLoader(SeededImages(90, with_index=True), batch_size=9), **KW)
    assert with_ids.ids.tolist() == list(range(1000, 1090))
    assert torch.equal(with_ids.success, ref.success)


def test_sanity_checks_run_on_the_first_examples_of_a_stream():
    m, ds = model(1), SeededImages(40)
    x, y = stacked(ds)
    kw = {**KW, "sanity": True, "sanity_n": 10, "batch_size": 8}
    a = wb.evaluate(m, x, y, **kw)
    b = wb.evaluate(m, DataLoader(ds, batch_size=5), **kw)
    assert a.flags == b.flags and torch.equal(a.success, b.success)


def test_stream_state_file_resumes_and_refuses_other_data(tmp_path):
    m, ds = model(2), SeededImages(64)
    full = wb.evaluate(m, ds, **{**KW, "batch_size": 16})
    state = tmp_path / "s.json"
    seen: list[str] = []

    def stop_after_two(line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            raise KeyboardInterrupt

    kw = {**KW, "batch_size": 16, "state_file": state}
    with pytest.raises(KeyboardInterrupt):
        wb.evaluate(m, DataLoader(ds, batch_size=10), progress=stop_after_two, **kw)
    assert json.loads(state.read_text())["done_batches"] == 2
    lines: list[str] = []
    resumed = wb.evaluate(m, DataLoader(ds, batch_size=10), progress=lines.append, **kw)
    assert lines == ["batch 3/4: 48/64 examples", "batch 4/4: 64/64 examples"]
    assert torch.equal(resumed.success, full.success)
    with pytest.raises(ValueError, match="batch 0 of the data differs"):
        wb.evaluate(m, SeededImages(64, offset=0.01), **kw)


def test_clean_attack_and_margin_helpers_stream_with_the_same_numbers():
    m, ds = model(3), SeededImages(50)
    x, y = stacked(ds)
    loader = DataLoader(ds, batch_size=7)
    assert clean_metrics(m, loader, batch_size=16) == clean_metrics(m, x, y, batch_size=16)
    a = summarize_attack(m, x, y, eps=0.1, steps=10, batch_size=16)
    b = summarize_attack(m, loader, eps=0.1, steps=10, batch_size=16)
    assert torch.equal(a.robust_correct, b.robust_correct)
    assert torch.equal(a.distances, b.distances) and b.x_adv.shape[0] == 0  # nothing kept
    assert a.x_adv.shape[0] == 50
    with pytest.raises(ValueError, match="keep_adversarial=True"):
        b.save("unused.safetensors")
    da = min_perturbation_distance(m, x, y, methods=("fmn",), steps=20, batch_size=16)
    db = min_perturbation_distance(m, ds, methods=("fmn",), steps=20, batch_size=16)
    assert torch.equal(da["distance"], db["distance"]) and da["method"] == db["method"]


def test_stream_rechunks_to_the_batch_size_and_bad_input_is_explained():
    ds = TensorDataset(torch.rand(23, 1, 2, 2), torch.arange(23) % 2)
    sizes = [b.x.shape[0] for b in as_stream(DataLoader(ds, batch_size=4), None, 10).batches()]
    assert sizes == [10, 10, 3]
    starts = [b.start for b in as_stream(ds, None, 10).batches()]
    assert starts == [0, 10, 20]
    x = torch.rand(4, 1, 2, 2)
    with pytest.raises(ValueError, match="y is missing"):
        wb.evaluate(model(), x, **KW)
    with pytest.raises(ValueError, match="omit y"):
        wb.evaluate(model(), ds, torch.zeros(23), **KW)
    with pytest.raises(ValueError, match=r"\(x, y\) or \(x, y, index\)"):
        wb.evaluate(model(), [torch.rand(1, 4, 4)], **KW)
