"""A user's own data: npz / safetensors / folder specs, the seeded train / test carving, the
run's split re-derived by a fresh process, register_dataset, entry points, data_dir."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import wideberth
import wideberth.data as D
from wideberth.config import DataConfig, apply_overrides, load_config, load_recipe
from wideberth.data import loading
from wideberth.data.arrays import as_images
from wideberth.train import load_checkpoint, train

SRC = str(Path(wideberth.__file__).resolve().parents[1])
N, K = 100, 4


def _images(n: int = N, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, c, 8, 8] whose brightness encodes the label, and labels cycling 0..K-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    x = rng.integers(0, 40, (n, c, 8, 8)) + 60 * y[:, None, None, None]
    return x.astype(np.uint8), y.astype(np.int64)


def _env(*extra: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *map(str, extra)]),
            "OMP_NUM_THREADS": "1"}


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "wideberth", *args], capture_output=True,
                          text=True, cwd=cwd, env=env or _env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


TRAIN_SETTINGS = ["model.name=mlp", "model.params={hidden: [16]}", "data.val_size=0",
                  "data.batch_size=20", "run.epochs=2", "run.threads=1", "data.augment=none"]


# ---------------------------------------------------------------------------------------
# reading the files
# ---------------------------------------------------------------------------------------


def test_layouts_dtypes_and_formats_give_identical_tensors(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "nchw.npz", x=x, y=y)
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1), y=y)
    np.savez(tmp_path / "float.npz", x=x.astype(np.float32) / np.float32(255), y=y)
    from safetensors.numpy import save_file

    save_file({"x": x.transpose(0, 2, 3, 1).copy(), "y": y}, str(tmp_path / "d.safetensors"),
              metadata={"classes": json.dumps(["a", "b", "c", "d"])})
    ref, yref, info = D.load_eval_data(f"npz:{tmp_path / 'nchw.npz'}")
    assert ref.shape == (N, 3, 8, 8) and torch.equal(yref, torch.from_numpy(y))
    assert torch.equal(ref, torch.from_numpy(x).float() / 255)
    assert (info.num_classes, info.input_shape, info.augment) == (K, (3, 8, 8), None)
    for spec in ("npz:nhwc.npz", "npz:float.npz", "safetensors:d.safetensors"):
        got, ygot, _ = D.load_eval_data(spec, data_dir=tmp_path)
        assert torch.equal(got, ref) and torch.equal(ygot, yref), spec
    assert D.dataset_info("safetensors:d.safetensors", tmp_path).class_names == ("a", "b", "c", "d")
    # grey [N, H, W] is [N, 1, H, W]; an ambiguous [N, 3, 8, 3] is channels-first
    g = x[:, 0]
    assert torch.equal(as_images(g, "t"), as_images(g[:, None], "t"))
    assert as_images(np.zeros((2, 3, 8, 3), np.uint8), "t").shape == (2, 3, 8, 3)
    assert as_images(np.zeros((2, 8, 8, 3), np.uint8), "t").shape == (2, 3, 8, 8)


def _png_folder(root: Path, names=("zebra", "ant", "moth"), per=5, mode="RGB") -> dict[str, list]:
    from PIL import Image

    rng = np.random.default_rng(1)
    made: dict[str, list] = {}
    for name in names:
        (root / name).mkdir(parents=True)
        made[name] = []
        for i in range(per):
            a = rng.integers(0, 256, (8, 8, 3) if mode == "RGB" else (8, 8), dtype=np.uint8)
            Image.fromarray(a, mode).save(root / name / f"{i:02d}.png")
            made[name].append(a)
    return made


def test_folder_classes_sorted_labels_and_pixels_match(tmp_path):
    made = _png_folder(tmp_path / "imgs")
    x, y, info = D.load_eval_data("folder:imgs", data_dir=tmp_path)
    assert info.class_names == ("ant", "moth", "zebra") and info.num_classes == 3
    assert y.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    for k, name in enumerate(info.class_names):
        want = torch.from_numpy(np.stack(made[name])).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(x[y == k], want), name
    grey = _png_folder(tmp_path / "grey", names=("a", "b"), per=2, mode="L")
    xg, _, ig = D.load_eval_data(f"folder:{tmp_path / 'grey'}")
    assert ig.input_shape == (1, 8, 8) and torch.equal(xg[0, 0], torch.from_numpy(grey["a"][0]) / 255)


def test_folder_errors_name_the_file(tmp_path):
    from PIL import Image

    _png_folder(tmp_path / "f", names=("a", "b"), per=2)
    Image.new("L", (8, 8)).save(tmp_path / "f" / "b" / "09.png")
    with pytest.raises(D.DataError, match=r"b/09\.png: L image.*same size and the same colour"):
        D.load_eval_data(f"folder:{tmp_path / 'f'}")
    Image.new("RGB", (9, 8)).save(tmp_path / "f" / "b" / "09.png")
    with pytest.raises(D.DataError, match=r"b/09\.png: RGB image of 9x8 pixels.*8x8"):
        D.load_eval_data(f"folder:{tmp_path / 'f'}")
    (tmp_path / "f" / "b" / "09.png").write_bytes(b"not a png")
    with pytest.raises(D.DataError, match=r"b/09\.png: cannot read this image"):
        D.load_eval_data(f"folder:{tmp_path / 'f'}")
    (tmp_path / "f" / "b" / "09.png").unlink()
    (tmp_path / "f" / "c").mkdir()
    with pytest.raises(D.DataError, match=r"f/c: class folder holds no images"):
        D.load_eval_data(f"folder:{tmp_path / 'f'}")
    with pytest.raises(D.DataError, match="does not exist"):
        D.load_eval_data(f"folder:{tmp_path / 'nope'}")


class _Marker:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_array_file_errors(tmp_path):
    x, y = _images(10)
    bad = {
        "nox.npz": ({"images": x, "y": y}, r"no array 'x'; arrays present: 'images', 'y'"),
        "shape.npz": ({"x": x[:, :, :, :, None], "y": y}, r"x must have shape .*\[10, 3, 8, 8, 1\]"),
        "range.npz": ({"x": x.astype(np.float32), "y": y}, r"must lie in \[0, 1\], found values in \[0, 2"),
        "int.npz": ({"x": x.astype(np.int32), "y": y}, r"uint8 \(0..255\) or floating point in \[0, 1\], found dtype int32"),
        "yfloat.npz": ({"x": x, "y": y.astype(np.float32)}, "integer class labels, found dtype float32"),
        "ylen.npz": ({"x": x, "y": y[:9]}, r"y must have shape \[10\]"),
        "yneg.npz": ({"x": x, "y": y - 1}, r"labels must lie in \[0, K-1\], found values in \[-1, 2\]"),
        "cls.npz": ({"x": x, "y": y, "classes": np.array(["a", "b"])}, r"labels must lie in \[0, 1\]"),
    }
    for fname, (arrays, msg) in bad.items():
        np.savez(tmp_path / fname, **arrays)
        with pytest.raises(D.DataError, match=msg):
            D.load_eval_data(f"npz:{tmp_path / fname}")
    with pytest.raises(D.DataError, match=r"missing\.npz does not exist"):
        D.load_split(f"npz:{tmp_path / 'missing.npz'}", "train")
    (tmp_path / "junk.npz").write_bytes(b"hello")
    with pytest.raises(D.DataError, match="not a zip archive"):
        D.load_eval_data(f"npz:{tmp_path / 'junk.npz'}")
    # an object array is refused without being unpickled: its unpickling would make a file
    marker = tmp_path / "unpickled"
    arr = np.empty(1, dtype=object)
    arr[0] = _Marker(str(marker))
    np.savez(tmp_path / "obj.npz", x=arr, y=y[:1])
    with pytest.raises(D.DataError, match="pickled Python objects"):
        D.load_eval_data(f"npz:{tmp_path / 'obj.npz'}")
    assert not marker.exists()
    with pytest.raises(D.DataError, match=r"unknown dataset 'mine\.npz'.*Did you mean npz:mine\.npz"):
        D.dataset_info("mine.npz")


# ---------------------------------------------------------------------------------------
# train / test: carving, a second spec, indices, absolute paths
# ---------------------------------------------------------------------------------------


def test_seeded_carving_is_deterministic_disjoint_covering_and_reproducible(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = f"npz:{tmp_path / 'd.npz'}"
    splits = D.build_splits(spec, seed=3, test_fraction=0.25)
    tr, te = splits.train.index, splits.test.index
    assert len(te) == 25 and len(tr) == 75 and not set(tr.tolist()) & set(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(N))
    assert torch.equal(splits.test.y, torch.from_numpy(y)[te])  # indices are rows of the file
    assert torch.equal(splits.train.x, torch.from_numpy(x)[tr])
    again = D.build_splits(spec, seed=3, test_fraction=0.25)
    assert torch.equal(again.test.index, te)
    assert not torch.equal(D.build_splits(spec, seed=4, test_fraction=0.25).test.index, te)
    code = (
        "import wideberth.data as D, sys; from wideberth.config import DataConfig\n"
        f"x, y = D.load_split(DataConfig(name={spec!r}, split_seed=3, test_fraction=0.25), 'test')\n"
        "print(y.tolist()); print(D.carve_test(100, 0.25, 3)[1].tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=120, check=True).stdout.splitlines()
    assert json.loads(out[0]) == splits.test.y.tolist() and json.loads(out[1]) == te.tolist()


def test_second_spec_for_test_and_paths_resolved_in_place(tmp_path):
    x, y = _images(60)
    xt, yt = _images(20, seed=5)
    np.savez(tmp_path / "tr.npz", x=x, y=y, classes=np.array(list("abcd")))
    np.savez(tmp_path / "te.npz", x=xt.transpose(0, 2, 3, 1), y=yt)
    d = DataConfig(name="npz:tr.npz", test="npz:te.npz", data_dir=str(tmp_path), val_size=10)
    splits = D.build_splits(d)
    assert d.name == f"npz:{tmp_path / 'tr.npz'}" and d.test == f"npz:{tmp_path / 'te.npz'}"
    assert splits.info.class_names == tuple("abcd") and splits.info.name == d.name
    assert torch.equal(splits.test.index, torch.arange(20))
    assert torch.equal(splits.test.x, torch.from_numpy(xt))
    assert sorted(splits.train.index.tolist() + splits.val.index.tolist()) == list(range(60))
    np.savez(tmp_path / "te.npz", x=xt[:, :1], y=yt)
    with pytest.raises(D.DataError, match=r"test spec .*te\.npz has images of shape \[1, 8, 8\]"):
        D.build_splits(d)
    with pytest.raises(D.DataError, match="data.test=.* is for dataset specs"):
        D.load_split("digits", "test", test="npz:te.npz")


def test_mma_per_example_eps_is_keyed_by_file_rows(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = apply_overrides(load_recipe("digits-standard"), [
        f"data.name=npz:{tmp_path / 'd.npz'}", "model.name=mlp", "model.params={hidden: [16]}",
        "data.val_size=0", "data.batch_size=20", "run.epochs=1", "run.threads=1",
        "data.augment=none", "method.name=mma",
        "method.params={norm: linf, d_max: 0.2, eps_min: 0.05, steps: 2, n_search: 3}",
    ])
    res = train(cfg, tmp_path / "run", progress=False)
    state = load_checkpoint(res.run_dir / "checkpoints/last.safetensors").example_state
    _, test_rows = D.carve_test(N, 0.2, 0)
    train_rows = sorted(set(range(N)) - set(test_rows.tolist()))
    visited = (state["mma_epoch"] >= 0).nonzero().flatten().tolist()
    assert visited == train_rows  # one epoch visits every training row, keyed by its file row
    assert len(state["mma_eps"]) == max(train_rows) + 1


def test_train_records_absolute_paths_but_leaves_the_callers_config_alone(tmp_path, monkeypatch):
    x, y = _images()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(load_recipe("digits-standard"), [
        "data.name=npz:d.npz", "model.name=mlp", "model.params={hidden: [8]}",
        "data.val_size=0", "run.steps=2", "run.epochs=null", "run.threads=1"])
    res = train(cfg, tmp_path / "run", progress=False)
    assert cfg.data.name == "npz:d.npz"  # the caller's object is not rewritten
    assert load_config(res.run_dir / "config.yaml").data.name == f"npz:{tmp_path / 'd.npz'}"


def test_cli_train_then_evaluate_from_another_cwd(tmp_path):
    x, y = _images()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "a" / "mine.npz", x=x, y=y)
    sets = [a for s in ["data.name=npz:mine.npz", *TRAIN_SETTINGS] for a in ("--set", s)]
    _cli("train", "--out", "run", "--quiet", *sets, cwd=tmp_path / "a")
    run = tmp_path / "a" / "run"
    assert load_config(run / "config.yaml").data.name == f"npz:{tmp_path / 'a' / 'mine.npz'}"
    _cli("evaluate", str(run), "--which", "last", "--json", "e.json", cwd=tmp_path / "b")
    report = json.loads((tmp_path / "b" / "e.json").read_text())
    test = json.loads((run / "results.json").read_text())["test"]
    assert report["n"] == test["n"] == 20
    assert report["clean_accuracy"] == test["clean_accuracy"]
    assert report["clean_loss"] == pytest.approx(test["loss"], rel=1e-6)


# ---------------------------------------------------------------------------------------
# register_dataset, entry points, data_dir
# ---------------------------------------------------------------------------------------


def _loader(split: str, data_dir: Path):
    x, y = _images(60 if split == "train" else 20, seed=split == "test")
    return torch.from_numpy(x.transpose(0, 2, 3, 1).copy()), y  # channels-last, as declared


def test_register_dataset_trains_and_unknown_names_explain(tmp_path):
    try:
        D.register_dataset("mine", _loader, num_classes=K, input_shape=(3, 8, 8))
        assert "mine" in D.list_datasets()
        xt, yt = D.tensors("mine", "test")
        assert xt.shape == (20, 3, 8, 8) and torch.equal(yt, torch.from_numpy(_images(20, seed=1)[1]))
        cfg = apply_overrides(load_recipe("digits-standard"), ["data.name=mine", *TRAIN_SETTINGS])
        res = train(cfg, tmp_path / "run", progress=False)
        assert res.test["n"] == 20
        with pytest.raises(D.DataError, match="built-in"):
            D.register_dataset("digits", _loader, num_classes=K, input_shape=(3, 8, 8))
        D.register_dataset("bad", _loader, num_classes=K, input_shape=(1, 8, 8))
        with pytest.raises(D.DataError, match=r"dataset 'bad' \(python\).*neither the declared"):
            D.load_split("bad", "train")
    finally:
        D.unregister_dataset("mine")
        D.unregister_dataset("bad")
    with pytest.raises(D.DataError, match="unknown dataset 'mine'.*exists only in the process"
                       ".*npz:PATH.*entry point"):
        D.load_config_split(load_config(tmp_path / "run" / "config.yaml").data, "test")


def _entry_point_package(root: Path) -> Path:
    pkg = root / "site"
    (pkg / "tinyds").mkdir(parents=True)
    (pkg / "tinyds" / "__init__.py").write_text(
        "import numpy as np\n"
        "def tiny(split, data_dir):\n"
        "    n = 60 if split == 'train' else 20\n"
        "    y = np.arange(n) % 3\n"
        "    x = np.random.default_rng(n).random((n, 1, 8, 8)) * 0.2 + 0.3 * y[:, None, None, None]\n"
        "    return x.astype(np.float32), y\n"
        "tiny.num_classes = 3\ntiny.input_shape = (1, 8, 8)\ntiny.description = 'tiny'\n"
        "NOT_A_LOADER = 3\n"
    )
    info = pkg / "tinyds-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyds\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[wideberth.datasets]\ntiny = tinyds:tiny\nbroken = tinyds_nowhere:thing\n"
        "notloader = tinyds:NOT_A_LOADER\n"
    )
    return pkg


def test_entry_point_datasets(tmp_path, monkeypatch):
    pkg = _entry_point_package(tmp_path)
    monkeypatch.syspath_prepend(str(pkg))
    assert {"tiny", "broken", "notloader"} <= set(D.list_datasets())  # listed, not imported
    with pytest.raises(D.DataError, match=r"entry point 'broken' = 'tinyds_nowhere:thing'.*"
                       r"installed by tinyds.*failed to load: ModuleNotFoundError"):
        D.dataset_info("broken")
    with pytest.raises(D.DataError, match="'notloader'.*is not callable"):
        D.dataset_info("notloader")
    assert D.dataset_info("tiny").description == "tiny"
    # a fresh process trains on it and another evaluates the run with no registration code
    env = _env(pkg)
    sets = [a for s in ["data.name=tiny", *TRAIN_SETTINGS] for a in ("--set", s)]
    _cli("train", "--out", str(tmp_path / "run"), "--quiet", *sets, cwd=tmp_path, env=env)
    out = _cli("evaluate", str(tmp_path / "run"), "--which", "last", cwd=tmp_path, env=env)
    assert "tiny test: clean accuracy" in out and "on 20 examples" in out


def test_data_dir_is_honoured(tmp_path, monkeypatch, caplog):
    src = Path("/usr/share/datasets/fashion-mnist")
    if not (src / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    monkeypatch.setitem(D.SYSTEM_DIRS, "fashion-mnist", ())
    monkeypatch.delenv(D.FASHION_DIR_ENV, raising=False)
    mine = tmp_path / "mine" / "fashion-mnist"
    mine.mkdir(parents=True)
    for f in D.IDX_FILES["test"]:
        shutil.copy(src / f, mine / f)
    cfg = DataConfig(name="fashion-mnist", data_dir=str(tmp_path / "mine"), download=False)
    x, y = D.load_split(cfg, "test")  # what `wideberth evaluate RUN` calls
    assert x.shape == (10000, 1, 28, 28) and torch.bincount(y).tolist() == [1000] * 10
    empty = tmp_path / "empty"
    with pytest.raises(D.DataError, match=f"looked in {empty / 'fashion-mnist'} and download=False"):
        D.load_split("fashion-mnist", "test", data_dir=empty, download=False)
    # bundled datasets read no files: a data_dir is reported once, not silently dropped
    monkeypatch.setattr(loading, "_warned_data_dir", set())
    with caplog.at_level(logging.WARNING, logger="wideberth.data.loading"):
        D.build_splits(DataConfig(name="toy2d", data_dir=str(empty)))
        D.tensors("toy2d", data_dir=empty)
    warned = [r for r in caplog.records if "is not used" in r.getMessage()]
    assert len(warned) == 1 and "'toy2d' is bundled" in warned[0].getMessage()
