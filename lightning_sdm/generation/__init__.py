"""Generation for real use: requests, model sources, windowed continuation, the runner."""

from lightning_sdm.generation.requests import (
    GenerationRequest,
    PromptList,
    read_prompts,
    read_requests,
)
from lightning_sdm.generation.runner import (
    GenerationOptions,
    GenerationSummary,
    LongerThanTrainedWarning,
    generate_requests,
)
from lightning_sdm.generation.source import GenerationSource, load_source
from lightning_sdm.generation.windows import WindowPlan, generate_in_windows

__all__ = [
    "GenerationOptions",
    "GenerationRequest",
    "GenerationSource",
    "GenerationSummary",
    "LongerThanTrainedWarning",
    "PromptList",
    "WindowPlan",
    "generate_in_windows",
    "generate_requests",
    "load_source",
    "read_prompts",
    "read_requests",
]
