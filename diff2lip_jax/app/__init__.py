"""Lip-sync web app (``python -m diff2lip_jax.app --checkpoint CKPT``), on the optional
``[app]`` extra (Gradio).

``server`` is the command line and the offline setup, ``ui`` the Gradio page, ``jobs`` the
framework-free work behind it (sampler cache, one job with user-facing errors, examples).
Importing this package does not import Gradio.
"""
