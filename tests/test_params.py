"""The declarative parameter system: one coercer, one validator, one error type and shape."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from wideberth.config import ConfigError as ConfigErrorFromConfig
from wideberth.params import ConfigError, Params, Scope, coerce, param, validate_params


@dataclass
class Section:
    rate: float = param(0.1, ge=0, hint="a learning rate")
    frac: float = param(0.5, ge=0, lt=1)
    count: int = param(3, ge=1)
    limit: int | None = param(None, ge=1)
    mode: str = param("eval", choices=("eval", "train"))
    flag: bool = False
    sizes: list[float] = param(default_factory=lambda: [1.0], gt=0)


@dataclass
class Toy(Params):
    eps: float | None = param(None, required=True, ge=0, hint="the radius")
    steps: int = param(10, ge=0)
    scale: float | list[float] = param(1.0, ge=0)
    norm: str = param("linf", convert=lambda v: str(v).lower())
    tags: list[str] = field(default_factory=list)

    method_name: ClassVar[str] = "toy"

    @classmethod
    def param_scope(cls) -> Scope:
        return Scope(where="method 'toy'", prefix="params.", path="method.params",
                     kind="parameter")

    def check(self) -> None:
        if self.eps is not None and self.eps > 10:
            self.fail(f"params.eps must be at most 10 here, got {self.eps}")


def test_config_error_is_one_type():
    assert ConfigError is ConfigErrorFromConfig and issubclass(ConfigError, ValueError)


def test_coercion_rules():
    s = validate_params(Section, {"rate": "1e-3", "count": 4, "mode": "TRAIN", "sizes": (2, 3)},
                        scope=Scope(prefix="sec.", path="sec"))
    assert s.rate == 1e-3 and isinstance(s.rate, float)
    assert s.mode == "train" and s.sizes == [2.0, 3.0] and s.limit is None
    assert coerce(".inf", float, "x") == math.inf  # no param(): inf allowed
    assert coerce(1, float, "x") == 1.0 and isinstance(coerce(1, float, "x"), float)
    with pytest.raises(ConfigError, match=r"x: expected an integer, got True"):
        coerce(True, int, "x")
    with pytest.raises(ConfigError, match=r"^x must be a number, got nan$"):
        coerce(float("nan"), float, "x")


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"rate": -1}, r"^sec\.rate must be >= 0, got -1\.0 \(a learning rate\)$"),
        ({"rate": "fast"}, r"^sec\.rate: expected a number, got 'fast' "
                           r"\(sec\.rate must be a number >= 0; a learning rate\)$"),
        ({"frac": 1}, r"^sec\.frac must be in \[0, 1\), got 1\.0$"),
        ({"count": 0}, r"^sec\.count must be an integer >= 1, got 0$"),
        ({"count": 1.5}, r"^sec\.count: expected an integer, got 1\.5 "
                         r"\(sec\.count must be an integer >= 1\)$"),
        ({"limit": 0}, r"^sec\.limit must be an integer >= 1 or null, got 0$"),
        ({"mode": "frozen"}, r"^unknown sec\.mode 'frozen'; valid: eval, train "
                             r"\(sec\.mode must be one of eval, train\)$"),
        ({"flag": "yes"}, r"^sec\.flag: expected true or false, got 'yes'"),
        ({"sizes": [1, 0]}, r"^sec\.sizes\[1\] must be > 0, got 0\.0$"),
        ({"rate": math.inf}, r"^sec\.rate must be finite, got inf"),
        ({"rte": 1}, r"^unknown key sec\.rte; valid keys of sec: rate, frac, count"),
    ],
)
def test_messages_name_the_key_the_value_and_what_is_valid(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_params(Section, data, scope=Scope(prefix="sec.", path="sec"))


def test_self_validating_params():
    t = Toy(eps=1, scale=[1, 2], norm="L2")
    assert t.eps == 1.0 and t.scale == [1.0, 2.0] and t.norm == "l2"
    with pytest.raises(ConfigError, match=r"^method 'toy' needs params\.eps \(params\.eps is "
                                          r"required\): the radius$"):
        Toy()
    with pytest.raises(ConfigError, match=r"^method 'toy': params\.steps must be an integer >= 0"):
        Toy(eps=0.1, steps=-1)
    with pytest.raises(ConfigError, match=r"^method 'toy': params\.eps must be at most 10"):
        validate_params(Toy, {"eps": 11})
    with pytest.raises(ConfigError, match=r"^unknown parameter method\.params\.epss; valid "
                                          r"parameters of method 'toy': eps, steps"):
        validate_params(Toy, {"epss": 1})
    with pytest.raises(ConfigError, match=r"params\.scale\[0\] must be >= 0"):
        Toy(eps=0.1, scale=[-1.0])
