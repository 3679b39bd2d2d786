"""Training workload: a byte-level causal transformer trained on Python's stdlib sources with
DDP, checkpointed to a file:// or s3:// artifact store and resumed from it (see README.md)."""
