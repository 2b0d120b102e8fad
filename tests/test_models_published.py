"""Published checkpoints (TRADES, MMA, RobustBench) import strictly and give the same logits.

Each reference module below has the parameter names, shapes and forward pass of the source
repository's model file (TRADES: yaodongyu/TRADES models/small_cnn.py, models/wideresnet.py;
MMA: advertorch's LeNet5Madry and the WideResNet of BorealisAI/mma_training, behind its
per-image standardisation with torch's unbiased std; RobustBench:
robustbench/model_zoo/architectures/wide_resnet.py and resnet.py). They get random weights
and non-trivial BatchNorm running statistics, are saved the way the source saves them, and
the imported registry model must reproduce their eval-mode logits within 1e-5 relative.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wideberth as wb
from wideberth.cli import main
from wideberth.models import PublishedWeightsError, import_published, import_weights

# ----------------------------------------------------------------- reference models


class TradesSmallCNN(nn.Module):
    """TRADES' MNIST net: named Sequential feature_extractor / classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 32, 3)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(32, 32, 3)), ("relu2", nn.ReLU()),
            ("maxpool1", nn.MaxPool2d(2, 2)),
            ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", nn.ReLU()),
            ("maxpool2", nn.MaxPool2d(2, 2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(64 * 4 * 4, 200)), ("relu1", nn.ReLU()),
            ("drop", nn.Dropout(0.5)),
            ("fc2", nn.Linear(200, 200)), ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(200, 10)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_extractor(x).view(-1, 64 * 4 * 4))


class MadryLeNet5(nn.Module):
    """advertorch's LeNet5Madry (MMA's MNIST net): conv1, conv2, linear1, linear2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.linear1 = nn.Linear(7 * 7 * 64, 1024)
        self.linear2 = nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        return self.linear2(F.relu(self.linear1(out.view(out.size(0), -1))))


class XzBlock(nn.Module):
    """The WideResNet block of TRADES and RobustBench (``convShortcut``, ``equalInOut``)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return (x if self.equal else self.convShortcut(act)) + out


class XzGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[XzBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class XzWideResNet(nn.Module):
    """TRADES' WideResNet (always with the unused ``sub_block1``) and RobustBench's (without)."""

    def __init__(self, depth: int, widen: int, sub_block1: bool) -> None:
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = XzGroup(n, ch[0], ch[1], 1)
        if sub_block1:
            self.sub_block1 = XzGroup(n, ch[0], ch[1], 1)
        self.block2 = XzGroup(n, ch[1], ch[2], 2)
        self.block3 = XzGroup(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], 10)
        self.channels = ch[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(F.relu(self.bn1(out)), 8)
        return self.fc(out.view(-1, self.channels))


class MmaBlock(nn.Module):
    """MMA's (advertorch's) WideResNet block: ``conv_shortcut`` on the activated input."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        if not self.equal:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if not self.equal:
            x = self.conv_shortcut(out)
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + x


class MmaGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[MmaBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class MmaWideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen: int = 4) -> None:
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.convgroup1 = MmaGroup(n, ch[0], ch[1], 1)
        self.convgroup2 = MmaGroup(n, ch[1], ch[2], 2)
        self.convgroup3 = MmaGroup(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convgroup3(self.convgroup2(self.convgroup1(self.conv1(x))))
        return self.fc(F.relu(self.bn1(out)).mean(dim=-1).mean(dim=-1))


class MmaStandardize(nn.Module):
    """advertorch's batch_per_image_standardization: torch's (unbiased) std, floored."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.view(x.shape[0], -1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).view(-1, 1, 1, 1)
        return (x - mean) / torch.max(std, 1.0 / x.new_tensor(x.shape[1:]).prod().sqrt())


class RbPreActBlock(nn.Module):
    """RobustBench's PreActBlock: ``shortcut`` = Sequential(conv) on the raw input."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(x) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + shortcut


class RbPreActResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        cin, stages = 64, []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(RbPreActBlock(cin, planes, stride),
                                        RbPreActBlock(planes, planes, 1)))
            cin = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.linear(F.avg_pool2d(out, 4).view(x.shape[0], -1))


# ----------------------------------------------------------------- helpers


def randomize(net: nn.Module, seed: int) -> nn.Module:
    """Random weights (scaled by fan-in so deep nets stay finite) and non-trivial BN stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.num_batches_tracked.fill_(7)
    return net.eval()


def assert_same_logits(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        a, b = ours.eval()(x), ref.eval()(x)
    assert a.shape == b.shape
    rel = (a - b).abs().max() / b.abs().max()
    assert rel <= 1e-5, f"relative logit difference {rel:.2e}"


def images(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------- the architectures

CASES = {
    # id: (reference factory, source, our model, container, input shape, batch)
    "trades-smallcnn": (TradesSmallCNN, "trades", "smallcnn", "plain", (1, 28, 28), 2),
    "trades-wrn-34-10": (lambda: XzWideResNet(34, 10, sub_block1=True), "trades", "wrn-34-10",
                         "module", (3, 32, 32), 1),
    "mma-lenet5-madry": (MadryLeNet5, "mma", "lenet5-madry", "model", (1, 28, 28), 2),
    "mma-wrn-28-4": (lambda: nn.Sequential(MmaStandardize(), MmaWideResNet(28, 4)), "mma",
                     "wrn-28-4", "model", (3, 32, 32), 2),
    "robustbench-wrn-28-10": (lambda: XzWideResNet(28, 10, sub_block1=False), "robustbench",
                              "wrn-28-10", "plain", (3, 32, 32), 1),
    "robustbench-wrn-34-10": (lambda: XzWideResNet(34, 10, sub_block1=False), "robustbench",
                              "wrn-34-10", "state_dict", (3, 32, 32), 1),
    "robustbench-preact-resnet18": (RbPreActResNet18, "robustbench", "preact-resnet18",
                                    "plain", (3, 32, 32), 2),
}


def wrap(state: dict[str, torch.Tensor], container: str) -> object:
    """The state dict as the source saves it."""
    if container == "module":  # TRADES saves model.state_dict() of nn.DataParallel
        return {f"module.{k}": v for k, v in state.items()}
    if container in ("model", "state_dict"):
        return {container: state, "epoch": 10}
    return state


@pytest.mark.parametrize("case", list(CASES))
def test_published_state_dict_imports_strictly_with_equal_logits(case, tmp_path):
    make_ref, source, model, container, shape, batch = CASES[case]
    torch.manual_seed(0)
    ref = randomize(make_ref(), seed=1)
    path = tmp_path / "weights.pt"
    torch.save(wrap(ref.state_dict(), container), path)
    imported = import_published(path, source, model, input_shape=shape)
    assert_same_logits(imported.model, ref, images((batch, *shape)))
    assert imported.file_name == "weights.pt" and len(imported.sha256 or "") == 64
    # every tensor of theirs is mapped or (TRADES' unused group only) dropped
    n_theirs = len(ref.state_dict())
    assert len(imported.name_map) + len(imported.dropped) == n_theirs
    assert all(k.startswith("sub_block1.") for k in imported.dropped)
    assert bool(imported.dropped) == (case == "trades-wrn-34-10")


def test_mma_standardisation_uses_the_unbiased_std():
    """The MMA code divides by torch's unbiased std: the population one would differ by
    sqrt(N/(N-1)) (1.6e-4 relative at N = 3072), beyond the 1e-5 the logits must meet."""
    x = images((2, 3, 32, 32), seed=3)
    ours = wb.models.PerImageStandardize()(x)
    torch.testing.assert_close(ours, MmaStandardize()(x), rtol=1e-6, atol=1e-6)
    population = wb.models.PerImageStandardize(correction=0)(x)
    ratio = (population / ours)[ours.abs() > 0.1]
    torch.testing.assert_close(ratio, torch.full_like(ratio, math.sqrt(3072 / 3071)))


def test_trades_sub_block1_is_kept_when_asked(tmp_path):
    ref = randomize(XzWideResNet(10, 1, sub_block1=True), seed=2)
    got = import_published(ref.state_dict(), "trades", "wrn-34-10", depth=10, widen=1,
                           sub_block1=True)
    assert got.dropped == [] and any(v.startswith("sub_block1.") for v in got.name_map.values())
    assert_same_logits(got.model, ref, images((2, 3, 32, 32)))


def test_strict_loading_lists_missing_and_unexpected_keys():
    state = randomize(TradesSmallCNN(), seed=0).state_dict()
    del state["classifier.fc2.bias"]
    state["classifier.fc9.weight"] = torch.zeros(3)
    with pytest.raises(PublishedWeightsError) as err:
        import_weights(state, "trades", "smallcnn", input_shape=(1, 28, 28))
    msg = str(err.value)
    assert "missing keys (1): classifier.3.bias" in msg
    assert "unexpected keys (1): classifier.fc9.weight" in msg


def test_unknown_source_and_unsupported_model_are_clear():
    state = TradesSmallCNN().state_dict()
    with pytest.raises(ValueError, match="unknown source 'madry'; choose from mma, robustbench"):
        import_weights(state, "madry", "smallcnn")
    with pytest.raises(ValueError, match="source 'mma' has no mapping for model 'smallcnn'"):
        import_weights(state, "mma", "smallcnn")


def test_wideberth_import_cli_writes_a_run_folder_every_command_uses(tmp_path, capsys):
    ref = randomize(TradesSmallCNN(), seed=4)
    weights = tmp_path / "model_smallcnn.pt"
    torch.save(ref.state_dict(), weights)
    rng = np.random.default_rng(0)
    data = tmp_path / "mnistlike.npz"
    np.savez(data, x=rng.integers(0, 256, (40, 1, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 40))
    run = tmp_path / "run"
    argv = ["import", str(weights), "--from", "trades", "--model", "smallcnn", "--out",
            str(run), "--data", f"npz:{data}"]
    assert main(argv) == 0
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert (run / "checkpoints" / "last.safetensors").is_file()
    model = wb.load_model(run)
    assert_same_logits(model, ref, images((2, 1, 28, 28)))
    meta = wb.train.read_checkpoint_meta(run / "checkpoints" / "best.safetensors")
    prov = meta["imported"]
    assert prov["source"] == "trades" and prov["file_name"] == "model_smallcnn.pt"
    assert prov["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["name_map"]["feature_extractor.conv1.weight"] == "features.0.weight"
    info = wb.run_info(run)
    assert info["imported"] == {"source": "trades", "file_name": "model_smallcnn.pt",
                                "sha256": prov["sha256"]}
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert "smallcnn" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--n", "40"]) == 0
    out = capsys.readouterr().out
    # the run's test split (a seeded carve of the npz) through the imported weights
    x_raw, y_raw = wb.data.load_config_split(wb.runs.load_run_config(run).data, "test")
    x, y, _ = wb.data.IndexedTensors(x_raw, y_raw).get_batch(torch.arange(len(y_raw)))
    assert 0 <= x.min() and x.max() <= 1
    with torch.no_grad():
        acc = (ref(x).argmax(1) == y).float().mean().item()
    assert f"clean accuracy {acc:.4f} on {len(y)} examples" in out
    assert main(["resume", str(run)]) == 2  # no training state to continue
    assert "imported weights" in capsys.readouterr().err
    assert main(argv) == 2  # refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_import_checkpoint_checks_the_dataset_classes(tmp_path):
    ref = randomize(TradesSmallCNN(), seed=5)
    weights = tmp_path / "w.pt"
    torch.save(ref.state_dict(), weights)
    rng = np.random.default_rng(0)
    data = tmp_path / "three.npz"
    np.savez(data, x=rng.random((12, 1, 28, 28), dtype=np.float32), y=np.arange(12) % 3)
    with pytest.raises(ValueError, match="give 10 logits but dataset .* has 3 classes"):
        wb.runs.import_checkpoint(weights, "trades", "smallcnn", tmp_path / "r",
                                  data=f"npz:{data}")
