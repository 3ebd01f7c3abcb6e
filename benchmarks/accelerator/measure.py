"""The suite's measurements; each compiles first, then times warm calls with block_until_ready.

Every function returns a JSON-ready dict. Shapes: frames ``[B, S, S, 3]``, masks
``[B, S, S, 1]``, mel windows ``[B, 80, 16]``; training batches ``[W, F, S, S, 3]``.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax import models
from diff2lip_jax.diffusion import create_diffusion, sampling
from diff2lip_jax.training.state import create_train_state
from diff2lip_jax.training.step import make_train_step


def compile_and_time(jitted: Callable, args: tuple, repeats: int) -> dict[str, Any]:
  """Compiles ``jitted`` for ``args``, runs one warm-up call, then ``repeats`` timed calls.

  Returns compile seconds, the median/min step seconds, XLA's FLOP count of one call (None
  when the backend gives none; loops are counted once) and the last output.
  """
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  flops = float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None
  out = jax.block_until_ready(compiled(*args))     # warm-up (first-run allocations)
  times = []
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return {"compile_s": compile_s, "step_s": statistics.median(times), "min_step_s": min(times),
          "timed_calls": len(times), "flops": flops, "output": out}


def random_params(config: Any, seed: int = 0) -> Any:
  """Params of the config's model, N(0, 0.02) in float32, built without compiling init.

  Timings do not depend on the values; this skips a full-model init compile per run.
  """
  model = models.create_model(config.model)
  shapes = jax.eval_shape(lambda: models.init_params(model, config.model, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.02, s.shape).astype(np.float32)), shapes)


def frame_inputs(config: Any, batch: int, seed: int = 0) -> dict[str, jax.Array]:
  """Sampler inputs of ``batch`` frames: noise, masked condition, mask, reference, mels."""
  size = int(config.model.image_size)
  rng = np.random.default_rng(seed)
  img = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)), jnp.float32)
  noise = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
  mask = sampling.lower_half_mask(batch, size, float(config.model.face_hide_percentage))
  return {"noise": noise, "cond_img": sampling.masked_condition(img, mask, noise), "mask": mask,
          "ref_img": jnp.flip(img, axis=0),
          "indiv_mels": jnp.asarray(rng.standard_normal((batch, 80, 16)), jnp.float32)}


def _rates(timing: dict[str, Any], frames: int, flops_per_call: float | None) -> dict[str, Any]:
  result = {k: timing[k] for k in ("compile_s", "step_s", "min_step_s", "timed_calls")}
  result["frames_per_s"] = frames / timing["step_s"]
  if flops_per_call:
    result["tflop_per_call"] = flops_per_call / 1e12
    result["achieved_tflops"] = flops_per_call / timing["step_s"] / 1e12
  return result


# (model fields, batch) -> timing of that forward: the attention comparison reuses the run of
# the forward item with the same model and batch instead of compiling it again.
_FORWARD_RUNS: dict[tuple, dict[str, Any]] = {}


def _forward_timing(config: Any, params: Any, batch: int, repeats: int) -> dict[str, Any]:
  key = (tuple(sorted(config.model.items())), batch)
  if key not in _FORWARD_RUNS:
    _FORWARD_RUNS[key] = _time_forward(config, params, batch, repeats)
  return _FORWARD_RUNS[key]


def _time_forward(config: Any, params: Any, batch: int, repeats: int) -> dict[str, Any]:
  model = models.create_model(config.model)
  inp = frame_inputs(config, batch)
  t = jnp.full((batch,), 500, jnp.int32)

  @jax.jit
  def apply(p, x, cond_img, mask, ref_img, indiv_mels):
    return model.apply({"params": p}, x, t, cond_img=cond_img, mask=mask, ref_img=ref_img,
                       indiv_mels=indiv_mels)

  args = (params, inp["noise"], inp["cond_img"], inp["mask"], inp["ref_img"], inp["indiv_mels"])
  return compile_and_time(apply, args, repeats)


def forward(config: Any, params: Any, batch: int, repeats: int) -> dict[str, Any]:
  """One model evaluation (a denoising step) on ``batch`` frames."""
  timing = _forward_timing(config, params, batch, repeats)
  result = _rates(timing, batch, timing["flops"])
  result["output_finite"] = bool(jnp.isfinite(timing["output"]).all())
  return result


def ddim(config: Any, params: Any, batch: int, repeats: int,
         respacing: str = "ddim25") -> dict[str, Any]:
  """The package's sampler (``diffusion.sampling.make_sampler``, the loop that
  ``inference.Diff2LipSampler`` jits) over ``respacing``'s steps on ``batch`` frames."""
  model = models.create_model(config.model)
  diffusion = create_diffusion(dict(config.diffusion, timestep_respacing=respacing))
  run = sampling.make_sampler(model, diffusion, sampler="ddim")
  inp = frame_inputs(config, batch)
  args = (params, inp["noise"], inp["cond_img"], inp["mask"], inp["ref_img"], inp["indiv_mels"],
          None)
  timing = compile_and_time(run, args, repeats)
  result = _rates(timing, batch, None)   # XLA counts the fori_loop body once: no FLOPs here
  result.update(respacing=respacing, model_evaluations=len(diffusion.timestep_map),
                output_finite=bool(jnp.isfinite(timing["output"]).all()))
  return result


def train_batch(config: Any, windows: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A random training batch of ``windows`` windows of ``model.nframes`` frames."""
  size, frames = int(config.model.image_size), int(config.model.nframes)
  rng = np.random.default_rng(seed)
  image = rng.uniform(-1, 1, (windows, frames, size, size, 3)).astype(np.float32)
  return {"image": image, "ref_img": np.ascontiguousarray(image[::-1]),
          "indiv_mels": rng.standard_normal((windows, frames, 80, 16)).astype(np.float32),
          "mel": rng.standard_normal((windows, 80, 16)).astype(np.float32)}


def train_step(config: Any, params: Any, windows: int, repeats: int,
               peak_flops: float | None) -> dict[str, Any]:
  """One optimizer update (training/step.py) on ``windows`` windows; MFU against ``peak_flops``.

  MFU = XLA cost-analysis FLOPs of the compiled step / median step time / peak.
  """
  model = models.create_model(config.model)
  diffusion = create_diffusion(config.diffusion, timestep_respacing="")
  state = create_train_state(jax.random.PRNGKey(1), params, config)
  step = jax.jit(make_train_step(model, diffusion, config))   # no donation: reused state
  timing = compile_and_time(step, (state, train_batch(config, windows), {}), repeats)
  frames = windows * int(config.model.nframes)
  result = _rates(timing, frames, timing["flops"])
  _, metrics = timing["output"]
  result.update(windows=windows, frames_per_step=frames, dtype=str(config.model.dtype),
                loss=float(metrics["loss"]), loss_terms="mse + vb + l1 (sync, lpips, "
                "adversarial off: their frozen networks need external weights)",
                peak_flops=peak_flops,
                mfu=(timing["flops"] / timing["step_s"] / peak_flops
                     if peak_flops and timing["flops"] else None))
  return result


def attention_impls(configs: dict[str, Any], params: Any, batch: int,
                    repeats: int) -> dict[str, Any]:
  """Forward frames/s per ``model.attention_impl`` (same params), and their output gap."""
  result, outputs = {}, {}
  for impl, config in configs.items():
    timing = _forward_timing(config, params, batch, repeats)
    outputs[impl] = np.asarray(timing["output"], np.float32)
    result[impl] = _rates(timing, batch, None)
  default, fused = outputs["default"], outputs["dot_product_attention"]
  result["max_abs_diff"] = float(np.abs(default - fused).max())
  result["output_scale"] = float(np.abs(default).max())
  result["speedup"] = (result["dot_product_attention"]["frames_per_s"]
                       / result["default"]["frames_per_s"])
  return result
