"""Writing posts: the model cache and batched generation, the int8 CPU decoder, the one sampling step
both share, and the safety filters on what comes out."""

from bot.core.generation.batcher import GenerationBatcher
from bot.core.generation.decoding import Sampling
from bot.core.generation.generator import GenerationError, GenerationRequest, Generator

__all__ = [
    "GenerationBatcher",
    "GenerationError",
    "GenerationRequest",
    "Generator",
    "Sampling",
]
