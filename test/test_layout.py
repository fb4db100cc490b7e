"""The package's layout rules: imports run one way, rclpy only in ros/, no circles, short modules."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "paradigms_policy"
MAX_LINES = 450
# Layer of each folder; a module may import only from its own layer or lower ones.
LAYERS = {"commands": 4, "ros": 3, "pusht": 2, "control": 2, "checkpoint": 1, "samplers": 0, "": 1}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (at any depth of its code, lazy imports included)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {other for other in imports_of(path) if other in MODULES and other != name}
         for name, path in MODULES.items()}


def folder(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def test_rclpy_is_imported_only_under_ros():
    outside = sorted(name for name, path in MODULES.items()
                     if folder(name) != "ros" and any(i.split(".")[0] == "rclpy" for i in imports_of(path)))
    assert outside == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_down_the_layers(name):
    upward = sorted(other for other in GRAPH[name]
                    if LAYERS[folder(other)] > LAYERS[folder(name)] and not name.endswith("__init__"))
    assert upward == [], f"{name} imports from a higher layer"


def test_no_import_circles():
    edges = GRAPH
    state: dict[str, int] = {}
    cycles = []

    def visit(name, stack):
        state[name] = 1
        stack.append(name)
        for other in edges[name]:
            if state.get(other) == 1:
                cycles.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other, stack)
        stack.pop()
        state[name] = 2

    for name in edges:
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
