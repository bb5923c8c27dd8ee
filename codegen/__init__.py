"""stitchgen: turn Keras functional models into standalone, reviewable Keras source."""

__version__ = "0.1.0"
