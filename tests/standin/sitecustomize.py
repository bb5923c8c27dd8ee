"""Installs the ImageNet weight stand-in in test subprocesses (see tests/weights_standin.py).

Active only when STITCHGEN_WEIGHTS_STANDIN names a folder; the hooks are set when
Keras's file utilities are first imported, so nothing is imported early.
"""

import importlib.abc
import importlib.util
import os
import sys

_TARGET = "keras.src.utils.file_utils"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            try:
                import weights_standin
            finally:
                sys.path.pop(0)
            weights_standin.install(os.environ[weights_standin.ENV])

        loader.exec_module = exec_module
        return spec


if os.environ.get("STITCHGEN_WEIGHTS_STANDIN"):
    sys.meta_path.insert(0, _PatchOnImport())
