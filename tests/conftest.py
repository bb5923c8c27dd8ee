"""Test-wide settings, made before anything imports Keras.

KERAS_HOME points at a fresh folder per test process, so the ImageNet stand-in
(tests/weights_standin.py) never reads or writes the user's ~/.keras cache.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONHASHSEED", "0")
_KERAS_HOME = tempfile.mkdtemp(prefix="stitchgen-keras-home-")
os.environ["KERAS_HOME"] = _KERAS_HOME
atexit.register(shutil.rmtree, _KERAS_HOME, True)
