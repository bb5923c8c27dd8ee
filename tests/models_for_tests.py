"""Small functional graphs, one per feature the generator must handle.

Each builder is referenced from specs as `models_for_tests:<function>`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

TRICKY = 'quote " and \' apostrophe\nnewline """ triple {{ jinja }} {% block %} \\ backslash'


@keras.saving.register_keras_serializable(package="stitchgen_tests")
class Tagged(layers.Layer):
    """A custom layer with a string argument full of quotes and newlines."""

    def __init__(self, tag, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.tag = tag
        self.factor = factor

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return ops.multiply(x, self.scale) * self.factor

    def get_config(self):
        return {**super().get_config(), "tag": self.tag, "factor": self.factor}


class Unregistered(layers.Layer):
    """A custom layer that its author never registered."""

    def call(self, x):
        return ops.tanh(x)


def shared_layers():
    inp = keras.Input((6,), name="x")
    dense = layers.Dense(6, activation="relu", name="shared")
    a = dense(inp)
    b = dense(a)
    c = layers.Dense(6, name="other")(a)
    out = layers.Add(name="sum")([b, c, dense(c)])
    return keras.Model(inp, out, name="shared_layers")


def nested_models():
    inner_in = keras.Input((8,), name="inner_in")
    inner = keras.Model(inner_in, layers.Dense(4, name="inner_dense")(inner_in), name="encoder")
    seq = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(5, activation="tanh", name="seq_dense"),
            layers.BatchNormalization(name="seq_bn"),
        ],
        name="head",
    )
    inp = keras.Input((8,), name="features")
    x = inner(inp)
    y = inner(layers.Dense(8, name="pre")(inp))  # the nested model is shared too
    z = seq(layers.Concatenate(name="cat")([x, y])[:, :4])
    return keras.Model(inp, z, name="nested")


def multi_io():
    image = keras.Input((8, 8, 3), name="image")
    meta = keras.Input((5,), name="meta")
    x = layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    m = layers.Dense(4, name="meta_dense")(meta)
    merged = layers.Concatenate(name="merge")([x, m])
    return keras.Model(
        {"image": image, "meta": meta},
        {"logits": layers.Dense(3, name="logits")(merged), "aux": layers.Dense(2, name="aux")(m)},
        name="multi_io",
    )


def ops_nodes():
    inp = keras.Input((4, 6), name="x")
    a = layers.Dense(6, name="add_1")(inp)  # named like the automatic name of a second `add` op
    b = a + inp * 2.0
    b = 1.0 - b
    c = b[:, 1:3, ::2]
    d = ops.sum(c, axis=1, keepdims=True)
    e = ops.reshape(d, (-1, 3))
    f = ops.concatenate([e, ops.mean(inp, axis=(1,))[:, :3]], axis=-1)
    out = layers.Dense(2, name="head")(f)
    return keras.Model(inp, out, name="ops_nodes")


def custom_layers():
    inp = keras.Input((5,), name="x")
    x = Tagged(TRICKY, factor=0.5, name="tagged")(inp)
    x = Unregistered(name="plain")(x)
    return keras.Model(inp, x, name=TRICKY[:5] + "_custom")


def dtype_policies():
    inp = keras.Input((6,), name="x")
    x = layers.Dense(8, dtype="mixed_float16", name="half")(inp)
    x = layers.Activation("relu", dtype="float32", name="back_to_float")(x)
    x = layers.Dense(3, dtype="float64", name="double")(x)
    return keras.Model(inp, x, name="dtypes")


def transformer_block():
    inp = keras.Input((7, 16), name="tokens")
    norm = layers.LayerNormalization(epsilon=1e-6, name="ln_1")(inp)
    attn = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(norm, norm)
    x = layers.Add(name="residual_1")([inp, attn])
    y = layers.LayerNormalization(epsilon=1e-6, name="ln_2")(x)
    y = layers.Dense(32, activation="gelu", name="mlp_1")(y)
    y = layers.Dropout(0.1, name="drop")(y)
    y = layers.Dense(16, name="mlp_2")(y)
    return keras.Model(inp, layers.Add(name="residual_2")([x, y]), name="transformer")


def call_kwargs_and_objects():
    inp = keras.Input((6,), name="x")
    x = layers.Dense(
        4,
        kernel_initializer=keras.initializers.HeNormal(seed=3),
        kernel_regularizer=keras.regularizers.L2(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        bias_initializer=keras.initializers.Constant(0.25),
        name="dense",
    )(inp)
    x = layers.BatchNormalization(name="bn")(x, training=False)
    x = layers.MaxPooling1D(pool_size=2, strides=1, name="pool")(layers.Reshape((4, 1), name="rs")(x))
    frozen = layers.Dense(3, name="frozen", trainable=False)(layers.Flatten(name="flat")(x))
    return keras.Model(inp, frozen, name="kwargs_and_objects")


def sequential_model():
    return keras.Sequential(
        [keras.Input((10,)), layers.Dense(8, activation="relu", name="d1"), layers.Dense(2, name="d2")],
        name="plain_sequential",
    )


def with_lambda():
    inp = keras.Input((3,), name="x")
    return keras.Model(inp, layers.Lambda(lambda t: t * 2, name="double")(inp))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def subclassed():
    model = Subclassed()
    model(keras.ops.zeros((1, 3)))
    return model


FEATURES = [
    "shared_layers",
    "nested_models",
    "multi_io",
    "ops_nodes",
    "custom_layers",
    "dtype_policies",
    "transformer_block",
    "call_kwargs_and_objects",
    "sequential_model",
    "repeated_blocks",
    "looped_blocks",
]


def _residual_block(x, filters, name, extra=False):
    """A conv-bn-relu pair with a projection shortcut, named like keras.applications."""
    shortcut = layers.Conv2D(filters, 1, name=name + "_0_conv")(x)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name + "_1_conv")(x)
    y = layers.BatchNormalization(name=name + "_1_bn")(y)
    y = layers.Activation("relu", name=name + "_1_relu")(y)
    if extra:
        y = layers.Dropout(0.1, name=name + "_drop")(y)
    y = layers.Add(name=name + "_add")([shortcut, y])
    return layers.Activation("relu", name=name + "_out")(y)


def repeated_blocks(n: int = 4, odd: int | None = None):
    """`n` residual blocks with filters that do not follow the index; block `odd` has one extra layer."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = inputs
    for i in range(1, n + 1):
        x = _residual_block(x, 4 + (i * 5) % 7, f"stage_block{i}", extra=i == odd)
    outputs = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="repeated")


def looped_blocks(n: int = 5):
    """`n` identical residual blocks in a row: the factored style writes a loop."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", name="stem_conv")(inputs)
    for i in range(1, n + 1):
        x = _residual_block(x, 6, f"stage_block{i}")
    outputs = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="looped")


def tiny_head():
    """A small CNN to cut a head from: relu2 is 8 x 8 x 12."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="h_conv1")(inputs)
    x = layers.ReLU(name="h_relu1")(x)
    x = layers.Conv2D(12, 3, padding="same", name="h_conv2")(x)
    x = layers.ReLU(name="h_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="h_pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="h_pred")(x)
    return keras.Model(inputs, outputs, name="tiny_head")


def wide_head():
    """A head whose convolutions hold enough weights (1024+ per tensor) for dynamic-range int8 to quantise."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", name="w_conv1")(inputs)
    x = layers.ReLU(name="w_relu1")(x)
    x = layers.Conv2D(64, 3, padding="same", name="w_conv2")(x)
    x = layers.ReLU(name="w_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="w_pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="w_pred")(x)
    return keras.Model(inputs, outputs, name="wide_head")


def tiny_tail():
    """A small classifier to take a tail from: it starts at t_conv2, after an 8 x 8 x 6 ReLU."""
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(6, 3, strides=2, padding="same", name="t_conv1")(inputs)
    x = layers.ReLU(name="t_relu1")(x)
    x = layers.Conv2D(10, 3, padding="same", name="t_conv2")(x)
    x = layers.ReLU(name="t_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="t_pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="t_pred")(x)
    return keras.Model(inputs, outputs, name="tiny_tail")


def hostile_head(names=("image", "inner_conv", "inner", "relu")):
    """A head whose input, nested model and layers take their names from the caller (any text)."""
    inputs = keras.Input((8, 8, 3), name=names[0])
    inner_input = keras.Input((8, 8, 3))
    inner = keras.Model(inner_input, layers.Conv2D(4, 3, padding="same", name=names[1])(inner_input), name=names[2])
    return keras.Model(inputs, layers.ReLU(name=names[3])(inner(inputs)), name="hostile_head")


def hostile_tail(names=("image", "conv", "relu", "proj", "add", "pool", "pred")):
    """A tail whose frontier (names[2], consumed by a conv and an add) and layers carry the caller's names."""
    inputs = keras.Input((8, 8, 3), name=names[0])
    x = layers.ReLU(name=names[2])(layers.Conv2D(4, 3, padding="same", name=names[1])(inputs))
    x = layers.Add(name=names[4])([x, layers.Conv2D(4, 1, name=names[3])(x)])
    outputs = layers.Dense(3, name=names[6])(layers.GlobalAveragePooling2D(name=names[5])(x))
    return keras.Model(inputs, outputs, name="hostile_tail")
