from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from lsqface.config import from_dict, load_config, to_dict
from lsqface.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rate: float = 0.05
    steps: int = 10


@dataclass(frozen=True)
class Outer:
    name: str = "tiny"
    variant: Literal["narrow", "regular"] = "regular"
    sizes: tuple[int, ...] = (64, 128)
    checkpoint: Optional[str] = None
    scale_range: tuple[float, float] = (0.8, 1.25)
    inner: Inner = field(default_factory=Inner)


def test_defaults_and_nested_values():
    config = from_dict(Outer, {"variant": "narrow", "inner": {"rate": 1}, "sizes": [32], "scale_range": [0.5, 2]})
    assert config == Outer(variant="narrow", sizes=(32,), inner=Inner(rate=1.0), scale_range=(0.5, 2.0))
    assert isinstance(config.scale_range[1], float)
    assert isinstance(config.inner.rate, float)
    assert to_dict(config)["inner"] == {"rate": 1.0, "steps": 10}


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"nmae": "x"}, "Unknown config key 'nmae'"),
        ({"inner": {"rat": 1.0}}, "Unknown config key 'inner.rat'"),
        ({"inner": {"steps": 1.5}}, "'inner.steps' must be a whole number"),
        ({"variant": "wide"}, "'variant' must be one of"),
        ({"sizes": 3}, "'sizes' must be a list"),
        ({"scale_range": [1.0]}, "'scale_range' must have 2 entries"),
        ({"scale_range": [1.0, "x"]}, r"'scale_range\[1\]' must be a number"),
        ({"inner": 3}, "'inner' must be a table"),
    ],
)
def test_bad_values_name_the_key(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_dict(Outer, values)


def test_toml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Outer, broken)
    good = tmp_path / "good.toml"
    good.write_text('name = "x"\n[inner]\nsteps = 3\n')
    assert load_config(Outer, good) == Outer(name="x", inner=Inner(steps=3))
