"""Typed run configuration: dataclasses, YAML round-trip, ``--set`` overrides, recipes.

A :class:`Config` has one section per stage of the pipeline (``data``, ``model``, ``optim``,
``schedule``, ``method``, ``eval``, ``run``). It is loaded from YAML with ``yaml.safe_load``
only, validated strictly (an unknown key names the valid ones; a wrong type or a negative
learning rate is an error that says how to fix it), and saved, fully resolved, into every run
folder and checkpoint so that a run can be reproduced from it alone.

Recipes are YAML files shipped in ``wideberth/recipes``; each may carry a top-level
``description``. ``load_recipe("digits-standard")`` returns the resolved :class:`Config`.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "MethodConfig",
    "EvalConfig",
    "TrackConfig",
    "RunConfig",
    "Config",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
    "apply_overrides",
    "parse_override",
    "list_recipes",
    "load_recipe",
    "recipe_description",
    "DEFAULT_RECIPE",
]

DEFAULT_RECIPE = "digits-standard"


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says what was expected."""


@dataclass
class DataConfig:
    """Which data to train on and how to batch it."""

    name: str = "digits"
    data_dir: str | None = None
    val_size: int = 0
    train_subset: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 500
    augment: str | None = "auto"  # "auto" = the dataset's default; "none"/null = off; "cifar"
    download: bool = True
    split_seed: int = 0


@dataclass
class ModelConfig:
    """Which registered model to build (``wideberth.models.list_models()``) and its kwargs."""

    name: str = "cnn-small"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser: ``sgd`` (momentum, Nesterov, weight decay) or ``adam``."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, applied per optimiser step.

    - ``constant``: ``optim.lr`` throughout.
    - ``piecewise``: ``values[i]`` from ``milestones[i-1]`` on (``values[0]`` from the start);
      ``len(values) == len(milestones) + 1``. Milestones count steps, or epochs when
      ``milestone_unit: epoch``. Example (MMA CIFAR-10): milestones [20000, 30000, 40000],
      values [0.3, 0.09, 0.03, 0.009].
    - ``cosine``: from ``optim.lr`` down to ``min_lr`` over the whole budget.
    ``warmup_steps`` ramps linearly from 0 at the start for any schedule.
    """

    name: str = "constant"
    milestones: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    milestone_unit: str = "step"
    min_lr: float = 0.0
    warmup_steps: int = 0


@dataclass
class MethodConfig:
    """Training objective (``wideberth.methods.list_methods()``) and its parameters."""

    name: str = "standard"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Validation during training and the final test evaluation.

    ``selection_metric`` names the validation metric that picks the ``best`` checkpoint:

    - ``clean_accuracy`` (higher is better) or ``loss`` (lower);
    - ``pgd_accuracy``: robust accuracy under ``attack_steps``-step PGD (CE, step
      2.5·eps/steps) at ``eps`` in ``norm``;
    - ``anpgd_margin``: MMA's rule (specs/mma.md §2.7, §5.7), the average margin from the
      test-time AN-PGD (PGD at ``eps``, LM bisection up to ``margin_eps_max``).

    ``test_n`` limits the final test evaluation to the first N test examples (null: all).
    """

    selection_metric: str = "clean_accuracy"
    every: int = 1
    test_n: int | None = None
    norm: str = "linf"
    eps: float = 0.0
    attack_steps: int = 20
    margin_eps_max: float | None = None


@dataclass
class TrackConfig:
    """Margin tracking (MMA Fig. 4, Wu & Yu's margin curves): every ``every`` epochs,
    estimate the margins of fixed random subsets of ``n_train`` training and ``n_test``
    test points with ``method`` (``fmn``, ``anpgd``, ``cw`` — ℓ2 only — or ``gradient``,
    Wu & Yu's sampled Lipschitz lower bound) in ``norm``, and log their distribution.
    ``every: 0`` turns tracking off."""

    every: int = 0
    n_train: int = 500
    n_test: int = 500
    norm: str = "l2"
    method: str = "fmn"
    steps: int = 100
    thresholds: list[float] = field(default_factory=lambda: [0.05])
    seed: int = 0


@dataclass
class RunConfig:
    """Budget, seed, device and bookkeeping of one run.

    Exactly one of ``epochs`` and ``steps`` sets the budget; ``steps`` wins when both are set.
    """

    seed: int = 0
    epochs: int | None = 10
    steps: int | None = None
    device: str = "auto"
    log_every: int = 20
    checkpoint_every_steps: int | None = None
    threads: int | None = None


@dataclass
class Config:
    """A whole run: data, model, optimiser, schedule, method, evaluation, margin tracking
    and run settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    run: RunConfig = field(default_factory=RunConfig)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def copy(self) -> Config:
        return copy.deepcopy(self)


# --------------------------------------------------------------------------- conversion

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}"
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s}; valid keys{' of ' + where if where else ''}: "
            + ", ".join(names)
        )
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}" if where else name)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a plain mapping (missing keys take defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    cfg = _from_dict(Config, data, "")
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable mapping of a :class:`Config`."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------- validation

def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Check value ranges and cross-field rules; raise :class:`ConfigError` with the fix."""
    d, o, s, r, e = cfg.data, cfg.optim, cfg.schedule, cfg.run, cfg.eval
    _require(d.batch_size > 0, f"data.batch_size must be positive, got {d.batch_size}")
    _require(d.eval_batch_size > 0, f"data.eval_batch_size must be positive, got {d.eval_batch_size}")
    _require(d.val_size >= 0, f"data.val_size must be >= 0, got {d.val_size}")
    _require(
        d.train_subset is None or d.train_subset > 0,
        f"data.train_subset must be positive or null, got {d.train_subset}",
    )
    _require(
        d.augment in (None, "auto", "none", "cifar"),
        f"data.augment must be one of auto, none, cifar or null, got {d.augment!r}",
    )
    _require(o.name in ("sgd", "adam"), f"optim.name must be 'sgd' or 'adam', got {o.name!r}")
    _require(o.lr >= 0, f"optim.lr must be >= 0 (a learning rate), got {o.lr}")
    _require(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _require(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    _require(
        not o.nesterov or (o.name == "sgd" and o.momentum > 0),
        "optim.nesterov needs optim.name: sgd and optim.momentum > 0",
    )
    _require(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        f"optim.betas must be two numbers in [0, 1), got {o.betas}",
    )
    _require(
        s.name in ("constant", "piecewise", "cosine"),
        f"schedule.name must be constant, piecewise or cosine, got {s.name!r}",
    )
    _require(
        s.milestone_unit in ("step", "epoch"),
        f"schedule.milestone_unit must be 'step' or 'epoch', got {s.milestone_unit!r}",
    )
    if s.name == "piecewise":
        _require(
            len(s.values) == len(s.milestones) + 1,
            "schedule.values must have one more entry than schedule.milestones "
            f"(the lr before the first milestone), got {len(s.values)} values and "
            f"{len(s.milestones)} milestones",
        )
        _require(
            all(a < b for a, b in zip(s.milestones, s.milestones[1:], strict=False)),
            f"schedule.milestones must increase, got {s.milestones}",
        )
    _require(all(v >= 0 for v in s.values), f"schedule.values must be >= 0, got {s.values}")
    _require(s.min_lr >= 0, f"schedule.min_lr must be >= 0, got {s.min_lr}")
    _require(s.warmup_steps >= 0, f"schedule.warmup_steps must be >= 0, got {s.warmup_steps}")
    _require(
        r.epochs is not None or r.steps is not None,
        "set a budget: run.epochs or run.steps",
    )
    _require(r.epochs is None or r.epochs > 0, f"run.epochs must be positive, got {r.epochs}")
    _require(r.steps is None or r.steps > 0, f"run.steps must be positive, got {r.steps}")
    _require(
        r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:"),
        f"run.device must be auto, cpu, cuda or cuda:N, got {r.device!r}",
    )
    _require(r.log_every > 0, f"run.log_every must be positive, got {r.log_every}")
    _require(
        r.checkpoint_every_steps is None or r.checkpoint_every_steps > 0,
        f"run.checkpoint_every_steps must be positive or null, got {r.checkpoint_every_steps}",
    )
    _require(e.every > 0, f"eval.every must be positive, got {e.every}")
    _require(e.eps >= 0, f"eval.eps must be >= 0 (a perturbation size), got {e.eps}")
    _require(e.attack_steps > 0, f"eval.attack_steps must be positive, got {e.attack_steps}")
    _require(
        e.norm in ("linf", "l2", "l1"), f"eval.norm must be linf, l2 or l1, got {e.norm!r}"
    )
    _require(
        e.margin_eps_max is None or e.margin_eps_max > 0,
        f"eval.margin_eps_max must be positive or null, got {e.margin_eps_max}",
    )
    if e.selection_metric in ("pgd_accuracy", "anpgd_margin"):
        _require(
            e.eps > 0,
            f"eval.selection_metric {e.selection_metric} needs eval.eps > 0 (the attack's ε)",
        )
    if e.selection_metric == "anpgd_margin":
        _require(
            e.margin_eps_max is not None,
            "eval.selection_metric anpgd_margin needs eval.margin_eps_max (MMA: 1.05·d_max)",
        )
    t = cfg.track
    _require(t.every >= 0, f"track.every must be >= 0 (0 = off), got {t.every}")
    _require(t.n_train >= 0 and t.n_test >= 0, "track.n_train and track.n_test must be >= 0")
    _require(t.norm in ("linf", "l2", "l1"), f"track.norm must be linf, l2 or l1, got {t.norm!r}")
    _require(
        t.method in ("fmn", "anpgd", "cw", "gradient"),
        f"track.method must be fmn, anpgd, cw or gradient, got {t.method!r}",
    )
    _require(t.method != "cw" or t.norm == "l2", "track.method cw is an l2 attack: set track.norm: l2")
    _require(t.steps > 0, f"track.steps must be positive, got {t.steps}")
    _require(e.test_n is None or e.test_n > 0, f"eval.test_n must be positive or null, got {e.test_n}")
    for key, value in cfg.method.params.items():
        if _is_radius_key(key) and isinstance(value, (int, float)) and value < 0:
            raise ConfigError(f"method.params.{key} must be >= 0 (a perturbation size), got {value}")


def _is_radius_key(key: str) -> bool:
    k = key.lower()
    return k in ("eps", "epsilon", "d_max", "eps_min", "eps_max", "step_size") or k.startswith("eps_")


# --------------------------------------------------------------------------- YAML files

def load_config(path: str | Path) -> Config:
    """Load a YAML config file (safe loading) and validate it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (keys in declaration order)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` into (path, value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. optim.lr=0.01), got {text!r}")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set expects key=value with a non-empty key, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
    return path, value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a new config with ``key=value`` overrides applied and re-validated."""
    data = config_to_dict(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            if not isinstance(node, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:i])} is not a section")
            if part not in node:
                if isinstance(node, dict) and i >= 1 and path[i - 1] in ("params", "kwargs"):
                    node[part] = {}
                else:
                    valid = ", ".join(node)
                    raise ConfigError(
                        f"unknown key {'.'.join(path[: i + 1])}; valid keys here: {valid}"
                    )
            node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:-1])} is not a section")
        node[path[-1]] = value
    return config_from_dict(data)


# --------------------------------------------------------------------------- recipes

def _recipe_dir() -> Any:
    return resources.files("wideberth") / "recipes"


def list_recipes() -> list[str]:
    """Names of the shipped recipes (YAML files in ``wideberth/recipes``)."""
    return sorted(
        p.name[: -len(".yaml")] for p in _recipe_dir().iterdir() if p.name.endswith(".yaml")
    )


def _recipe_data(name: str) -> dict[str, Any]:
    names = list_recipes()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}; available recipes: {', '.join(names)}")
    return yaml.safe_load((_recipe_dir() / f"{name}.yaml").read_text()) or {}


def recipe_description(name: str) -> str:
    """The one-line description a recipe declares."""
    return str(_recipe_data(name).get("description", ""))


def load_recipe(name: str) -> Config:
    """Load a shipped recipe by name and validate it."""
    try:
        return config_from_dict(_recipe_data(name))
    except ConfigError as exc:
        raise ConfigError(f"recipe {name}: {exc}") from exc
