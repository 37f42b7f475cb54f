"""Models: the codebook LM and its text-conditioned wrapper."""
