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


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config()
  config.diffusion = diffusion_config()
  config.sampling = sampling_config()
  return config
