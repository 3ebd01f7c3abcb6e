"""Forward and DDIM sampling throughput of the Diff2Lip model; prints one JSON object.

    python benchmarks/bench_model.py                       # released config, current backend
    python benchmarks/bench_model.py --torch_reference_dir /path/to/diff2lip/guided-diffusion

Frames/s for a batch of ``--batch`` frames: the jitted forward (compile excluded, median of
``--repeats``) and the full DDIM sampler (``--respacing``, one jitted loop), in float32
and bfloat16. With ``--torch_reference_dir`` (a checkout of the original code, which this
repo does not ship) it also times the original PyTorch forward in the same process, so
the speed ratio is measured on one machine in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import released  # noqa: E402
from diff2lip_jax.diffusion import sampling  # noqa: E402
from diff2lip_jax.models import create_model  # noqa: E402


def _inputs(batch: int, size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  img = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  mask = np.asarray(sampling.lower_half_mask(batch, size))
  noise = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
  return dict(x=noise, t=np.full((batch,), 500, np.int32),
              cond_img=img * (1 - mask) + mask * noise, mask=mask,
              ref_img=rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
              indiv_mels=rng.standard_normal((batch, 80, 16)).astype(np.float32))


def _time(fn, repeats: int) -> tuple[float, float]:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def bench_jax(config, dtype: str, batch: int, repeats: int, respacing: str, ddim: bool):
  model_cfg = config.model.copy_and_resolve_references()
  model_cfg.dtype = dtype
  model = create_model(model_cfg)
  size = model_cfg.image_size
  inp = {k: jnp.asarray(v) for k, v in _inputs(batch, size).items()}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), inp["x"], inp["t"],
                               cond_img=inp["cond_img"], mask=inp["mask"],
                               ref_img=inp["ref_img"], indiv_mels=inp["indiv_mels"])["params"]
  forward = jax.jit(lambda p, i: model.apply({"params": p}, i["x"], i["t"],
                                             cond_img=i["cond_img"], mask=i["mask"],
                                             ref_img=i["ref_img"], indiv_mels=i["indiv_mels"]))
  compile_s, fwd_s = _time(lambda: forward(params, inp), repeats)
  result = {"forward_s": fwd_s, "forward_frames_per_s": batch / fwd_s,
            "forward_first_call_s": compile_s}
  if ddim:
    diffusion_cfg = config.diffusion.copy_and_resolve_references()
    diffusion_cfg.timestep_respacing = respacing
    run = sampling.make_sampler(model, diffusion_cfg)
    args = (params, inp["x"], inp["cond_img"], inp["mask"], inp["ref_img"], inp["indiv_mels"],
            None)
    compile_s, ddim_s = _time(lambda: run(*args), max(1, repeats // 3))
    result.update(ddim_s=ddim_s, ddim_frames_per_s=batch / ddim_s, ddim_first_call_s=compile_s)
  return result


def bench_torch(reference_dir: str, config, batch: int, repeats: int):
  """Times the original PyTorch TFGModel forward (float32) with the same input shapes."""
  import torch
  sys.path.insert(0, reference_dir)
  from guided_diffusion.script_util import tfg_create_model  # the user's checkout
  m = config.model
  model = tfg_create_model(
      m.image_size, m.num_channels, m.num_res_blocks, learn_sigma=m.learn_sigma,
      class_cond=False, use_checkpoint=False, attention_resolutions=m.attention_resolutions,
      num_heads=m.num_heads, num_head_channels=m.num_head_channels,
      num_heads_upsample=m.num_heads_upsample, use_scale_shift_norm=m.use_scale_shift_norm,
      dropout=0.0, resblock_updown=m.resblock_updown, use_fp16=False, use_ref=m.use_ref,
      nframes=m.nframes, nrefer=m.nrefer, use_audio=m.use_audio, audio_encoder_kwargs={},
      audio_as_style=m.audio_as_style, audio_as_style_encoder_mlp=False).eval()
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  inp = _inputs(batch, m.image_size)
  args = (nchw(inp["x"]), torch.from_numpy(inp["t"]).long())
  kwargs = dict(cond_img=nchw(inp["cond_img"]), mask=nchw(inp["mask"]),
                ref_img=nchw(inp["ref_img"]), indiv_mels=torch.from_numpy(inp["indiv_mels"]))
  with torch.no_grad():
    model(*args, **kwargs)
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      model(*args, **kwargs)
      times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return {"forward_s": seconds, "forward_frames_per_s": batch / seconds,
          "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=5, help="frames per call (default 5)")
  parser.add_argument("--repeats", type=int, default=3, help="timed forward calls (median)")
  parser.add_argument("--respacing", default="ddim25", help="sampler respacing (default ddim25)")
  parser.add_argument("--dtypes", default="float32,bfloat16", help="compute dtypes to time")
  parser.add_argument("--no_ddim", action="store_true", help="skip the full sampler timing")
  parser.add_argument("--torch_reference_dir", default=None,
                      help="path to the original guided-diffusion package dir of Diff2Lip; "
                           "times its forward in the same run")
  args = parser.parse_args(argv)
  config = released.get_config()
  report = {"backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()],
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"), "config": "released", "batch": args.batch,
            "respacing": args.respacing, "jax_version": jax.__version__}
  for dtype in args.dtypes.split(","):
    report[dtype] = bench_jax(config, dtype, args.batch, args.repeats, args.respacing,
                              not args.no_ddim)
    print(json.dumps({dtype: report[dtype]}), file=sys.stderr, flush=True)
  if args.torch_reference_dir:
    report["torch_reference"] = bench_torch(args.torch_reference_dir, config, args.batch,
                                            args.repeats)
    report["forward_speedup_vs_torch"] = (report["torch_reference"]["forward_s"]
                                          / report["float32"]["forward_s"])
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
