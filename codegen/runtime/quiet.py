"""Import TensorFlow without its start-up lines (absl, oneDNN, CUDA stubs, CPU features).

Setting TF_CPP_MIN_LOG_LEVEL inside the process is not enough: TensorFlow's C++
libraries log while they load, before they read it. So the import runs with the
process's stderr (file descriptor 2) pointed at /dev/null; Python exceptions still
propagate and are printed after stderr is restored. `--verbose` skips all this.
"""

import importlib
import importlib.util
import os
import sys

# --- inline ---


def quiet_tensorflow(argv=None):
    """Import TensorFlow silently unless --verbose is among `argv` (default: sys.argv).

    Without TensorFlow installed (another Keras backend) there is nothing to quiet.
    """
    if "--verbose" in (sys.argv[1:] if argv is None else argv) or "tensorflow" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        importlib.import_module("tensorflow")  # loaded here, silently, for keras to find
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
