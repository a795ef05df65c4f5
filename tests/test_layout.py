"""The shape of helpers/: folders that read as layers, imports that flow one way (down the layers), no
private name imported across modules, and modules and functions small enough to read."""

import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
# bottom to top: a module may import its own folder and the folders before it, never one after it
LAYERS = [
    "core",
    "data",
    "kd",
    "config",
    "models",
    "scale",
    "evaluation",
    "training",
    "figures",
    "perf",
    "results",
    "report",
    "cli",
]


def _imports(path: Path):
    """(line, imported package of helpers or None, names) for every relative import outside TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    checking = {
        n
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    parts = path.relative_to(HELPERS).parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and node not in checking:
            base = list(parts[:-1])[: len(parts) - node.level]  # the package the import is relative to
            target = [*base, *(node.module.split(".") if node.module else [])]
            names = [a.name for a in node.names]
            package = target[0] if target else (names[0] if len(names) == 1 else None)
            yield node.lineno, package, target, names


def test_imports_flow_down_the_layers():
    wrong = []
    for path in HELPERS.rglob("*.py"):
        parts = path.relative_to(HELPERS).parts
        if len(parts) == 1:
            continue  # __init__, __main__, methods: the package's faces
        own = LAYERS.index(parts[0])
        for line, _, target, names in _imports(path):
            above = [t for t in (target[:1] or names) if t in LAYERS and LAYERS.index(t) > own]
            if above:
                wrong.append(f"{path.relative_to(HELPERS)}:{line} imports {above[0]} (a layer above {parts[0]})")
    assert wrong == [], "\n".join(wrong)


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{path.relative_to(HELPERS)}:{line} imports {n}"
        for path in HELPERS.rglob("*.py")
        for line, _, _, names in _imports(path)
        for n in names
        if n.startswith("_")
    ]
    assert private == [], "\n".join(private)


def test_every_folder_says_its_job_and_is_a_layer():
    folders = sorted(p.name for p in HELPERS.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(LAYERS)
    for name in folders:
        doc = ast.get_docstring(ast.parse((HELPERS / name / "__init__.py").read_text())) or ""
        first = doc.split("\n\n")[0].splitlines()
        assert 1 <= len(first) <= 3, f"helpers/{name}/__init__.py: its job in two or three lines first"


def test_modules_and_functions_are_small():
    big = []
    for path in HELPERS.rglob("*.py"):
        src = path.read_text()
        if len(src.splitlines()) > 300:
            big.append(f"{path.relative_to(HELPERS)}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 50:
                big.append(f"{path.relative_to(HELPERS)}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == [], "\n".join(big)
