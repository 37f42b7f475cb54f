"""lightning_sdm: Lightning framework for text-to-music codebook language models."""

__version__ = "0.1.0"
