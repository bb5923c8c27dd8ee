"""Front end: read and validate specs, load models, turn a live Keras model into IR."""
