"""The layer rules of docs/architecture.md, enforced by reading the source, and the promise that an
API-only process (`easel serve --no-worker`) never imports torch.

The static checker parses every module under src/easel with `ast` and records every import: module
level, inside functions, under `if TYPE_CHECKING:` (those count as imports too, except for the
engine's lazy-import rule, which is about what runs at import time). Relative imports are resolved to
absolute names. Each rule is one test case, and a failing case lists every violation at once as
`module:line imports X (rule ...)`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from processes import EaselProcess, easel_env, free_port, wait_healthy

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


# ---------------------------------------------------------------------------------------------------
# The checker


@dataclass(frozen=True)
class Import:
    """One imported name: `import a.b` -> a.b; `from a import b` -> a.b if that is an Easel module, else
    a, with a.b kept as `sub` for other packages (so `from urllib import request` is urllib.request)."""

    target: str
    line: int
    lazy: bool  # inside a function body: runs only when called
    type_checking: bool  # under `if TYPE_CHECKING:`: never runs
    sub: str | None = None  # `from a import b` of a non-Easel package: a.b, maybe a module

    def matching(self, forbidden: Callable[[str], bool]) -> str | None:
        """The imported name (`target`, else `sub`) that `forbidden` holds for, if any."""
        return next((n for n in (self.target, self.sub) if n is not None and forbidden(n)), None)


@dataclass
class Module:
    name: str  # easel.api.native.router
    path: Path
    is_package: bool
    tree: ast.Module
    imports: list[Import] = field(default_factory=list)

    @property
    def layer(self) -> str:
        """The package: the second component (easel.api.native.router -> api; easel -> '')."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else ""

    @property
    def eager_imports(self) -> list[Import]:
        """The imports that run when the module is imported."""
        return [i for i in self.imports if not i.lazy and not i.type_checking]


def module_name(path: Path, src: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_from(node: ast.ImportFrom, module: Module) -> str:
    """The absolute module of `from <node.module> import ...`, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.is_package:
        package = package[:-1]
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def _targets(
    node: ast.Import | ast.ImportFrom, module: Module, known: set[str]
) -> list[tuple[str, str | None]]:
    """(target, sub) per imported name; see `Import`."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = _resolve_from(node, module)
    out: list[tuple[str, str | None]] = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if alias.name == "*":
            pair: tuple[str, str | None] = (base, None)
        elif base.split(".")[0] == "easel":
            pair = (sub if sub in known else base, None)
        else:
            pair = (base, sub)
        if pair not in out:
            out.append(pair)
    return out


def _collect(module: Module, known: set[str]) -> None:
    def visit(node: ast.AST, lazy: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target, sub in _targets(node, module, known):
                module.imports.append(Import(target, node.lineno, lazy, type_checking, sub))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            visit(node.test, lazy, type_checking)
            for child in node.body:
                visit(child, lazy, True)
            for child in node.orelse:
                visit(child, lazy, type_checking)
            return
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for nested in ast.iter_child_nodes(node):
            visit(nested, inner, type_checking)

    visit(module.tree, False, False)


def load_modules(src: Path) -> dict[str, Module]:
    """Every module of the `easel` package under `src`, parsed, with its imports."""
    modules: dict[str, Module] = {}
    for path in sorted((src / "easel").rglob("*.py")):
        name, is_package = module_name(path, src)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        modules[name] = Module(name, path, is_package, tree)
    known = set(modules)
    for module in modules.values():
        _collect(module, known)
    return modules


def under(name: str, *prefixes: str) -> bool:
    """`name` is one of `prefixes` or inside one (easel.store.queue is under easel.store)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ---------------------------------------------------------------------------------------------------
# The rules

Check = Callable[[dict[str, Module], str], list[str]]

DOMAIN_IO = (
    "os", "io", "pathlib", "socket", "subprocess", "shutil", "tempfile", "secrets", "random", "time",
    "uuid", "httpx", "requests", "urllib.request", "sqlalchemy", "boto3", "PIL", "torch", "anyio",
    "asyncio", "threading",
)  # fmt: skip
ML = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "peft")
ML_EAGER = ("torch", "diffusers", "transformers")
LAZY_ML_MODULES = ("easel.engine.backends", "easel.engine.worker")


def forbid(layer: str, forbidden: Callable[[str], bool]) -> Check:
    """Modules of `layer` ('' = every module) must not import any name for which `forbidden` holds."""

    def check(modules: dict[str, Module], rule: str) -> list[str]:
        return [
            f"{m.name}:{i.line} imports {name} (rule {rule})"
            for m in modules.values()
            if not layer or m.layer == layer
            for i in m.imports
            if (name := i.matching(forbidden)) is not None
        ]

    return check


def domain_calls_open(modules: dict[str, Module], rule: str) -> list[str]:
    return [
        f"{m.name}:{node.lineno} calls open() (rule {rule})"
        for m in modules.values()
        if m.layer == "domain"
        for node in ast.walk(m.tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
    ]


def _easel_module(target: str, modules: dict[str, Module]) -> str | None:
    """The Easel module an import target runs (its nearest known module), None for other packages."""
    parts = target.split(".")
    if parts[0] != "easel":
        return None
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a, a.b, then a.b.c."""
    parts = name.split(".")
    return [".".join(parts[: n + 1]) for n in range(len(parts))]


def engine_lazy_ml(modules: dict[str, Module], rule: str) -> list[str]:
    """Importing easel.engine.backends or easel.engine.worker must not import torch, diffusers or
    transformers: not at their module level, nor through the module-level imports of the Easel
    modules they import (their packages' __init__ included). TYPE_CHECKING blocks never run."""
    found: set[str] = set()
    for start in LAZY_ML_MODULES:
        if start not in modules:
            continue
        seen: set[str] = set()
        stack: list[tuple[str, tuple[str, ...]]] = [
            (name, ()) for name in reversed(_with_parents(start)) if name in modules
        ]
        while stack:
            name, chain = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for imp in modules[name].eager_imports:
                here = (*chain, f"{name}:{imp.line}")
                if (heavy := imp.matching(lambda t: under(t, *ML_EAGER))) is not None:
                    found.add(f"{' -> '.join(here)} imports {heavy} at import time (rule {rule})")
                    continue
                target = _easel_module(imp.target, modules)
                if target is not None:
                    stack.extend((p, here) for p in _with_parents(target) if p in modules)
    return sorted(found)


def _easel_outside(*allowed: str) -> Callable[[str], bool]:
    return lambda t: t.split(".")[0] == "easel" and not under(t, *allowed)


CONSOLE_MAY = ("easel.console", "easel.settings", "easel.domain.keys")

RULES: dict[str, Check] = {
    "domain-imports-only-domain": forbid("domain", _easel_outside("easel.domain")),
    "domain-no-io": forbid("domain", lambda t: under(t, *DOMAIN_IO)),
    "domain-no-open": domain_calls_open,
    "api-not-store-storage-engine-runtime": forbid(
        "api",
        lambda t: under(
            t, "easel.store", "easel.storage", "easel.engine", "easel.runtime", "sqlalchemy", "boto3", "torch"
        ),
    ),
    "store-not-upper-layers": forbid(
        "store",
        lambda t: under(
            t, "easel.api", "easel.service", "easel.engine", "easel.runtime", "easel.app", "easel.cli"
        ),
    ),
    "storage-not-other-layers": forbid(
        "storage",
        lambda t: under(t, "easel.api", "easel.service", "easel.store", "easel.engine", "easel.runtime"),
    ),
    "service-not-api-engine-runtime": forbid(
        "service", lambda t: under(t, "easel.api", "easel.engine", "easel.runtime", "easel.app", "easel.cli")
    ),
    "ml-only-in-engine": lambda modules, rule: forbid("", lambda t: under(t, *ML))(
        {n: m for n, m in modules.items() if m.layer != "engine"}, rule
    ),
    "engine-imports-ml-lazily": engine_lazy_ml,
    "engine-not-api": forbid("engine", lambda t: under(t, "easel.api")),
    # The gateway (docs/gateway.md) serves remote models in a process that never imports torch: it
    # may use the store, storage and services, never the engine (its worker imports backends) or ML.
    "gateway-not-engine-api-ml": forbid(
        "gateway",
        lambda t: under(t, "easel.api", "easel.engine", "easel.runtime", "easel.app", "easel.cli", *ML),
    ),
    # The console is pages and scripts on the public API: of Easel it may know only its settings, the
    # names of the scopes and the version (docs/architecture.md).
    "console-only-public-surface": forbid(
        "console",
        lambda t: (
            (t.split(".")[0] == "easel" and t != "easel" and not under(t, *CONSOLE_MAY))
            or under(t, "sqlalchemy", "boto3", *ML)
        ),
    ),
}


def violations(modules: dict[str, Module], rule: str) -> list[str]:
    return sorted(set(RULES[rule](modules, rule)), key=_order)


def _order(line: str) -> tuple[str, int, str]:
    where = line.split(" ", 1)[0]
    name, _, number = where.partition(":")
    return name, int(number) if number.isdigit() else 0, line


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules(SRC)


def test_the_checker_sees_the_whole_package(modules: dict[str, Module]) -> None:
    """Guards against a checker that passes because it read nothing."""
    layers = {m.layer for m in modules.values()}
    assert {"domain", "store", "storage", "service", "engine", "api", "console", "gateway"} <= layers
    assert {"easel", "easel.app", "easel.cli", "easel.runtime", "easel.engine.worker"} <= set(modules)
    assert all(m.imports for n, m in modules.items() if n in ("easel.app", "easel.runtime"))


@pytest.mark.parametrize("rule", list(RULES))
def test_layer_rule(modules: dict[str, Module], rule: str) -> None:
    found = violations(modules, rule)
    assert not found, f"{len(found)} violation(s) of {rule} (docs/architecture.md):\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------------
# The checker catches violations (so the rules above can fail)

SYNTHETIC = {
    "easel/__init__.py": "",
    "easel/domain/__init__.py": "from . import spec\n",
    "easel/domain/spec.py": (
        "from __future__ import annotations\n"
        "import json\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sizes\n"
        "if TYPE_CHECKING:\n"
        "    from easel.store.queue import JobQueue\n"  # 6
        "from ..storage import base\n"  # 7
        "from urllib import request, parse\n"  # 8
        "def load(path):\n"
        "    import random\n"  # 10
        "    return open(path).read()\n"  # 11
    ),
    "easel/domain/sizes.py": "import math\nfrom easel.domain.spec import load\n",
    "easel/storage/__init__.py": "",
    "easel/storage/base.py": "import hashlib\n",
    "easel/store/__init__.py": "",
    "easel/store/queue.py": "import sqlalchemy\nfrom easel import service\n",  # 2
    "easel/service/__init__.py": "",
    "easel/api/__init__.py": "",
    "easel/api/native/__init__.py": "",
    "easel/api/native/router.py": (
        "from ...store import queue\n"  # 1
        "import sqlalchemy.orm\n"  # 2
        "from easel.domain import spec\n"
        "from boto3 import client\n"  # 4
    ),
    "easel/imaging.py": "def f():\n    from safetensors.torch import load_file\n",  # 2
    "easel/gateway/__init__.py": "",
    "easel/gateway/worker.py": "from easel.engine.batch import image_seeds\nimport httpx\n",  # 1
    "easel/engine/__init__.py": "",
    "easel/engine/backends/__init__.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"  # fine: never runs
        "else:\n"
        "    from easel.engine.backends import heavy\n"  # 5: runs, and heavy imports diffusers
        "def make():\n"
        "    import transformers\n"  # fine: lazy
    ),
    "easel/engine/backends/heavy.py": "import diffusers\n",
    "easel/engine/worker.py": "import torch.nn\nfrom easel.api.native import router\n",
    "easel/console/__init__.py": "from easel import __version__\nfrom easel.service import admin\n",  # 2
}


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    for rel, text in SYNTHETIC.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = load_modules(tmp_path)
    found = {rule: violations(modules, rule) for rule in RULES}
    assert found == {
        "domain-imports-only-domain": [
            "easel.domain.spec:6 imports easel.store.queue (rule domain-imports-only-domain)",
            "easel.domain.spec:7 imports easel.storage.base (rule domain-imports-only-domain)",
        ],
        "domain-no-io": [
            "easel.domain.spec:8 imports urllib.request (rule domain-no-io)",
            "easel.domain.spec:10 imports random (rule domain-no-io)",
        ],
        "domain-no-open": ["easel.domain.spec:11 calls open() (rule domain-no-open)"],
        "api-not-store-storage-engine-runtime": [
            "easel.api.native.router:1 imports easel.store.queue (rule api-not-store-storage-engine-runtime)",
            "easel.api.native.router:2 imports sqlalchemy.orm (rule api-not-store-storage-engine-runtime)",
            "easel.api.native.router:4 imports boto3 (rule api-not-store-storage-engine-runtime)",
        ],
        "store-not-upper-layers": ["easel.store.queue:2 imports easel.service (rule store-not-upper-layers)"],
        "storage-not-other-layers": [],
        "service-not-api-engine-runtime": [],
        "ml-only-in-engine": ["easel.imaging:2 imports safetensors.torch (rule ml-only-in-engine)"],
        "engine-imports-ml-lazily": [
            "easel.engine.backends:5 -> easel.engine.backends.heavy:1 imports diffusers at import time"
            " (rule engine-imports-ml-lazily)",
            "easel.engine.worker:1 imports torch.nn at import time (rule engine-imports-ml-lazily)",
        ],
        "engine-not-api": ["easel.engine.worker:2 imports easel.api.native.router (rule engine-not-api)"],
        "gateway-not-engine-api-ml": [
            "easel.gateway.worker:1 imports easel.engine.batch (rule gateway-not-engine-api-ml)"
        ],
        "console-only-public-surface": [
            "easel.console:2 imports easel.service (rule console-only-public-surface)"
        ],
    }


# ---------------------------------------------------------------------------------------------------
# An API-only process never imports torch

HEAVY = ("torch", "diffusers", "transformers")


def imported_modules(stderr: str) -> list[tuple[int, str]]:
    """(depth, module) of each `-X importtime` line: `import time: self | cumulative | <indent>module`.
    A module is printed after everything it imported, one level deeper."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            raw = line.rsplit("|", 1)[-1]
            out.append((len(raw) - len(raw.lstrip()), raw.strip()))
    return out


def importer_chain(imported: list[tuple[int, str]], index: int) -> list[str]:
    """The module at `index` and the ones that imported it, outermost last."""
    depth, name = imported[index]
    chain = [name]
    for d, n in imported[index + 1 :]:
        if d < depth:
            chain.append(n)
            depth = d
    return chain


@pytest.fixture
def api_only_server(tmp_path: Path) -> Iterator[tuple[str, Path, EaselProcess]]:
    """The real `easel serve --no-worker` (the installed console script) on SQLite in a fresh data folder,
    with the shipped catalog and import-time logging; its URL, data folder and process."""
    data = tmp_path / "data"
    env = easel_env(data_dir=str(data), catalog=str(REPO / "models" / "catalog.toml"))
    env["PYTHONPROFILEIMPORTTIME"] = "1"  # -X importtime: every import, to stderr
    port = free_port()
    easel = Path(sys.executable).parent / "easel"
    args = ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)]
    proc = EaselProcess(args, env, tmp_path / "serve.log", command=[str(easel)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, data, proc
    finally:
        proc.stop()


@pytest.mark.slow
def test_api_only_process_never_imports_torch(api_only_server: tuple[str, Path, EaselProcess]) -> None:
    url, data, proc = api_only_server
    key = (data / "admin-key.txt").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{url}/api/v1/generations", json={"prompt": "a red circle"}, headers=headers)
    assert r.status_code == 201, r.text
    r = httpx.get(f"{url}/api/v1/models", headers=headers)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{url}/v1/models", headers=headers)
    assert r.status_code == 200, r.text

    imported = imported_modules(proc.output())
    names = [name for _, name in imported]
    assert "easel.app" in names, "no import-time log: the mechanism stopped working"
    assert "easel.service.generations" in names
    heavy = [i for i, name in enumerate(names) if under(name, *HEAVY)]
    if heavy:
        top = next((i for i in heavy if "." not in names[i]), heavy[0])
        pytest.fail(
            f"the API-only process imported {sorted({names[i].split('.')[0] for i in heavy})}"
            f" ({len(heavy)} modules): " + " <- ".join(importer_chain(imported, top))
        )
