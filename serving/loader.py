"""Find the pipeline named by `SERVING_PIPELINE` (`pkg.module:attr` or `path/file.py:attr`)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from runtimes import Pipeline, PipelineDefinitionError


class PipelineLoadError(Exception):
    """The pipeline cannot be loaded; the message is the one line the daemon prints."""


def load_pipeline(spec: str) -> Pipeline:
    """Import the module and return its `@pipeline` object.

    `attr` may be omitted when the module defines exactly one pipeline. Raises
    PipelineLoadError; the original exception is chained for debug logging.
    """
    module_part, _, attr = spec.partition(":")
    if not module_part:
        raise PipelineLoadError(f"SERVING_PIPELINE={spec!r}: expected 'module:attr' or 'path/file.py:attr'")
    try:
        module = _import(module_part)
    except PipelineDefinitionError as exc:
        raise PipelineLoadError(str(exc)) from exc
    except PipelineLoadError:
        raise
    except Exception as exc:
        raise PipelineLoadError(f"cannot import {module_part!r}: {type(exc).__name__}: {exc}") from exc
    if not attr:
        found = [v for v in vars(module).values() if isinstance(v, Pipeline)]
        if len(found) != 1:
            raise PipelineLoadError(
                f"{module_part!r} defines {len(found)} pipelines; name one as '{module_part}:<attr>'"
            )
        return found[0]
    obj = getattr(module, attr, None)
    if obj is None:
        raise PipelineLoadError(f"{module_part!r} has no attribute {attr!r}")
    if not isinstance(obj, Pipeline):
        raise PipelineLoadError(f"{module_part}:{attr} is a {type(obj).__name__}, not a @pipeline")
    return obj


def package_root(path: Path) -> Path:
    """The folder a pipeline file's imports resolve from: its own folder, or, when that
    is a package (has `__init__.py`), the folder holding the top-most package."""
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        folder = folder.parent
    return folder


def _import(module_part: str) -> object:
    if module_part.endswith(".py") or "/" in module_part:
        path = Path(module_part).resolve()
        if not path.is_file():
            raise PipelineLoadError(f"pipeline file {module_part!r} does not exist")
        # The file's folder goes on sys.path so it can import its sibling modules, and,
        # for a file inside a package, the folder above the package (`from pkg import x`).
        for folder in dict.fromkeys([str(package_root(path)), str(path.parent)]):
            sys.path.insert(0, folder)
        name = f"_serving_pipeline_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PipelineLoadError(f"cannot load {module_part!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    return importlib.import_module(module_part)
