"""Re-export of :mod:`diff2lip_jax.diffusion.sampling` (the one jitted sampler), kept for
code written against ``diff2lip_jax.sampling``."""
from diff2lip_jax.diffusion.sampling import (lower_half_mask, make_sampler,  # noqa: F401
                                             masked_condition, sample)

__all__ = ["sample", "make_sampler", "masked_condition", "lower_half_mask"]
