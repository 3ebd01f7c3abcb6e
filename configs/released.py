"""The released Diff2Lip checkpoint's settings (paper setting: 128x128 crops, 5-frame windows).

Field names and value types follow the reference flags (`attention_resolutions` is a string,
`num_head_channels` may be -1), so a config can be checked against a checkpoint's flags.
"""
import ml_collections


def model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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
  ))


def diffusion_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      diffusion_steps=1000,
      noise_schedule="linear",
      learn_sigma=True,
      timestep_respacing="ddim25",
      predict_xstart=False,
      rescale_timesteps=False,
      use_kl=False,
      rescale_learned_sigmas=False,
  ))


def sampling_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      use_ddim=True,
      clip_denoised=True,
      eta=0.0,
      timestep_respacing="ddim25",  # respacing used at sampling time
      seed=7,                       # one noise image shared by all frames, as the reference
      batch_size=16,                # frames per jitted sampler call
  ))


def training_config() -> ml_collections.ConfigDict:
  """Training settings of the paper setting (the original training code is not public).

  Loss weights: the ε-MSE and VB terms form guided-diffusion's hybrid objective (weights 1,
  as there). The pixel, sync, perceptual and adversarial weights are our choices, set so
  each term is a fraction of the MSE term at the start of training: the expert sync loss
  and LPIPS start near 0.7 and 0.3, the hinge GAN loss near 1, the masked L1 near 0.5,
  while the ε-MSE starts near 1 and falls to ~0.05.
  """
  from data_pipelines import input_pipeline  # deferred: keeps model-only use light
  config = ml_collections.ConfigDict()
  config.train = ml_collections.ConfigDict(dict(
      num_steps=500_000, batch_size=64, seed=0, ema_rates="0.9999", log_every=100,
      sample_every=5_000, checkpoint_every=2_000, keep_checkpoints=3,
      max_nonfinite_streak=20, demo_video_frames=50, sample_respacing="ddim25",
      # "per_window": one diffusion timestep per 5-frame window (needed by the sync and
      # adversarial terms); "per_frame": one per frame, lower-variance gradients when
      # neither term is on.
      timesteps="per_window"))
  config.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-4, schedule="constant", warmup_steps=1_000, end_factor=0.1, b1=0.9, b2=0.999,
      eps=1e-8, weight_decay=0.0, grad_clip_norm=1.0, grad_accum_steps=1))
  config.loss = ml_collections.ConfigDict(dict(
      mse=1.0, vb=1.0, l1=0.1, sync=0.05, lpips=0.1, adversarial=0.01))
  config.discriminator = ml_collections.ConfigDict(dict(
      lr=1e-4, b1=0.5, b2=0.999, loss="hinge", width=64, depth=4))
  config.syncnet = ml_collections.ConfigDict(dict(checkpoint=""))
  # Diff2Lip's own lpips wrapper uses the AlexNet variant.
  config.lpips = ml_collections.ConfigDict(dict(backbone_weights="", lin_weights="", net="alex"))
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  config.data = ml_collections.ConfigDict(dict(
      shards="", eval_shards="", synthetic_clips=0, synthetic_eval_clips=0, synthetic_seed=0,
      min_frames=50, max_frames=75))
  config.data.pipeline = input_pipeline.get_config()
  return config


def get_config() -> ml_collections.ConfigDict:
  config = training_config()
  config.model = model_config()
  config.diffusion = diffusion_config()
  config.sampling = sampling_config()
  return config
