"""Pieces of benchmarks/accelerator_suite.py: device facts, suite configs, measurements.

Everything here imports only jax, flax, optax, numpy and this repository's packages (no
ml_collections, librosa, grain, tensorflow, av, ...), so the suite runs on an accelerator
machine that has only jax (CUDA or TPU), flax, optax, orbax-checkpoint and numpy.
"""
