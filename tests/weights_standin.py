"""A local stand-in for the ImageNet weight downloads, so `weights="imagenet"` runs offline.

Only the network fetch is replaced: `keras.applications.*(weights="imagenet")` runs
Keras's real code, asks `keras.utils.get_file` for its usual file name, finds the
file in the Keras cache, and loads it with Keras's real HDF5 loader. The files are
seeded random weights (not ImageNet's), written in Keras's legacy HDF5 layout by a
model of the same architecture, under the names Keras requests.

Two hooks, both active only where a stand-in folder is named:
- `urlretrieve` copies `<folder>/<cache file name>` instead of downloading (a file with no
  stand-in fails as a download would, naming it);
- `validate_file` accepts exactly the stand-in files (their sha256 is in the folder's
  manifest), since their hashes cannot match the published ones; any other file is
  checked as usual.

Subprocesses (the emitted scripts, the CLI) get the same hooks through
`tests/standin/sitecustomize.py` when STITCHGEN_WEIGHTS_STANDIN names the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.parse
from pathlib import Path

ENV = "STITCHGEN_WEIGHTS_STANDIN"
SITE_DIR = Path(__file__).resolve().parent / "standin"
MANIFEST = "manifest.json"


class _Requested(Exception):
    def __init__(self, fname: str):
        super().__init__(fname)
        self.fname = fname


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def install(folder: str | Path) -> None:
    """Point Keras's download hooks at `folder` in this process."""
    import sys

    import keras  # noqa: F401 - loads keras.src.utils.file_utils

    file_utils = sys.modules["keras.src.utils.file_utils"]

    folder = Path(folder)
    original_validate = getattr(file_utils.validate_file, "__wrapped__", file_utils.validate_file)

    def urlretrieve(origin, target, reporthook=None):
        # get_file downloads into the cache under the name it was given, which can
        # differ from the URL's (NASNet: nasnet_mobile_no_top.h5 from NASNet-mobile-no-top.h5)
        name = os.path.basename(target)
        source = folder / name
        if not source.is_file():
            raise Exception(f"URL fetch failure on {origin}: no network here, and no stand-in file {name}")
        shutil.copyfile(source, target)

    def validate_file(fpath, file_hash, algorithm="auto", chunk_size=65535):
        if _sha256(fpath) in _manifest(folder).values():
            return True
        return original_validate(fpath, file_hash, algorithm=algorithm, chunk_size=chunk_size)

    validate_file.__wrapped__ = original_validate
    file_utils.urlretrieve = urlretrieve
    file_utils.validate_file = validate_file


def requested_file(constructor, **kwargs) -> str:
    """The file name `constructor(weights="imagenet", **kwargs)` asks `get_file` for (cached or not)."""
    import sys

    import keras  # noqa: F401 - loads keras.src.utils.file_utils

    file_utils = sys.modules["keras.src.utils.file_utils"]
    saved = file_utils.get_file

    def record(fname=None, origin=None, *args, **kwargs):
        raise _Requested(fname or os.path.basename(urllib.parse.urlsplit(origin).path))

    file_utils.get_file = record
    try:
        constructor(weights="imagenet", **kwargs)
    except _Requested as request:
        return request.fname
    finally:
        file_utils.get_file = saved
    raise RuntimeError(f"{constructor.__name__} loaded imagenet weights without asking for a file")


def write_standin(folder: str | Path, constructor, seed: int = 0, **kwargs) -> Path:
    """Seeded weights for `constructor(**kwargs)` under the file name Keras requests for imagenet."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from codegen.runtime.porting import fill_seeded

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fname = requested_file(constructor, **kwargs)
    path = folder / fname
    if not path.is_file():
        keras.backend.clear_session()
        model = fill_seeded(constructor(weights=None, **kwargs), seed=seed)
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        manifest = _manifest(folder)
        manifest[fname] = _sha256(path)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return path


def subprocess_env(folder: str | Path, keras_home: str | Path) -> dict[str, str]:
    """Variables that give a child process the stand-in and an empty Keras cache of its own."""
    return {ENV: str(folder), "KERAS_HOME": str(keras_home), "PYTHONPATH": str(SITE_DIR)}
