"""Training state (a pytree Orbax saves whole) and the optimizers that update it."""
from __future__ import annotations

from typing import Any, TYPE_CHECKING

import flax
import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:  # type hints only: the train step runs without ml_collections
  import ml_collections


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator.

  ``ema`` maps ``"ema_<rate>"`` to a params copy. ``disc_*`` are empty dicts when the
  adversarial term is off. ``nonfinite_steps`` counts skipped updates in total,
  ``nonfinite_streak`` those in a row (the loop stops the run past a limit).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema: Any
  rng: jax.Array
  disc_params: Any
  disc_opt_state: Any
  nonfinite_steps: jax.Array
  nonfinite_streak: jax.Array


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to ``lr`` then constant, or cosine decay to ``lr * end_factor``."""
  opt = config.optimizer
  warmup = max(int(opt.warmup_steps), 0)
  if opt.schedule == "constant":
    after = optax.constant_schedule(opt.lr)
  elif opt.schedule == "cosine":
    after = optax.cosine_decay_schedule(opt.lr, max(int(config.train.num_steps) - warmup, 1),
                                        alpha=opt.end_factor)
  else:
    raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {opt.schedule!r}")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, opt.lr, warmup), after], [warmup])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with warmup and global-norm clipping; ``grad_accum_steps > 1`` wraps MultiSteps."""
  opt = config.optimizer
  chain = []
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_schedule(config), b1=opt.b1, b2=opt.b2, eps=opt.eps,
                           weight_decay=opt.weight_decay))
  tx = optax.chain(*chain)
  if int(opt.grad_accum_steps) > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=int(opt.grad_accum_steps))
  return tx


def make_disc_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  disc = config.discriminator
  return optax.adam(disc.lr, b1=disc.b1, b2=disc.b2)


def ema_names(config: ml_collections.ConfigDict) -> list[str]:
  return [f"ema_{float(r)}" for r in _ema_rates(config)]


def _ema_rates(config: ml_collections.ConfigDict) -> list[float]:
  rates = config.train.ema_rates
  if isinstance(rates, str):
    rates = [r for r in rates.split(",") if r.strip()]
  return [float(r) for r in rates]


def ema_decay(rate: float, step: jax.Array) -> jax.Array:
  """``min(rate, (1 + step) / (10 + step))``: early on the average forgets the random init
  quickly, so short runs (and the first samples of long ones) use trained weights."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(rate, (1.0 + step) / (10.0 + step))


def update_ema(ema: dict, params: Any, config: ml_collections.ConfigDict,
               step: jax.Array) -> dict:
  """``ema <- d * ema + (1 - d) * params`` with ``d = ema_decay(rate, step)`` per rate."""
  out = {}
  for rate, name in zip(_ema_rates(config), ema_names(config)):
    d = ema_decay(rate, step)
    out[name] = jax.tree_util.tree_map(lambda e, p, d=d: d * e + (1.0 - d) * p, ema[name], params)
  return out


def create_train_state(rng: jax.Array, params: Any, config: ml_collections.ConfigDict,
                       disc_params: Any = None) -> TrainState:
  """A fresh state at step 0 (EMA copies start equal to the initial params)."""
  tx = make_optimizer(config)
  disc_params = disc_params if disc_params is not None else {}
  disc_opt = make_disc_optimizer(config).init(disc_params) if disc_params else {}
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      ema={name: jax.tree_util.tree_map(jnp.copy, params) for name in ema_names(config)},
      rng=rng, disc_params=disc_params, disc_opt_state=disc_opt,
      nonfinite_steps=jnp.zeros((), jnp.int32), nonfinite_streak=jnp.zeros((), jnp.int32))


def inference_params(state: TrainState, config: ml_collections.ConfigDict) -> Any:
  """The params to sample with: the first EMA copy, or the raw params without EMA."""
  names = ema_names(config)
  return state.ema[names[0]] if names else state.params
