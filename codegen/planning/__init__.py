"""Planning: where a graph can be cut, head and tail slices, the adapter, blocks, motifs and names."""
