"""The released Diff2Lip checkpoint's settings (paper setting: 128x128 crops, 5-frame windows).

Field names and value types follow the reference flags (`attention_resolutions` is a string,
`num_head_channels` may be -1), so a config can be checked against a checkpoint's flags.

The model, diffusion and training sections are also available as plain dicts
(``model_fields()``, ``diffusion_fields()``, ``training_fields()``), and ml_collections is
imported only where a ConfigDict is built: benchmarks/accelerator_suite.py reads this file on
accelerator machines that have only jax, flax, optax and orbax.
"""
from __future__ import annotations

from typing import Any


def _config_dict(fields: dict[str, Any]):
  import ml_collections  # pylint: disable=import-outside-toplevel  (see the module docstring)
  return ml_collections.ConfigDict(fields)


def model_fields() -> dict[str, Any]:
  return dict(
      image_size=128,
      num_channels=128,
      num_res_blocks=2,
      num_heads=4,
      num_heads_upsample=-1,
      num_head_channels=64,
      attention_resolutions="32,16,8",
      channel_mult="",            # "" = the reference default for image_size
      dropout=0.0,
      class_cond=False,
      use_checkpoint=False,
      use_scale_shift_norm=False,
      resblock_updown=True,
      use_fp16=False,
      learn_sigma=True,
      use_ref=True,
      nframes=5,
      nrefer=1,
      use_audio=True,
      audio_as_style=True,
      audio_as_style_encoder_mlp=False,
      audio_encoder_channels=32,        # reference audio_encoder_kwargs defaults
      audio_encoder_num_res_blocks=2,
      face_hide_percentage=0.5,   # lower half of the crop is regenerated
      dtype="float32",            # compute dtype: "float32" or "bfloat16"
      remat=False,                # rematerialise blocks to save memory in training
      # "default" or "dot_product_attention" (jax.nn.dot_product_attention: cuDNN's fused
      # kernel on GPU in bfloat16); same parameters, same output to float32 rounding
      attention_impl="default",
  )


def model_config():
  return _config_dict(model_fields())


def diffusion_fields() -> dict[str, Any]:
  return dict(
      diffusion_steps=1000,
      noise_schedule="linear",
      learn_sigma=True,
      timestep_respacing="ddim25",
      predict_xstart=False,
      rescale_timesteps=False,
      use_kl=False,
      rescale_learned_sigmas=False,
  )


def diffusion_config():
  return _config_dict(diffusion_fields())


def sampling_config():
  return _config_dict(dict(
      sampler="ddim",               # ddim | ddpm | dpmpp_2m | unipc (diffusion.SAMPLERS)
      use_ddim=True,                # legacy switch: False = ddpm (then leave sampler "" or ddpm)
      clip_denoised=True,
      eta=0.0,                      # ddim only (the ODE solvers need 0)
      timestep_respacing="ddim25",  # respacing used at sampling time (model evaluations)
      seed=7,                       # one noise image shared by all frames, as the reference
      batch_size=16,                # frames per device per jitted sampler call
  ))


def pipeline_config():
  """The Grain input pipeline (``data_pipelines.input_pipeline``), field by field."""
  import ml_collections  # pylint: disable=import-outside-toplevel  (placeholders need it)
  return ml_collections.ConfigDict(dict(
      num_frames=5,               # frames per target (and reference) window F; the trainer
                                  # sets it from model.nframes
      image_size=128,             # crop size S the shards were written with
      # minimum |r - j| between reference and target window starts; None = num_frames
      min_ref_distance=ml_collections.config_dict.placeholder(int),
      num_epochs=ml_collections.config_dict.placeholder(int),  # None: repeat forever
      shuffle=True,               # shuffle clip order (per epoch, seeded by train.seed)
      worker_count=0,             # Grain worker processes (0: everything in this process)
      worker_buffer_size=2,       # batches each worker prepares ahead
      read_threads=0,             # threads fetching and decoding examples per process
                                  # (0: none; measured slower than 0 on 2 cores)
      prefetch_buffer_size=64,    # examples those threads keep ready
      verify_checksums=True,      # check the TFRecord CRC of every record read
      max_skips_per_example=16,   # corrupt/unusable records tolerated in a row
      drop_remainder=True,        # drop a final partial batch (only with num_epochs)
      # "float32" (images in [-1, 1]) or "uint8" (raw pixels, converted on the device:
      # less host time and transfer)
      image_dtype="float32",
      host_prefetch=2,            # batches a background thread keeps ready (0: none)
  ))


def training_fields() -> dict[str, Any]:
  """Training settings of the paper setting (the original training code is not public).

  Loss weights: the ε-MSE and VB terms form guided-diffusion's hybrid objective (weights 1,
  as there). The pixel, sync, perceptual and adversarial weights are our choices, set so
  each term is a fraction of the MSE term at the start of training: the expert sync loss
  and LPIPS start near 0.7 and 0.3, the hinge GAN loss near 1, the masked L1 near 0.5,
  while the ε-MSE starts near 1 and falls to ~0.05. Plain dicts; ``data.pipeline`` is
  added by :func:`training_config`.
  """
  config: dict[str, Any] = {}
  config["train"] = dict(
      num_steps=500_000,          # optimizer updates of the whole run
      batch_size=64,              # global batch in 5-frame windows (split over all devices)
      seed=0,                     # parameter init, diffusion noise and data order
      ema_rates="0.9999",         # comma-separated EMA decay rates; the first is sampled
      log_every=100,              # steps between progress lines / TensorBoard scalars
      sample_every=5_000,         # steps between sample grids (PNG + TensorBoard)
      checkpoint_every=2_000,     # steps between checkpoints (also on the last step/SIGTERM)
      keep_checkpoints=3,         # newest checkpoints kept in <workdir>/checkpoints
      # Write checkpoints in a background thread: a save then blocks the loop only for the
      # device-to-host copy (synthetic config on the 2-core VM: 0.7 s instead of 4.2 s per
      # save, 16 % less wall time; benchmarks/bench_checkpoint.py). Resume stays exact.
      async_checkpointing=True,
      max_nonfinite_streak=20,    # stop after this many skipped (non-finite) updates in a row
      demo_video_frames=50,       # frames of the final demo video (synthetic data; 0: none)
      sample_respacing="ddim25",  # sampler of the grids and the demo video
      # "per_window": one diffusion timestep per 5-frame window (needed by the sync and
      # adversarial terms); "per_frame": one per frame, lower-variance gradients when
      # neither term is on.
      timesteps="per_window")
  config["optimizer"] = dict(
      lr=1e-4,                    # peak learning rate (AdamW)
      schedule="constant",        # after warmup: "constant" or "cosine" (to lr * end_factor)
      warmup_steps=1_000,         # linear warmup from 0
      end_factor=0.1,             # cosine schedule's final lr / lr
      b1=0.9, b2=0.999, eps=1e-8,  # Adam moments
      weight_decay=0.0,           # AdamW decoupled weight decay
      grad_clip_norm=1.0,         # global-norm clipping (0: none)
      grad_accum_steps=1)         # >1: average gradients of this many batches per update
  # Weight of each loss term (0: off); see the docstring.
  config["loss"] = dict(
      mse=1.0, vb=1.0, l1=0.1, sync=0.05, lpips=0.1, adversarial=0.01,
      # Extra weight of the mouth region in the MSE and L1 terms: a pixel there counts
      # 1 + mouth_weight times (0: off). The region is rows top-bottom, columns left-right
      # as fractions of the aligned crop (where the mouth lies in VoxCeleb2-style crops).
      mouth_weight=0.0, mouth_region="0.62,0.9,0.32,0.68")
  # The sequential discriminator of the adversarial term and its Adam optimizer.
  config["discriminator"] = dict(
      lr=1e-4, b1=0.5, b2=0.999,
      loss="hinge",               # "hinge", "bce" or "lsgan"
      width=64,                   # channels of the first layer
      depth=4)                    # stride-2 downsampling blocks
  # SyncNet expert for the sync term: a Wav2Lip lipsync_expert.pth or a train_syncnet workdir
  # ("": sync term off, with a warning).
  config["syncnet"] = dict(checkpoint="")
  # LPIPS weights (converted from the lpips package's .pth files; "": LPIPS term off).
  # Diff2Lip's own lpips wrapper uses the AlexNet variant.
  config["lpips"] = dict(backbone_weights="", lin_weights="", net="alex")
  # Device mesh: data x fsdp devices (data=-1: all the others); fsdp>1 shards parameters.
  config["mesh"] = dict(data=-1, fsdp=1)
  config["data"] = dict(
      shards="",                  # training shards (dir, glob or file) from data_pipelines.prepare
      eval_shards="",             # shards the sample grids come from ("": the training shards)
      # Without shards: generate this many synthetic clips into <workdir>/data (0: error).
      synthetic_clips=0,
      synthetic_eval_clips=0,     # held-out synthetic clips for the sample grids
      synthetic_seed=0,
      min_frames=50,              # length range of the synthetic clips
      max_frames=75)
  return config


def training_config():
  config = _config_dict(training_fields())
  config.data.pipeline = pipeline_config()
  return config


def get_config():
  config = training_config()
  config.model = model_config()
  config.diffusion = diffusion_config()
  config.sampling = sampling_config()
  return config
