"""Tests for wideberth.data: IDX parsing, verified local loading and downloads, CIFAR
archives, digits / toy2d, splits, batching with exact resume, CIFAR augmentation."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wideberth import data as D

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------

_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as an IDX file (big-endian)."""
    kind = arr.dtype.kind + str(arr.dtype.itemsize)
    code = _CODES[kind]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def gz(b: bytes) -> bytes:
    return gzip.compress(b, mtime=0)


def fake_idx_files(seed: int, n_train: int = 20, n_test: int = 10) -> dict[str, bytes]:
    """Raw (uncompressed) payloads of a tiny MNIST-shaped IDX set."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        out[f"{prefix}-images-idx3-ubyte.gz"] = idx_bytes(
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        out[f"{prefix}-labels-idx1-ubyte.gz"] = idx_bytes((np.arange(n) % 10).astype(np.uint8))
    return out


def registry_for(raw: dict[str, bytes], base_url: str = "http://192.0.2.1/") -> D.RemoteSource:
    files = {f: D.RemoteFile(f, len(gz(b)), sha(gz(b)), len(b), sha(b)) for f, b in raw.items()}
    return D.RemoteSource(base_url, files)


def write_files(folder: Path, raw: dict[str, bytes], compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f, b in raw.items():
        if compress:
            (folder / f).write_bytes(gz(b))
        else:
            (folder / f.removesuffix(".gz")).write_bytes(b)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass


@pytest.fixture
def http_root(tmp_path):
    """A folder served on http://127.0.0.1:PORT by a background thread."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def no_fashion_system(monkeypatch):
    monkeypatch.setitem(D.SYSTEM_DIRS, "fashion-mnist", ())
    monkeypatch.delenv(D.FASHION_DIR_ENV, raising=False)


# ---------------------------------------------------------------------------------------
# IDX parsing
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_roundtrip(tmp_path, compress, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    b = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gz(b) if compress else b)
    out = D.read_idx(path)
    assert out.shape == (2, 3, 5)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable copy


def test_read_idx_truncated(tmp_path):
    b = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "short-images-idx3-ubyte"
    path.write_bytes(b[:-1])
    with pytest.raises(D.DataError, match=r"short-images-idx3-ubyte.*3135.*truncated"):
        D.read_idx(path)
    path.write_bytes(b + b"\0")
    with pytest.raises(D.DataError, match="trailing"):
        D.read_idx(path)
    path.write_bytes(b[:10])  # header cut short
    with pytest.raises(D.DataError, match="header"):
        D.read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gz(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))[:-20])
    with pytest.raises(D.DataError, match=r"x\.gz.*gzip.*download it again"):
        D.read_idx(path)


def test_read_idx_wrong_magic_and_code(tmp_path):
    b = bytearray(idx_bytes(np.zeros((3,), dtype=np.uint8)))
    path = tmp_path / "bad"
    b[0] = 1
    path.write_bytes(bytes(b))
    with pytest.raises(D.DataError, match=r"bad.*magic.*0x01 0x00"):
        D.read_idx(path)
    b[0] = 0
    b[2] = 0x07
    path.write_bytes(bytes(b))
    with pytest.raises(D.DataError, match="type code.*0x07"):
        D.read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(D.DataError, match="magic"):
        D.read_idx(path)
    assert issubclass(D.DataError, ValueError)


# ---------------------------------------------------------------------------------------
# local IDX sets (fake MNIST registered in place of the real one)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_local_idx_set_loads(tmp_path, monkeypatch, compress):
    raw = fake_idx_files(0)
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(raw))
    write_files(tmp_path / "mnist", raw, compress=compress)
    x, y = D.load_split("mnist", "train", data_dir=tmp_path, download=False)
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(20)]
    expected = np.frombuffer(raw["train-images-idx3-ubyte.gz"][16:], np.uint8)
    np.testing.assert_array_equal(x.numpy().ravel(), expected)
    xt, yt = D.load_split("mnist", "test", data_dir=tmp_path, download=False)
    assert xt.shape == (10, 1, 28, 28) and yt.shape == (10,)


def test_local_idx_hash_mismatch(tmp_path, monkeypatch):
    raw = fake_idx_files(0)
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(raw))
    other = fake_idx_files(1)
    write_files(
        tmp_path / "mnist",
        {**raw, "train-images-idx3-ubyte.gz": other["train-images-idx3-ubyte.gz"]},
    )
    with pytest.raises(
        D.DataError, match=r"train-images-idx3-ubyte\.gz.*expected decompressed SHA-256"
    ):
        D.load_split("mnist", "train", data_dir=tmp_path, download=False)


def test_label_count_mismatch_and_range(tmp_path, monkeypatch):
    raw = fake_idx_files(0)
    raw["train-labels-idx1-ubyte.gz"] = idx_bytes((np.arange(19) % 10).astype(np.uint8))
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(raw))
    write_files(tmp_path / "mnist", raw)
    with pytest.raises(D.DataError, match=r"one label per image \(20\)"):
        D.load_split("mnist", "train", data_dir=tmp_path, download=False)

    raw["train-labels-idx1-ubyte.gz"] = idx_bytes(np.full(20, 10, dtype=np.uint8))
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(raw))
    write_files(tmp_path / "mnist", raw)
    with pytest.raises(D.DataError, match=r"labels in \[0, 9\].*\[10, 10\]"):
        D.load_split("mnist", "train", data_dir=tmp_path, download=False)


def test_missing_files_message(tmp_path, no_fashion_system):
    with pytest.raises(D.DataError) as e:
        D.load_split("fashion-mnist", "train", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg


def test_fashion_dir_env_override(tmp_path, monkeypatch, no_fashion_system):
    raw = fake_idx_files(3)
    monkeypatch.setitem(D.REMOTE, "fashion-mnist", registry_for(raw))
    write_files(tmp_path / "elsewhere", raw)
    monkeypatch.setenv(D.FASHION_DIR_ENV, str(tmp_path / "elsewhere"))
    x, y = D.load_split("fashion-mnist", "test", data_dir=tmp_path / "cache", download=False)
    assert x.shape == (10, 1, 28, 28)


# ---------------------------------------------------------------------------------------
# downloads against a local HTTP server
# ---------------------------------------------------------------------------------------


def test_download_good_checksum(tmp_path, monkeypatch, http_root):
    root, url = http_root
    raw = fake_idx_files(0)
    write_files(root / "mnist", raw)
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(raw))
    cache = tmp_path / "cache"
    x, y = D.load_split("mnist", "train", data_dir=cache, mirror=url)
    assert x.shape == (20, 1, 28, 28)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    # now offline: the cached, verified copies are used
    x2, y2 = D.load_split("mnist", "train", data_dir=cache, download=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # the mirror can also come from the environment
    monkeypatch.setenv(D.MIRROR_ENV, url)
    xt, _ = D.load_split("mnist", "test", data_dir=cache)
    assert xt.shape == (10, 1, 28, 28)


def test_download_bad_checksum_leaves_nothing(tmp_path, monkeypatch, http_root):
    root, url = http_root
    raw = fake_idx_files(0)
    write_files(root / "mnist", raw)
    reg = registry_for(raw)
    fname = "train-images-idx3-ubyte.gz"
    good = reg.files[fname]
    bogus = "0" * 64
    files = {**reg.files, fname: D.RemoteFile(fname, good.size, bogus, good.raw_size, bogus)}
    monkeypatch.setitem(D.REMOTE, "mnist", D.RemoteSource(reg.base_url, files))
    cache = tmp_path / "cache"
    with pytest.raises(D.DataError) as e:
        D.load_split("mnist", "train", data_dir=cache, mirror=url)
    msg = str(e.value)
    assert fname in msg and bogus in msg and good.sha256 in msg  # expected and found
    assert not (cache / "mnist" / fname).exists()
    assert list((cache / "mnist").iterdir()) == []  # no partial / temporary file


def test_failed_redownload_keeps_previous_file(tmp_path, monkeypatch, http_root):
    """A local file that no longer verifies is re-downloaded; if the download fails its
    checksum, the previous file stays byte-for-byte as it was."""
    root, url = http_root
    old = fake_idx_files(0)  # what the user has
    new = fake_idx_files(1)  # what the registry now expects
    served = fake_idx_files(2)  # what a bad mirror serves
    fname = "train-images-idx3-ubyte.gz"
    cache = tmp_path / "cache"
    write_files(cache / "mnist", old)
    write_files(root / "mnist", served)
    before = (cache / "mnist" / fname).read_bytes()
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(new))
    with pytest.raises(D.DataError, match=r"failed verification.*left as it was"):
        D.load_split("mnist", "train", data_dir=cache, mirror=url)
    assert (cache / "mnist" / fname).read_bytes() == before
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(old)


def test_download_unreachable(tmp_path, monkeypatch, http_root):
    root, url = http_root  # serves an empty folder: 404
    monkeypatch.setitem(D.REMOTE, "mnist", registry_for(fake_idx_files(0)))
    with pytest.raises(D.DataError, match="could not download"):
        D.load_split("mnist", "test", data_dir=tmp_path, mirror=url)


# ---------------------------------------------------------------------------------------
# CIFAR-10 binary archives
# ---------------------------------------------------------------------------------------


def cifar_records(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray]:
    rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    rec[:, 0] = rng.integers(0, 10, n)
    return rec.tobytes(), rec


def make_tar(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> None:
    with tarfile.open(path, "w:gz") as tar:
        d = tarfile.TarInfo("cifar-10-batches-bin")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, b in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            tar.addfile(info, io.BytesIO(b))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)


@pytest.fixture
def cifar_tar(tmp_path):
    rng = np.random.default_rng(0)
    members, recs = {}, {}
    for i in range(1, 6):
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"], recs[i] = cifar_records(rng, 2)
    members["cifar-10-batches-bin/test_batch.bin"], recs["test"] = cifar_records(rng, 3)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    path = tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz"
    path.parent.mkdir(parents=True)
    make_tar(path, members)
    return path, recs


def test_cifar_archive_parsing(cifar_tar, monkeypatch):
    path, recs = cifar_tar
    b = path.read_bytes()
    monkeypatch.setitem(
        D.REMOTE,
        "cifar10",
        D.RemoteSource("http://192.0.2.1/", {path.name: D.RemoteFile(path.name, len(b), sha(b))}),
    )
    x, y = D.load_split("cifar10", "train", data_dir=path.parent.parent, download=False)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.uint8
    all_rec = np.concatenate([recs[i] for i in range(1, 6)])
    np.testing.assert_array_equal(y.numpy(), all_rec[:, 0])
    np.testing.assert_array_equal(x[3].numpy(), all_rec[3, 1:].reshape(3, 32, 32))
    # channel-major layout: first 1024 bytes are the red plane
    np.testing.assert_array_equal(x[0, 0].numpy().ravel(), all_rec[0, 1:1025])
    xt, yt = D.load_split("cifar10", "test", data_dir=path.parent.parent, download=False)
    assert xt.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(yt.numpy(), recs["test"][:, 0])

    # a tampered archive fails the checksum when not downloading
    monkeypatch.setitem(
        D.REMOTE,
        "cifar10",
        D.RemoteSource("http://192.0.2.1/", {path.name: D.RemoteFile(path.name, len(b), "f" * 64)}),
    )
    with pytest.raises(D.DataError, match="expected SHA-256 f{64}"):
        D.load_split("cifar10", "test", data_dir=path.parent.parent, download=False)


def test_cifar_download(tmp_path, cifar_tar, monkeypatch, http_root):
    path, recs = cifar_tar
    root, url = http_root
    (root / "cifar10").mkdir()
    (root / "cifar10" / path.name).write_bytes(path.read_bytes())
    b = path.read_bytes()
    monkeypatch.setitem(
        D.REMOTE,
        "cifar10",
        D.RemoteSource("http://192.0.2.1/", {path.name: D.RemoteFile(path.name, len(b), sha(b))}),
    )
    x, y = D.load_split("cifar10", "test", data_dir=tmp_path / "new", mirror=url)
    np.testing.assert_array_equal(y.numpy(), recs["test"][:, 0])


def _unsafe(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 3073 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "bad",
    [
        _unsafe("../evil.bin"),
        _unsafe("cifar-10-batches-bin/../../evil.bin"),
        _unsafe("/tmp/evil.bin"),
        _unsafe("cifar-10-batches-bin/link", tarfile.SYMTYPE, "/etc/passwd"),
        _unsafe(
            "cifar-10-batches-bin/hard", tarfile.LNKTYPE, "cifar-10-batches-bin/test_batch.bin"
        ),
    ],
)
def test_cifar_rejects_unsafe_members(tmp_path, bad):
    rng = np.random.default_rng(0)
    members = {
        f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records(rng, 1)[0] for i in range(1, 6)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(rng, 1)[0]
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    path = inner / "cifar-10-binary.tar.gz"
    make_tar(path, members, extra=[bad])
    with pytest.raises(D.DataError, match="unsafe"):
        D.read_cifar_archive(path, "test")
    assert not (tmp_path / "a" / "evil.bin").exists() and not (tmp_path / "evil.bin").exists()


def test_cifar_bad_member_size(tmp_path):
    rng = np.random.default_rng(0)
    members = {
        f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_records(rng, 1)[0] for i in range(1, 6)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(rng, 2)[0][:-5]
    path = tmp_path / "c.tar.gz"
    make_tar(path, members)
    with pytest.raises(D.DataError, match=r"test_batch\.bin.*multiple of 3073.*6141"):
        D.read_cifar_archive(path, "test")
    with pytest.raises(D.DataError, match="missing"):
        make_tar(path, {"cifar-10-batches-bin/test_batch.bin": cifar_records(rng, 1)[0]})
        D.read_cifar_archive(path, "train")


# ---------------------------------------------------------------------------------------
# digits, toy2d, real Fashion-MNIST
# ---------------------------------------------------------------------------------------


def test_digits_split():
    from sklearn.datasets import load_digits

    xtr, ytr = D.load_split("digits", "train")
    xte, yte = D.load_split("digits", "test")
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert xtr.min() >= 0 and xtr.max() == 1.0 and xte.max() <= 1.0
    # stratified: each class's test share is within one image of 360/1797 of the class
    full = load_digits()
    counts = np.bincount(full.target, minlength=10)
    test_counts = np.bincount(yte.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - counts * 360 / 1797) <= 1)
    np.testing.assert_array_equal(np.bincount(ytr.numpy(), minlength=10) + test_counts, counts)
    # together the splits are exactly the dataset (as a multiset of (image, label) rows)
    both = np.concatenate(
        [
            np.concatenate([xtr.reshape(-1, 64).numpy() * 16, ytr[:, None].numpy()], 1),
            np.concatenate([xte.reshape(-1, 64).numpy() * 16, yte[:, None].numpy()], 1),
        ]
    )
    orig = np.concatenate([full.data, full.target[:, None]], 1)
    np.testing.assert_array_equal(np.unique(both, axis=0), np.unique(orig, axis=0))
    assert len(both) == len(orig)
    # deterministic
    x2, y2 = D.load_split("digits", "test")
    assert torch.equal(xte, x2) and torch.equal(yte, y2)


def test_toy2d():
    x, y = D.load_split("toy2d", "train")
    xt, yt = D.load_split("toy2d", "test")
    assert x.shape == (600, 1, 1, 2) and xt.shape == (300, 1, 1, 2)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [200, 200, 200]
    assert not torch.equal(x[:300], xt)  # different seeds per split
    x2, _ = D.load_split("toy2d", "train")
    assert torch.equal(x, x2)
    # blobs: nearest-centre classification is nearly perfect
    means = torch.stack([x[y == k].reshape(-1, 2).mean(0) for k in range(3)])
    pred = torch.cdist(xt.reshape(-1, 2), means).argmin(1)
    assert (pred == yt).float().mean() > 0.95


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real(tmp_path):
    x, y = D.load_split("fashion-mnist", "train", data_dir=tmp_path, download=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [6000] * 10
    xt, yt = D.load_split("fashion-mnist", "test", data_dir=tmp_path, download=False)
    assert xt.shape == (10000, 1, 28, 28) and int(yt.min()) == 0 and int(yt.max()) == 9
    assert int(x.max()) == 255


# ---------------------------------------------------------------------------------------
# registry, IndexedTensors, build_splits, tensors
# ---------------------------------------------------------------------------------------


def test_registry(monkeypatch, tmp_path):
    assert D.list_datasets() == ["cifar10", "digits", "fashion-mnist", "mnist", "toy2d"]
    assert D.DATASETS["cifar10"].augment == "cifar" and D.DATASETS["digits"].augment is None
    assert D.DATASETS["toy2d"].input_shape == (1, 1, 2)
    for name in ("mnist", "fashion-mnist"):
        assert sorted(D.REMOTE[name].files) == sorted(
            f for pair in D.IDX_FILES.values() for f in pair
        )
    with pytest.raises(D.DataError, match="unknown dataset 'nope'.*digits"):
        D.load_split("nope", "train")
    with pytest.raises(D.DataError, match="split"):
        D.load_split("digits", "val")
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert D.default_data_dir() == tmp_path
    monkeypatch.delenv(D.DATA_ENV)
    assert D.default_data_dir() == Path.home() / ".cache" / "wideberth" / "data"


def test_indexed_tensors():
    x = torch.arange(6 * 2, dtype=torch.uint8).reshape(6, 1, 1, 2) * 20
    ds = D.IndexedTensors(x, torch.arange(6) % 3, num_classes=3)
    xi, yi, ii = ds[4]
    assert xi.dtype == torch.float32 and torch.allclose(xi, x[4].float() / 255)
    assert (int(yi), int(ii)) == (1, 4)
    sub = ds.subset(torch.tensor([5, 2]))
    assert sub.index.tolist() == [5, 2] and sub.num_classes == 3
    sub2 = sub.subset(torch.tensor([1]))
    assert sub2.index.tolist() == [2] and torch.equal(sub2.x, x[2:3])
    xb, yb, ib = sub.get_batch(torch.tensor([1, 0]))
    assert ib.tolist() == [2, 5] and torch.allclose(xb, x[[2, 5]].float() / 255)
    with pytest.raises(D.DataError):
        D.IndexedTensors(x, torch.arange(5))


def test_build_splits():
    s = D.build_splits("digits", val_size=200, train_subset=500, seed=3)
    xfull, yfull = D.load_split("digits", "train")
    assert len(s.train) == 500 and len(s.val) == 200 and len(s.test) == 360
    tr, va = set(s.train.index.tolist()), set(s.val.index.tolist())
    assert not tr & va and len(tr) == 500 and len(va) == 200
    assert max(tr | va) < 1437 and min(tr | va) >= 0
    # index values are rows of the full train split
    assert torch.equal(s.train.x, xfull[s.train.index]) and torch.equal(s.val.y, yfull[s.val.index])
    assert s.info.name == "digits" and s.train.num_classes == 10
    # deterministic given the seed; another seed differs; val does not depend on train_subset
    s2 = D.build_splits("digits", val_size=200, train_subset=500, seed=3)
    assert torch.equal(s.train.index, s2.train.index) and torch.equal(s.val.index, s2.val.index)
    s3 = D.build_splits("digits", val_size=200, train_subset=500, seed=4)
    assert not torch.equal(s.val.index, s3.val.index)
    s4 = D.build_splits("digits", val_size=200, seed=3)
    assert torch.equal(s4.val.index, s.val.index) and len(s4.train) == 1237
    assert tr <= set(s4.train.index.tolist())
    s5 = D.build_splits("digits")
    assert s5.val is None and torch.equal(s5.train.index, torch.arange(1437))
    with pytest.raises(ValueError, match="val_size"):
        D.build_splits("digits", val_size=1437)
    with pytest.raises(D.DataError, match="train_subset"):
        D.build_splits("digits", val_size=1000, train_subset=500)


def test_tensors():
    x, y = D.tensors("digits", "test", n=50, seed=1)
    assert x.shape == (50, 1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    x10, y10 = D.tensors("digits", "test", n=10, seed=1)
    assert torch.equal(x10, x[:10]) and torch.equal(y10, y[:10])  # nested prefixes
    xo, _ = D.tensors("digits", "test", n=50, seed=2)
    assert not torch.equal(xo, x)
    xa, ya = D.tensors("digits")
    assert xa.shape[0] == 360
    with pytest.raises(D.DataError):
        D.tensors("digits", "test", n=361)


# ---------------------------------------------------------------------------------------
# batching and augmentation
# ---------------------------------------------------------------------------------------


def _image_ds(n: int = 37) -> D.IndexedTensors:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return D.IndexedTensors(x, torch.arange(n) % 10, torch.arange(n) * 7 + 100)


def _run(ds, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    out = list(D.iterate_batches(ds, 8, generator=g, **kw))
    return out, g.get_state()


def test_num_batches():
    assert D.num_batches(37, 8, False) == 5 and D.num_batches(37, 8, True) == 4
    assert D.num_batches(32, 8, False) == 4 and D.num_batches(0, 8, False) == 0
    with pytest.raises(D.DataError):
        D.num_batches(10, 0, False)


@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_covers_epoch(drop_last):
    ds = _image_ds()
    out, _ = _run(ds, 0, shuffle=True, drop_last=drop_last)
    assert len(out) == D.num_batches(37, 8, drop_last)
    idx = torch.cat([b[2] for b in out])
    if drop_last:
        assert len(idx) == 32 and len(set(idx.tolist())) == 32
    else:
        assert sorted(idx.tolist()) == sorted(ds.index.tolist())
    assert idx.tolist() != sorted(idx.tolist())  # actually shuffled
    for xb, yb, ib in out:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 32, 32)
        rows = (ib - 100) // 7
        assert torch.equal(xb, ds.x[rows].float() / 255) and torch.equal(yb, ds.y[rows])
    plain = list(D.iterate_batches(ds, 8, shuffle=False))
    assert torch.cat([b[2] for b in plain]).tolist() == ds.index.tolist()


@pytest.mark.parametrize("augment", [None, "cifar"])
def test_iterate_batches_reproducible_and_resumable(augment):
    ds = _image_ds()
    full, state = _run(ds, 11, shuffle=True, augment=augment)
    again, _ = _run(ds, 11, shuffle=True, augment=augment)
    other, _ = _run(ds, 12, shuffle=True, augment=augment)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        for a, b in zip(full, again, strict=True)
    )
    assert not torch.equal(full[0][2], other[0][2])
    for k in range(len(full) + 1):
        tail, state_k = _run(ds, 11, shuffle=True, augment=augment, start_batch=k)
        assert len(tail) == len(full) - k
        for a, b in zip(full[k:], tail, strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
        assert torch.equal(state_k, state)  # the generator ends in the same state
    if augment:
        # augmentation really changed the images
        rows = (full[0][2] - 100) // 7
        assert not torch.equal(full[0][0], ds.x[rows].float() / 255)


def test_iterate_batches_errors():
    ds = _image_ds()
    with pytest.raises(D.DataError, match="Generator"):
        D.iterate_batches(ds, 8, shuffle=True)
    with pytest.raises(D.DataError, match="start_batch"):
        D.iterate_batches(ds, 8, shuffle=False, start_batch=6)
    with pytest.raises(D.DataError, match="augmentation"):
        D.iterate_batches(ds, 8, shuffle=False, augment="mixup", generator=torch.Generator())


def test_augment_cifar_matches_manual_crop():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(64, 3, 32, 32, generator=g)
    out = D.augment_cifar(x, torch.Generator().manual_seed(9))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 <= out.min() and out.max() <= 1
    offsets, flip = D.cifar_augment_params(64, torch.Generator().manual_seed(9))
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    for i in range(64):
        r, c = offsets[i].tolist()
        crop = padded[i, :, r : r + 32, c : c + 32]
        if flip[i]:
            crop = crop.flip(-1)
        assert torch.equal(out[i], crop), i
    # the draws vary across images and cover the range
    assert 0 < int(flip.sum()) < 64
    assert offsets.min() == 0 and offsets.max() == 8
    # centre crop without flip is the identity; uint8 input keeps its dtype
    xu = (x * 255).to(torch.uint8)
    same = D.apply_cifar_augment(xu, torch.full((64, 2), 4), torch.zeros(64, dtype=torch.bool))
    assert same.dtype == torch.uint8 and torch.equal(same, xu)
