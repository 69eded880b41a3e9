"""Export SIFA models as transformers *remote code*: flat Python files generated from this package.

``write_remote_code(model_dir)`` writes ``configuration_sifa.py``, ``modeling_sifa.py``,
``video_processing_sifa.py`` and every ``sifa_hub`` module they import (``sifa_layers.py``, ``sifa_ops*.py``,
``sifa_resnet.py``, ``sifa_swin.py``, ...) into ``model_dir`` and adds ``auto_map`` to ``config.json`` and to the
video processor config, so that ::

    AutoModelForVideoClassification.from_pretrained(model_dir, trust_remote_code=True)

works where ``sifa_hub`` is not installed (torch, timm, transformers and av are enough).

The files are generated, never hand-kept: each module's source is read from the installed package and its
imports of package modules (``from ..layers import SIFA``, ``from .reference import x``,
``from sifa_hub.ops import y``) are rewritten to flat relative imports (``from .sifa_layers import SIFA``), the
form transformers follows when it copies a model's code. Compiled op backends (the C++ ``cpu`` kernel and the
Triton kernels) need files remote code cannot carry (C++ sources; ``triton``, which not every machine has) and
register torch custom ops that would clash with an installed ``sifa_hub``: they are left out. Names imported from
them come from a generated ``sifa_omitted_backends.py`` whose ``*_status()`` functions report the backend
unavailable (so ``backend="auto"`` picks the pure-PyTorch one) and whose other functions raise.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["REMOTE_CODE_ROOTS", "export_for_remote_code", "remote_code_sources", "write_remote_code"]

PACKAGE = "sifa_hub"
# modules transformers loads by name from auto_map; everything they import follows
REMOTE_CODE_ROOTS = (
    "sifa_hub.hf.configuration_sifa",
    "sifa_hub.hf.modeling_sifa",
    "sifa_hub.hf.video_processing_sifa",
)
_AUTO_MAP = {
    "AutoConfig": "configuration_sifa.SifaConfig",
    "AutoModel": "modeling_sifa.SifaModel",
    "AutoModelForVideoClassification": "modeling_sifa.SifaForVideoClassification",
}
_PROCESSOR_AUTO_MAP = {"AutoVideoProcessor": "video_processing_sifa.SifaVideoProcessor"}
_PROCESSOR_FILE = "video_preprocessor_config.json"
# this module itself and the Auto* registration are not part of remote code
_NEVER = ("sifa_hub.hf", "sifa_hub.hf.remote_code", "sifa_hub")
# generated module of stand-ins for the names imported from omitted (compiled) op backends
_STUBS = "sifa_omitted_backends"


def _is_omitted(module: str) -> bool:
    """Compiled op backends (``sifa_hub.ops.cpu``, ``sifa_hub.ops.triton*``) and their op registration."""
    parts = module.split(".")
    return (
        parts[:2] == [PACKAGE, "ops"]
        and len(parts) == 3
        and (parts[2] in ("cpu", "custom_ops") or parts[2].startswith("triton"))
    )


def _stub(name: str, module: str) -> str:
    """Source of a stand-in for ``name`` imported from the omitted ``module``."""
    reason = f"{module} (a compiled SIFA op backend) is not part of the remote code"
    if name.endswith("_status"):
        return f"def {name}(*args: Any, **kwargs: Any) -> tuple[bool, str]:\n    return False, {reason!r}\n"
    if name.endswith("_loaded"):
        return f"def {name}(*args: Any, **kwargs: Any) -> bool:\n    return False\n"
    if name.startswith("sifa_attention_"):
        return f"def {name}(*args: Any, **kwargs: Any) -> Any:\n    raise RuntimeError({reason!r})\n"
    raise ValueError(
        f"remote code: cannot stand in for {name!r} from the omitted backend {module}; import only "
        "`*_status`/`*_loaded` functions and `sifa_attention_*` kernels from compiled backends"
    )


def flat_name(module: str) -> str:
    """Flat file stem of a package module: ``sifa_hub.ops.functional`` → ``sifa_ops_functional``,
    ``sifa_hub.models.sifa_resnet`` → ``sifa_resnet``, ``sifa_hub.hf.modeling_sifa`` → ``modeling_sifa``."""
    parts = module.split(".")[1:]
    if parts and parts[0] == "hf":
        return "_".join(parts[1:])
    if parts and parts[0] == "models":
        parts = parts[1:]
    name = "_".join(p.strip("_") for p in parts)
    return name if name.startswith("sifa") else f"sifa_{name}"


def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"remote code: cannot find the source of module {module!r}")
    return Path(spec.origin)


def _is_package(module: str) -> bool:
    return _module_file(module).name == "__init__.py"


def _is_submodule(package: str, name: str) -> bool:
    return importlib.util.find_spec(f"{package}.{name}") is not None


def _resolve(module: str, node: ast.ImportFrom) -> str | None:
    """Absolute name of the module an ``ImportFrom`` node imports from, or None if it is not in the package."""
    if node.level == 0:
        name = node.module or ""
        return name if name == PACKAGE or name.startswith(PACKAGE + ".") else None
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _package_imports(module: str, source: str) -> list[tuple[ast.ImportFrom, str]]:
    """``(node, imported module)`` for every import of a package module in ``source`` (any nesting)."""
    found: list[tuple[ast.ImportFrom, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target is None:
                continue
            # `from pkg import submodule` binds a module object: not expressible as a flat relative import
            submodules = [a.name for a in node.names if _is_package(target) and _is_submodule(target, a.name)]
            if submodules:
                raise ValueError(
                    f"remote code: {module} imports the module(s) {submodules} of {target} with `from ... import`; "
                    "import names from them instead (`from .submodule import name`)"
                )
            found.append((node, target))
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
            raise ValueError(f"remote code: {module} uses `import {PACKAGE}...`; use `from ... import` instead")
    return found


def _rewrite(module: str, source: str, stubs: dict[str, str]) -> tuple[str, list[str]]:
    """Source with package imports made flat and relative; also the package modules it needs.

    Names imported from omitted backends are recorded in ``stubs`` (name → omitted module).
    """
    lines = source.splitlines(keepends=True)
    needed = []
    # replace from the bottom so that earlier line numbers stay valid
    for node, target in sorted(_package_imports(module, source), key=lambda n: -n[0].lineno):
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
        if _is_omitted(target):
            new = f"{indent}from .{_STUBS} import {names}\n"
            stubs.update((a.name, target) for a in node.names)
        else:
            new = f"{indent}from .{flat_name(target)} import {names}\n"
            needed.append(target)
        tail = lines[last][node.end_col_offset or len(lines[last]) :]
        lines[first : last + 1] = [new.rstrip("\n") + tail if tail.strip() else new]
    header = f"# Generated by sifa_hub.hf.remote_code from {module}; do not edit.\n"
    return header + "".join(lines), needed


def remote_code_sources() -> dict[str, str]:
    """``{file name: source}`` of the flat remote-code files (the roots and every package module they import)."""
    out: dict[str, str] = {}
    stubs: dict[str, str] = {}
    todo, seen = list(REMOTE_CODE_ROOTS), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module in _NEVER:
            raise ValueError(f"remote code: {module} must not be imported by the model's code")
        source, needed = _rewrite(module, _module_file(module).read_text(encoding="utf-8"), stubs)
        out[f"{flat_name(module)}.py"] = source
        todo.extend(needed)
    if stubs:
        body = "\n\n".join(_stub(name, stubs[name]) for name in sorted(stubs))
        out[f"{_STUBS}.py"] = (
            "# Generated by sifa_hub.hf.remote_code; do not edit.\n"
            '"""Stand-ins for the compiled SIFA op backends, left out of remote code (pure-PyTorch op only)."""\n\n'
            f"from typing import Any\n\n\n{body}"
        )
    return dict(sorted(out.items()))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _add_auto_map(path: Path, auto_map: dict[str, str]) -> None:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    data["auto_map"] = {**data.get("auto_map", {}), **auto_map}
    _write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_remote_code(model_dir: str | os.PathLike[str]) -> list[str]:
    """Write the remote-code files into ``model_dir`` and add ``auto_map`` to its configs.

    ``model_dir`` must hold a ``config.json`` of ``model_type="sifa"`` (from ``save_pretrained``); a
    ``video_preprocessor_config.json``, if present, gets ``auto_map`` too.

    Returns:
        The names of the written ``.py`` files.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"write_remote_code: {config_path} not found; save the model there first")
    if json.loads(config_path.read_text(encoding="utf-8")).get("model_type") != "sifa":
        raise ValueError(f"write_remote_code: {config_path} is not a SIFA config (model_type != 'sifa')")
    sources = remote_code_sources()
    for name, text in sources.items():
        _write_atomic(model_dir / name, text)
    _add_auto_map(config_path, _AUTO_MAP)
    processor_path = model_dir / _PROCESSOR_FILE
    if processor_path.is_file():
        _add_auto_map(processor_path, _PROCESSOR_AUTO_MAP)
    return sorted(sources)


def export_for_remote_code(model: Any, out_dir: str | os.PathLike[str], video_processor: Any = None) -> list[str]:
    """``model.save_pretrained(out_dir)`` (+ ``video_processor.save_pretrained``) then :func:`write_remote_code`.

    Args:
        model: a :class:`~sifa_hub.hf.SifaModel` / :class:`~sifa_hub.hf.SifaForVideoClassification`.
        out_dir: the model directory to write.
        video_processor: optional :class:`~sifa_hub.hf.SifaVideoProcessor` saved alongside.

    Returns:
        The names of the written ``.py`` files.
    """
    model.save_pretrained(out_dir)
    if video_processor is not None:
        video_processor.save_pretrained(out_dir)
    return write_remote_code(out_dir)
