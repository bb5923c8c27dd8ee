"""Two small networks of different families for the stitching benchmark, on 32 x 32 digits.

Batch norm uses momentum 0.9: with ~25 steps per epoch, the default 0.99 leaves the
moving statistics far from the data and the test accuracy far below the training one.

Both take raw pixels (0-255) and rescale inside, each its own way, so the
benchmark's specs use `preprocess = "none"`.
"""

from __future__ import annotations

import keras
from keras import layers


def _separable(x, filters, strides, name):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=name + "_dw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=name + "_dw_bn")(x)
    x = layers.ReLU(6.0, name=name + "_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=name + "_pw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=name + "_pw_bn")(x)
    return layers.ReLU(6.0, name=name + "_pw_relu")(x)


def mobile_digits():
    """MobileNet-style: depthwise-separable blocks, ReLU6, inputs scaled to [-1, 1]."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="m_scale")(inputs)
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="m_stem")(x)
    x = layers.BatchNormalization(momentum=0.9, name="m_stem_bn")(x)
    x = layers.ReLU(6.0, name="m_stem_relu")(x)
    for i, (filters, strides) in enumerate([(64, 2), (64, 1), (128, 2), (128, 1), (256, 2)], start=1):
        x = _separable(x, filters, strides, f"m_block{i}")
    x = layers.GlobalAveragePooling2D(name="m_pool")(x)
    x = layers.Dropout(0.2, name="m_drop")(x)
    outputs = layers.Dense(10, activation="softmax", name="m_pred")(x)
    return keras.Model(inputs, outputs, name="mobile_digits")


def _residual(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=name + "_proj")(x)
        shortcut = layers.BatchNormalization(momentum=0.9, name=name + "_proj_bn")(shortcut)
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name + "_conv1")(x)
    y = layers.BatchNormalization(momentum=0.9, name=name + "_bn1")(y)
    y = layers.ReLU(name=name + "_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name + "_conv2")(y)
    y = layers.BatchNormalization(momentum=0.9, name=name + "_bn2")(y)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.ReLU(name=name + "_out")(y)


def res_digits():
    """ResNet-style: basic residual blocks, ReLU, inputs scaled to [0, 1]."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="r_scale")(inputs)
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="r_stem")(x)
    x = layers.BatchNormalization(momentum=0.9, name="r_stem_bn")(x)
    x = layers.ReLU(name="r_stem_relu")(x)
    for i, (filters, strides) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2)], start=1):
        x = _residual(x, filters, strides, f"r_block{i}")
    x = layers.GlobalAveragePooling2D(name="r_pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="r_pred")(x)
    return keras.Model(inputs, outputs, name="res_digits")
