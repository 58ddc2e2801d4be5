"""Run lava-nc 0.10 / lava-dl 0.6 on Python 3.11 without editing installed files.

Three incompatibilities (and one Lava bug) are handled at import time, before any Lava module loads:

1. ``lava.magma.compiler.var_model`` uses a mutable dataclass instance
   (``ByteEncoder()``) as a field default, which Python 3.11 rejects. We load
   that module through a loader that rewrites those defaults to
   ``field(default_factory=ByteEncoder)``, the fix Lava itself adopted later.
2. Lava's multiprocessing message infrastructure calls
   ``mp.set_start_method('fork')`` at import, which raises once anything else
   (scikit-learn, torch) has asked for the start method; the same loader adds
   ``force=True`` (the method stays 'fork', Lava's requirement).
3. ``lava.lib.dl.slayer`` eagerly imports ``slayer.object_detection``, which needs
   torchvision and OpenCV (neither works beside the CPU torch here). We register
   a placeholder module that raises a clear ImportError when anything in it is
   used; nothing in this project uses it.
4. Lava bug (all Pythons): ``Var.set`` on an integer scalar Var of a Python process
   model (a LIF's ``dv``) stores a float, after which the model's integer update and
   ``Var.get`` fail or hang. The same loader casts the value back to int. The host-set
   DLIF decay (what Loihi2HwCfg uses) depends on it.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
# module -> [(text in lava 0.10.0, replacement)]; a text that is absent is left alone
SOURCE_FIXES = {
    "lava.magma.compiler.var_model": [
        ("from dataclasses import dataclass, InitVar\n",
         "from dataclasses import dataclass, InitVar, field\n"),
        ("ByteEncoder = ByteEncoder()", "ByteEncoder = field(default_factory=ByteEncoder)"),
    ],
    "lava.magma.core.model.py.model": [  # Var.set stored a float into an int Var (then get hangs)
        ("                setattr(self, var_name, buffer.item())",
         "                setattr(self, var_name, int(buffer.item()))"),
    ],
    "lava.magma.runtime.message_infrastructure.multiprocessing": [
        ("mp.set_start_method('fork')", "mp.set_start_method('fork', force=True)"),
    ],
}


def patch_source(fullname: str, source: str) -> str:
    for old, new in SOURCE_FIXES.get(fullname, []):
        source = source.replace(old, new)
    return source


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module from patched source; never reads or writes its .pyc."""

    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        return compile(patch_source(fullname, source), self.path, "exec", dont_inherit=True)


class _PatchingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in SOURCE_FIXES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchedSourceLoader(fullname, spec.origin)
        return spec


class _MissingObjectDetection(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            "lava.lib.dl.slayer.object_detection needs torchvision and OpenCV, "
            "which loihi-stable does not install; it is disabled by loihi_stable.compat"
        )


def install() -> None:
    """Idempotently apply both fixes; call before importing any lava module."""
    if not any(isinstance(f, _PatchingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchingFinder())
    if OBJECT_DETECTION not in sys.modules:
        sys.modules[OBJECT_DETECTION] = _MissingObjectDetection(OBJECT_DETECTION)


install()
