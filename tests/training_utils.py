"""A tiny training config and helpers shared by the trainer tests."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from configs import synthetic
from diff2lip_jax.diffusion import create_diffusion
from diff2lip_jax.models import create_model
from diff2lip_jax.models import init_params
from diff2lip_jax.training.state import create_train_state


def tiny_config(**train):
  """32x32, two levels, no attention: compiles and steps in seconds on CPU."""
  config = synthetic.get_config()
  m = config.model
  m.image_size, m.channel_mult, m.num_channels = 32, "1,2", 32
  m.attention_resolutions, m.audio_encoder_num_res_blocks = "-1", 1
  config.train.update(dict(batch_size=2, num_steps=4, log_every=2, checkpoint_every=2,
                           sample_every=1000, keep_checkpoints=5), **train)
  config.optimizer.warmup_steps = 0
  config.data.update(dict(synthetic_clips=8, synthetic_eval_clips=0, min_frames=20,
                          max_frames=24))
  config.data.pipeline.image_size = 32
  config.data.pipeline.host_prefetch = 0
  return config


def random_batch(config, windows: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  size, f = int(config.model.image_size), int(config.model.nframes)
  img = lambda: rng.uniform(-1, 1, (windows, f, size, size, 3)).astype(np.float32)
  return dict(image=img(), ref_img=img(),
              indiv_mels=rng.standard_normal((windows, f, 80, 16)).astype(np.float32),
              mel=rng.standard_normal((windows, 80, 16)).astype(np.float32))


def model_and_state(config, seed: int = 0):
  model = create_model(config.model)
  diffusion = create_diffusion(config.diffusion, timestep_respacing="")
  params = init_params(model, config.model, jax.random.PRNGKey(seed))
  return model, diffusion, create_train_state(jax.random.PRNGKey(seed + 1), params, config)


def tree_max_abs_diff(a, b) -> float:
  diffs = jax.tree_util.tree_map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)
  return max(jax.tree_util.tree_leaves(diffs))
