"""LightningModules: the LM task."""
