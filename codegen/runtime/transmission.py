"""What a bottleneck adapter sends from phone to server, as three Keras layers of the generated hybrid.

`Quantize` is the phone's last step and `Dequantize` the server's first: at int8 the
code travels as int8 values plus, per image, one scale and one zero point for the
whole tensor (asymmetric, 256 levels; 8 bytes as two float32 values). `Transmission`
is the two in one, used inside the trained hybrid: its forward pass is exactly
`Dequantize(Quantize(x))`, its gradient the identity (a straight-through estimator),
so training sees the error the link will add. At float32 all three are the identity;
at float16 they cast.

The generated hybrid carries this code (everything below the marker); it imports
nothing but Keras, so the module stays standalone.
"""

import keras

# --- inline ---


def quantization_parameters(x):
    """Per image: (scale, zero point) mapping the tensor's range onto the int8 levels -128..127."""
    axes = tuple(range(1, len(x.shape)))
    low = keras.ops.min(x, axis=axes, keepdims=True)
    high = keras.ops.max(x, axis=axes, keepdims=True)
    scale = keras.ops.maximum(high - low, 1e-12) / 255.0
    zero_point = keras.ops.round(-128.0 - low / scale)
    return keras.ops.stop_gradient(scale), keras.ops.stop_gradient(zero_point)


def quantize_int8(x):
    """(int8 levels as float32, scale, zero point): every value within half a step of its level."""
    scale, zero_point = quantization_parameters(x)
    levels = keras.ops.clip(keras.ops.round(x / scale) + zero_point, -128.0, 127.0)
    return levels, scale, zero_point


def transmitted_inputs(shape, precision):
    """Keras inputs for what the phone sends: the code, and at int8 its (scale, zero point) per image."""
    if precision == "int8":
        return [keras.Input(shape=shape, dtype="int8", name="code"), keras.Input(shape=(2,), name="code_range")]
    return [keras.Input(shape=shape, dtype=precision, name="code")]


class Quantize(keras.layers.Layer):
    """The phone side's last step: the code as sent, a list of the code and (at int8) its range."""

    def __init__(self, precision="int8", **kwargs):
        super().__init__(**kwargs)
        self.precision = precision

    def call(self, x):
        if self.precision == "float32":
            return [x]
        if self.precision == "float16":
            return [keras.ops.cast(x, "float16")]
        levels, scale, zero_point = quantize_int8(x)
        batch = keras.ops.shape(x)[0]
        code_range = keras.ops.concatenate(
            [keras.ops.reshape(scale, (batch, 1)), keras.ops.reshape(zero_point, (batch, 1))], axis=-1
        )
        return [keras.ops.cast(levels, "int8"), code_range]

    def compute_output_spec(self, x):
        if self.precision == "int8":
            return [keras.KerasTensor(x.shape, "int8"), keras.KerasTensor((x.shape[0], 2), "float32")]
        return [keras.KerasTensor(x.shape, self.precision)]

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


class Dequantize(keras.layers.Layer):
    """The server side's first step: what `Quantize` sent, back to float32."""

    def __init__(self, precision="int8", **kwargs):
        super().__init__(**kwargs)
        self.precision = precision

    def call(self, received):
        code = keras.ops.cast(received[0], "float32")
        if self.precision != "int8":
            return code
        rank = len(received[0].shape)
        scale = keras.ops.reshape(received[1][:, 0], (-1,) + (1,) * (rank - 1))
        zero_point = keras.ops.reshape(received[1][:, 1], (-1,) + (1,) * (rank - 1))
        return (code - zero_point) * scale

    def compute_output_spec(self, received):
        return keras.KerasTensor(received[0].shape, "float32")

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


class Transmission(keras.layers.Layer):
    """The link inside the trained hybrid: forward `Dequantize(Quantize(x))`, gradient the identity."""

    def __init__(self, precision="int8", **kwargs):
        super().__init__(**kwargs)
        self.precision = precision

    def call(self, x):
        if self.precision == "float32":
            return x
        if self.precision == "float16":
            received = keras.ops.cast(keras.ops.cast(x, "float16"), "float32")
        else:
            levels, scale, zero_point = quantize_int8(x)
            received = (levels - zero_point) * scale
        # exactly `received` going forward (x - x is 0), the identity going back
        return keras.ops.stop_gradient(received) + (x - keras.ops.stop_gradient(x))

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}
