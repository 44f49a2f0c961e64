"""The package's layout holds: its import graph (every import, lazy ones inside functions
included) has no cycle, goes only down the layers (README, "How the code is laid out"), and no
module uses another module's private names; and every module imports first, on its own."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"engine": "xlagen.engine", "models": "xlagen.models", "kernels": "xlagen.kernels"}

# The layers, lowest first: a module may import its own layer and those below it, never above.
# Within a layer the graph must still be acyclic.
LAYERS = [
    ("xlagen.kernels",),
    ("xlagen.models",),
    ("xlagen.engine.buckets", "xlagen.engine.limits", "xlagen.engine.compile_cache"),
    ("xlagen.engine.stop_strings", "xlagen.engine.defaults", "xlagen.engine.options"),
    ("xlagen.engine.loops",),
    ("xlagen.engine.planning", "xlagen.engine.programs"),
    ("xlagen.engine.export", "xlagen.engine.text"),
    ("xlagen.engine.generator",),
    ("xlagen.engine.jobs",),
    ("xlagen.engine", "xlagen.engine.beam", "xlagen.engine.cli"),  # the public names and the re-exports
]


def _modules():
    """{module name: path} of every module of the three packages."""
    found = {}
    for folder, package in PACKAGES.items():
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(directory, name), os.path.join(ROOT, folder))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join([package] + parts)] = os.path.join(directory, name)
    return found


MODULES = _modules()


def _resolve(importer, level, module):
    """The absolute name of a relative import in `importer` (a module name)."""
    if not level:
        return module
    base = importer.split(".")
    is_package = MODULES[importer].endswith("__init__.py")
    base = base[:len(base) - level + (1 if is_package else 0)]
    return ".".join(base + ([module] if module else []))


def _known(name):
    """The package module an imported name refers to (its longest prefix that is one), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name):
    """[(imported module, names taken from it, the local names bound to modules)] of module `name`."""
    tree = ast.parse(open(MODULES[name]).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _known(alias.name):
                    found.append((_known(alias.name), (), {alias.asname: alias.name} if alias.asname else {}))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node.level, node.module)
            if not source.startswith("xlagen"):
                continue
            bound, names = {}, []
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:  # `from package import module`
                    found.append((sub, (), {}))
                    bound[alias.asname or alias.name] = sub
                else:
                    names.append(alias.name)
            if names and _known(source):
                found.append((_known(source), tuple(names), {}))
            found.append((None, (), bound))
    return found


def _graph():
    return {name: {target for target, _, _ in _imports(name) if target and target != name} for name in MODULES}


def _layer(name):
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{name} is in no layer of tests/test_layout.py's LAYERS; add it"
    return best[0]


def test_every_module_has_a_layer_and_says_what_it_holds():
    for name, path in MODULES.items():
        _layer(name)
        assert ast.get_docstring(ast.parse(open(path).read())), f"{path} has no opening docstring"


def test_the_import_graph_has_no_cycle():
    graph, state, path = _graph(), {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_imports_only_go_down_the_layers():
    wrong = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
             for name, targets in _graph().items() for target in targets
             # a package's __init__ may name its own modules (the package sits above them)
             if _layer(target) > _layer(name) and not target.startswith(name + ".")]
    assert not wrong, "\n".join(wrong)


def test_no_module_uses_another_modules_private_names():
    wrong = []
    for name, path in MODULES.items():
        found = _imports(name)
        modules = {}
        for target, names, bound in found:
            modules.update(bound)
            wrong += [f"{name}: from {target} import {n}" for n in names if n.startswith("_") and not n.startswith("__")
                      and target != name]
        for node in ast.walk(ast.parse(open(path).read())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_no_engine_file_is_over_400_lines():
    long = [f"{path}: {n} lines" for path in MODULES.values() if os.sep + "engine" + os.sep in path
            for n in [sum(1 for _ in open(path))] if n > 400]
    assert not long, "\n".join(long)


def test_every_module_imports_first_on_its_own():
    """In one process, for each module: drop every xlagen module already imported, then import
    it alone (TensorFlow stays imported, so the check costs seconds, not minutes)."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'xlagen' or m.startswith('xlagen.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        failed.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
