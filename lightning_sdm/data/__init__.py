"""Data: codec tokenization into shards and the streaming DataModule."""
