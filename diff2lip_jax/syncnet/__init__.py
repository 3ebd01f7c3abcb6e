"""The SyncNet lip-sync expert: its training data (Grain pairs), initialisation and training.

The network itself is :mod:`diff2lip_jax.models.syncnet`; its checkpoints are written and
read by :mod:`diff2lip_jax.checkpoints`.
"""
