"""Values of `pretrained` that name no directory."""

# A small random model built from the config's own sizes (`t5_config`, `encodec_config`):
# for trying the pipeline and for tests; its outputs mean nothing. `fit` refuses an unset
# `pretrained` (it would train on noise without a word) but accepts this explicit choice.
RANDOM_WEIGHTS = "random"


def is_random(pretrained: str | None) -> bool:
    """Whether a `pretrained` value builds a random model (unset, or asked for)."""
    return pretrained is None or pretrained == RANDOM_WEIGHTS
