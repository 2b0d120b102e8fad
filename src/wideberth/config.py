"""Typed run configuration: dataclasses, YAML round-trip, ``--set`` overrides, recipes.

A :class:`Config` has one section per stage of the pipeline (``data``, ``model``, ``optim``,
``schedule``, ``method``, ``eval``, ``run``). It is loaded from YAML with ``yaml.safe_load``
only, validated strictly by :mod:`wideberth.params` (the same coercer and messages as the
methods' parameters: an unknown key names the valid ones; a wrong type or a negative learning
rate is an error that says how to fix it), and saved, fully resolved, into every run
folder and checkpoint so that a run can be reproduced from it alone.

Recipes are YAML files shipped in ``wideberth/recipes``; each may carry a top-level
``description``. ``load_recipe("digits-standard")`` returns the resolved :class:`Config`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .params import ConfigError, Scope, fail, param, validate_params

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
    "validate",
    "DEFAULT_RECIPE",
]

DEFAULT_RECIPE = "digits-standard"

_NORMS = ("linf", "l2", "l1")


@dataclass
class DataConfig:
    """Which data to train on and how to batch it.

    ``name`` is a registered dataset (``wideberth.data.list_datasets()``, including those of
    installed packages' ``wideberth.datasets`` entry points) or a dataset spec:
    ``npz:PATH``, ``safetensors:PATH`` (arrays ``x`` and ``y``) or ``folder:PATH`` (one
    sub-folder of images per class). ``test`` is a second spec for the test split; without
    it, a spec's examples are carved into train and test by a seeded split
    (``test_fraction`` of them, seed ``split_seed``). ``data_dir`` is the folder holding
    the registered datasets' files; relative spec paths are resolved against it (else
    against the current directory). Training rewrites ``name``, ``test`` and ``data_dir``
    to absolute paths in the run's recorded config, so ``wideberth evaluate RUN`` reads the
    same files from any directory (see :mod:`wideberth.data.specs`).
    """

    name: str = "digits"
    data_dir: str | None = None
    test: str | None = None
    test_fraction: float = param(0.2, gt=0, lt=1)
    val_size: int = param(0, ge=0)
    train_subset: int | None = param(None, ge=1)
    batch_size: int = param(64, ge=1)
    eval_batch_size: int = param(500, ge=1)
    # "auto" = the dataset's default; "none"/null = off; "cifar"
    augment: str | None = param("auto", choices=("auto", "none", "cifar"))
    download: bool = True
    split_seed: int = 0


@dataclass
class ModelConfig:
    """Which model to build and its keyword arguments.

    ``name`` is a registered model (``wideberth.models.list_models()``, including those of
    installed packages' ``wideberth.models`` entry points) or an import path
    ``package.module:factory`` of a function or class returning an ``nn.Module``;
    ``params`` are its keyword arguments. (Configs written before ``params`` was named
    so use ``kwargs``; they still load.)
    """

    name: str = "cnn-small"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimiser: ``sgd`` (momentum, Nesterov, weight decay) or ``adam``."""

    name: str = param("sgd", choices=("sgd", "adam"))
    lr: float = param(0.1, ge=0, hint="a learning rate")
    momentum: float = param(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = param(0.0, ge=0)
    betas: list[float] = param(default_factory=lambda: [0.9, 0.999], ge=0, lt=1)


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

    name: str = param("constant", choices=("constant", "piecewise", "cosine"))
    milestones: list[int] = field(default_factory=list)
    values: list[float] = param(default_factory=list, ge=0)
    milestone_unit: str = param("step", choices=("step", "epoch"))
    min_lr: float = param(0.0, ge=0)
    warmup_steps: int = param(0, ge=0)


@dataclass
class MethodConfig:
    """Training objective (``wideberth.methods.list_methods()``) and its parameters (checked
    by the method's own ``Params`` when it is built)."""

    name: str = "standard"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Validation during training and the final test evaluation.

    ``selection_metric`` names the validation metric that picks the ``best`` checkpoint:

    - ``clean_accuracy`` (higher is better) or ``loss`` (lower);
    - ``pgd_accuracy``: robust accuracy under ``attack_steps``-step PGD (CE, step
      2.5·eps/steps) at ``eps`` in ``norm``;
    - ``anpgd_margin``: MMA's rule (Ding et al. 2020, App. C: keep the checkpoint with the
      largest average AN-PGD margin on the validation set), the average margin from the
      test-time AN-PGD (PGD at ``eps``, LM bisection up to ``margin_eps_max``).

    ``test_n`` limits the final test evaluation to the first N test examples (null: all).
    """

    selection_metric: str = "clean_accuracy"
    every: int = param(1, ge=1)
    test_n: int | None = param(None, ge=1)
    norm: str = param("linf", choices=_NORMS)
    eps: float = param(0.0, ge=0, hint="a perturbation size")
    attack_steps: int = param(20, ge=1)
    margin_eps_max: float | None = param(None, gt=0)


@dataclass
class TrackConfig:
    """Margin tracking (MMA Fig. 4, Wu & Yu's margin curves): every ``every`` epochs,
    estimate the margins of fixed random subsets of ``n_train`` training and ``n_test``
    test points with ``method`` (``fmn``, ``anpgd``, ``cw`` — ℓ2 only — or ``gradient``,
    Wu & Yu's sampled Lipschitz lower bound) in ``norm``, and log their distribution.
    ``every: 0`` turns tracking off."""

    every: int = param(0, ge=0, hint="0 = off")
    n_train: int = param(500, ge=0)
    n_test: int = param(500, ge=0)
    norm: str = param("l2", choices=_NORMS)
    method: str = param("fmn", choices=("fmn", "anpgd", "cw", "gradient"))
    steps: int = param(100, ge=1)
    thresholds: list[float] = field(default_factory=lambda: [0.05])
    seed: int = 0


@dataclass
class RunConfig:
    """Budget, seed, device and bookkeeping of one run.

    Exactly one of ``epochs`` and ``steps`` sets the budget; ``steps`` wins when both are set.
    """

    seed: int = 0
    epochs: int | None = param(10, ge=1)
    steps: int | None = param(None, ge=1)
    device: str = "auto"
    log_every: int = param(20, ge=1)
    checkpoint_every_steps: int | None = param(None, ge=1)
    threads: int | None = None
    tensorboard: bool = param(False, hint="write RUN/tensorboard; pip install 'wideberth[tensorboard]'")


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
        """Plain mapping of the config (:func:`config_to_dict`)."""
        return config_to_dict(self)

    def copy(self) -> Config:
        """A deep copy."""
        return copy.deepcopy(self)


# --------------------------------------------------------------------------- conversion

def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build and validate a :class:`Config` from a plain mapping (missing keys take defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    data = _migrate(data)
    cfg = validate_params(Config, data, scope=Scope())
    validate(cfg)
    return cfg


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Older configs' spellings in today's: ``model.kwargs`` is ``model.params``."""
    model = data.get("model")
    if isinstance(model, dict) and "kwargs" in model:
        if "params" in model:
            raise ConfigError(
                "model has both params and kwargs (its older name); keep only model.params"
            )
        model = {("params" if k == "kwargs" else k): v for k, v in model.items()}
        data = {**data, "model": model}
    return data


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable mapping of a :class:`Config`."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------- validation

def _require(cond: bool, message: str) -> None:
    if not cond:
        fail(message)


def validate(cfg: Config) -> None:
    """The rules that involve several fields (each field's own type, range and choices are
    declared on its dataclass and checked while the config is built); raise
    :class:`ConfigError` with the fix."""
    o, s, r, e, t = cfg.optim, cfg.schedule, cfg.run, cfg.eval, cfg.track
    _require(
        not o.nesterov or (o.name == "sgd" and o.momentum > 0),
        "optim.nesterov needs optim.name: sgd and optim.momentum > 0",
    )
    _require(len(o.betas) == 2, f"optim.betas must be two numbers in [0, 1), got {o.betas}")
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
    _require(r.epochs is not None or r.steps is not None, "set a budget: run.epochs or run.steps")
    _require(
        r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:"),
        f"run.device must be auto, cpu, cuda or cuda:N, got {r.device!r}",
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
    _require(t.method != "cw" or t.norm == "l2", "track.method cw is an l2 attack: set track.norm: l2")
    for key, value in cfg.method.params.items():
        if _is_radius_key(key) and isinstance(value, (int, float)) and value < 0:
            fail(f"method.params.{key} must be >= 0 (a perturbation size), got {value}")


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
        if path[:2] == ["model", "kwargs"]:  # the older name of model.params
            path[1] = "params"
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
