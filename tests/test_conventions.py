"""Executable conventions (style.md §5.5 habit 1), checked on the package's source."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stroke_lesion_app"
MODULES = sorted(PACKAGE.rglob("*.py"))

#: layer → packages it must never import
FORBIDDEN_IMPORTS = {
    "core": ("stroke_lesion_app.workflows", "stroke_lesion_app.interfaces",
             "stroke_lesion_app.cli", "stroke_lesion_app.training", "nipype", "click"),
    "nets": ("stroke_lesion_app.workflows", "stroke_lesion_app.interfaces",
             "stroke_lesion_app.cli", "stroke_lesion_app.core", "nnunetv2", "nipype"),
    "training": ("stroke_lesion_app.workflows", "stroke_lesion_app.interfaces",
                 "stroke_lesion_app.cli", "nipype"),
    "interfaces": ("stroke_lesion_app.workflows", "stroke_lesion_app.cli"),
    "workflows": ("stroke_lesion_app.cli",),
}


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(module):
    layer = module.relative_to(PACKAGE).parts[0]
    forbidden = FORBIDDEN_IMPORTS.get(layer, ())
    bad = [name for name in _imports(ast.parse(module.read_text()))
           if name.startswith(forbidden)]
    assert not bad, f"{module.relative_to(PACKAGE)} imports {bad} (layer {layer!r})"


def _factories():
    for module in sorted((PACKAGE / "workflows").glob("*.py")):
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.FunctionDef) and re.fullmatch(r"init_\w+_wf", node.name):
                yield pytest.param(module, node, id=f"{module.stem}.{node.name}")


def _section(docstring: str, title: str) -> list[str]:
    """Entries of a numpydoc section of a cleaned docstring: its unindented lines."""
    lines = docstring.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == title and index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}:
            entries = []
            for body in lines[index + 2:]:
                if body.strip() and set(body.strip()) == {"-"}:
                    entries.pop()  # that was the next section's title
                    break
                if body.strip() and not body[0].isspace():
                    entries.append(body.strip().split(" :")[0].split(" ")[0])
            return entries
    return []


@pytest.mark.parametrize(("module", "function"), list(_factories()))
def test_workflow_factory_contract(module, function):
    arguments = function.args
    assert not arguments.args, f"{function.name}: arguments must be keyword-only"
    names = [arg.arg for arg in arguments.kwonlyargs]
    assert "name" in names, f"{function.name}: needs a name parameter"
    noun = function.name[len("init_"):]
    default = arguments.kw_defaults[names.index("name")]
    assert isinstance(default, ast.Constant) and default.value.endswith("_wf"), noun
    docstring = ast.get_docstring(function) or ""
    for title in ("Workflow Graph", "Parameters", "Inputs", "Outputs"):
        assert re.search(rf"^\s*{title}\n\s*-+$", docstring, re.M), f"{function.name}: {title}"
    assert _section(docstring, "Parameters") == names, f"{function.name}: Parameters != signature"


@pytest.mark.parametrize(("module", "function"), list(_factories()))
def test_documented_fields_match_built_nodes(module, function, tmp_path):
    """Inputs/Outputs sections list exactly the inputnode/outputnode fields."""
    docstring = ast.get_docstring(function) or ""
    factory = getattr(importlib.import_module(
        f"stroke_lesion_app.workflows.{module.stem}"), function.name)
    workflow = _build_with_defaults(factory, tmp_path)
    if workflow is None:
        pytest.skip(f"{function.name} needs run-time arguments; checked by its own tests")
    for title, node_name in (("Inputs", "inputnode"), ("Outputs", "outputnode")):
        node = workflow.get_node(node_name)
        fields = set(node.inputs.copyable_trait_names()) if node else set()
        assert set(_section(docstring, title)) - {"(none;"} == fields, (function.name, title)


def _build_with_defaults(factory, tmp_path):
    from stroke_lesion_app.core.bids import T1wInput

    samples = {"output_dir": tmp_path, "source_entities": {"subject": "01"},
               "source_uri": "bids:raw:sub-01/anat/sub-01_T1w.nii.gz", "registration": "affine",
               "lesion_source": "manual",
               "t1w_input": T1wInput(tmp_path / "sub-01_T1w.nii.gz", {"subject": "01"})}
    import inspect

    from stroke_lesion_app.core.bundle import load_bundle

    optional = {"bundle": load_bundle("demo")}  # factories that segment need a bundle object
    kwargs = {}
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.default is inspect.Parameter.empty:
            if parameter.name not in samples:
                return None
            kwargs[parameter.name] = samples[parameter.name]
        elif parameter.default is None and parameter.name in optional:
            kwargs[parameter.name] = optional[parameter.name]
    return factory(**kwargs)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_node_names_equal_variables(module):
    for node in ast.walk(ast.parse(module.read_text())):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        call = node.value
        func = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(
            call.func, "id", "")
        if func not in ("Node", "MapNode", "JoinNode"):
            continue
        name = next((kw.value for kw in call.keywords if kw.arg == "name"), None)
        assert isinstance(name, ast.Constant), f"{module.name}:{node.lineno} node name not literal"
        assert name.value == node.targets[0].id, f"{module.name}:{node.lineno}"


def test_no_print_in_package():
    offenders = [f"{module.relative_to(PACKAGE)}:{node.lineno}" for module in MODULES
                 for node in ast.walk(ast.parse(module.read_text()))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print"]
    assert not offenders, f"use a logger (or click.echo in cli/): {offenders}"
