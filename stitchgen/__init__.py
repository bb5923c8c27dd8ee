"""stitchgen: standalone Keras source, weight-porting scripts and stitched hybrids.

The Python API (the CLI is a thin layer over the same functions)::

    import stitchgen

    files = stitchgen.generate("examples/mobilenet.toml")       # {Path: text}, nothing written
    stitchgen.write("examples/mobilenet.toml")                   # all-or-nothing, like `generate`
    stale = stitchgen.check("examples/mobilenet.toml")           # like `generate --check`
    rows = stitchgen.cuts("keras.applications.MobileNet")        # cut points with shapes
    crossing = stitchgen.frontier("keras.applications.InceptionResNetV2", 610)
    numbers = stitchgen.report("examples/mobilenet_to_inception_resnet_v2.toml", repeats=0)
    split = stitchgen.plan("examples/mobilenet_to_inception_resnet_v2.toml", [1, 10, 100])  # best cut per Mbit/s

A spec is a TOML path or a dict with the same keys. Errors a command would report
in one line raise `stitchgen.StitchgenError` with that line.
"""

from codegen import __version__
from codegen.api import check, cuts, frontier, generate, inspect, load, plan, report, write
from codegen.errors import StitchgenError

__all__ = [
    "StitchgenError",
    "__version__",
    "check",
    "cuts",
    "frontier",
    "generate",
    "inspect",
    "load",
    "plan",
    "report",
    "write",
]
