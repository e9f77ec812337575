"""The package's layers only look down: a module imports only from its own layer or the ones below it.

LAYERS lists lsqface's top-level modules and packages from the lowest to the highest, in pipeline
order (STYLE.md "Layout"). Every import of every module is read with ``ast``, those inside
functions too (a lazy import is still a dependency), and resolved to the top-level name it reaches.
A new top-level module or package must be placed in LAYERS before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lsqface"

#: Lowest first. A tuple holds names of one layer, which may import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors"),  # the package's root: its error type and version
    ("files",),  # atomic writes and the cache folder
    ("config",),  # TOML and dataclass conversion
    ("detect",),  # the optional face detector, used by outputs and evaluate
    ("morphable",),
    ("render",),
    ("lighting",),
    ("solver",),
    ("nets",),
    ("synthetic",),
    ("data",),
    ("reconstruct",),
    ("outputs",),
    ("evaluate",),
    ("train",),
    ("baselines",),
    ("cli",),
    ("__main__",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def top_level(path: Path, package: Path = PACKAGE) -> str:
    """The top-level name a module belongs to: ``render`` for render/shading.py, ``cli`` for cli.py."""
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def imported_top_levels(source: str, path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, top-level name) of every lsqface module that ``source`` (the text of ``path``) imports."""
    module_parts = list(path.relative_to(package).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module_parts[:-1]  # the package of render/shading.py and of render/__init__.py alike
                base = base[: len(base) - (node.level - 1)]
                absolute = ["lsqface", *base, *(node.module.split(".") if node.module else [])]
            else:
                absolute = (node.module or "").split(".")
            if absolute == ["lsqface"]:  # from lsqface import x: x is a module, or a name of the root
                targets = [["lsqface", alias.name] for alias in node.names]
            else:
                targets = [absolute]
        for target in targets:
            if target[0] != "lsqface":
                continue
            name = target[1] if len(target) > 1 else "__init__"
            if len(target) > 1 and not ((package / name).is_dir() or (package / f"{name}.py").is_file()):
                name = "__init__"  # a name defined in lsqface/__init__.py, e.g. __version__
            found.append((node.lineno, name))
    return found


def layer_violations(package: Path = PACKAGE) -> list[str]:
    """One line per import that reaches up, and per top-level name missing from LAYERS."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        layer = top_level(path, package)
        if layer not in RANK:
            problems.append(f"{path.relative_to(package.parent)}: '{layer}' is not in LAYERS; place it in the pipeline order")
            continue
        for line, target in imported_top_levels(path.read_text(encoding="utf-8"), path, package):
            if target not in RANK:
                problems.append(f"{path.relative_to(package.parent)}:{line} imports '{target}', which is not in LAYERS")
            elif RANK[target] > RANK[layer]:
                problems.append(f"{path.relative_to(package.parent)}:{line}: {layer} imports {target}, a higher layer")
    return problems


def test_every_import_looks_down():
    problems = layer_violations()
    assert not problems, "Imports against the layer order (tests/test_layers.py LAYERS):\n" + "\n".join(problems)


def test_the_layers_follow_the_pipeline_order():
    """morphable -> render -> lighting -> solver -> data -> reconstruct -> outputs / evaluate -> train -> baselines -> cli,
    with nets and synthetic where STYLE.md puts them, and the package's tools below all of them."""
    order = [name for names in LAYERS for name in names]
    assert order[order.index("morphable"):] == [
        "morphable", "render", "lighting", "solver", "nets", "synthetic", "data", "reconstruct", "outputs", "evaluate",
        "train", "baselines", "cli", "__main__"]


@pytest.mark.parametrize("module, source, expected", [
    ("render/shading.py", "from lsqface.lighting.sh import sh_basis\n", [(1, "lighting")]),
    ("evaluate/report.py", "def f():\n    from lsqface.baselines.mofa import MoFAReconstructor\n", [(2, "baselines")]),
    ("solver/fit.py", "import lsqface.train.losses as losses\n", [(1, "train")]),
    ("solver/fit.py", "from lsqface import reconstruct\n", [(1, "reconstruct")]),
    ("cli.py", "from lsqface import __version__\n", [(1, "__init__")]),
    ("render/shading.py", "from ..lighting import sh\n", [(1, "lighting")]),
    ("render/shading.py", "from .rasterize import rasterize\n", [(1, "render")]),
    ("solver/fit.py", "import numpy as np\nimport torch\n", []),
])
def test_imports_are_resolved_to_their_layer(module, source, expected):
    assert imported_top_levels(source, PACKAGE / module) == expected


def test_an_upward_import_is_reported(tmp_path):
    package = tmp_path / "lsqface"
    (package / "render").mkdir(parents=True)
    (package / "lighting").mkdir()
    (package / "render" / "shading.py").write_text("def shade():\n    from lsqface.lighting.sh import sh_basis\n")
    (package / "lighting" / "sh.py").write_text("from lsqface.render.shading import shade\n")
    (package / "gadgets.py").write_text("")
    problems = layer_violations(package)
    assert problems == ["lsqface/gadgets.py: 'gadgets' is not in LAYERS; place it in the pipeline order",
                        "lsqface/render/shading.py:2: render imports lighting, a higher layer"]
