"""IR: a graph of ops and calls with tensor edges; no Keras import, so tests build it by hand."""
