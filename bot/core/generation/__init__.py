"""Writing posts: the model cache and batched generation, the int8 CPU decoder, the one sampling step
both share, and the safety filters on what comes out."""
