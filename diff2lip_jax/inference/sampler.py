"""The face-crop sampler: a Diff2Lip model with a jitted sampler, applied to batches of crops.

The one face-crop sampler of the package: the sampling CLI and video pipeline, the notebook,
the trainer's image grids and demo video and ``lipsync_score`` use :class:`Diff2LipSampler`
(``evaluate`` scores the videos it makes). It runs the
reverse diffusion of ``diffusion.sampling`` (one ``lax`` loop, jitted once per setting; DDIM,
DDPM or a multistep ODE solver, ``sampler=``) and follows the reference inference
(``generate.py``): one seeded noise image shared by all frames, the masked lower half of each
crop filled with that noise as the condition, and ``sample*mask + (1-mask)*frame`` as the
result.

Every call is data-parallel over all of the process's local devices (the reference's
``generate_dist.py`` runs one process per GPU instead): the frame batch is split over the
``("data", "fsdp")`` axes of an explicit ``Mesh`` and the parameters are replicated, or with
``fsdp > 1`` split over the ``fsdp`` axis like the trainer's (``training.sharding``). Each
frame is computed on its own, so the crops equal those of one device bit for bit. Only local
devices are used, so processes of a multi-host job sample independently (``sample
--filelist`` gives each process its share of the pairs).

Notebook use::

    from diff2lip_jax import inference
    sampler = inference.Diff2LipSampler.from_checkpoint("runs/synthetic", respacing="ddim10")
    mels = inference.mel_windows(mel, 0, len(frames))          # [N, 80, 16]
    crops = sampler.generate(frames, refs, mels)                 # uint8 [N, S, S, 3]
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh


from data_pipelines import audio as audio_lib
from diff2lip_jax import checkpoints, config_utils, models
from diff2lip_jax.diffusion import create_diffusion, sampling
from diff2lip_jax.training import sharding as sharding_lib


class InferenceInputError(ValueError):
  """An input (file, option or array) cannot be used; the message says what to do."""


def check_params(params: Any, model_config: Any) -> None:
  """Raises :class:`checkpoints.CheckpointError` naming the parameters that do not fit."""
  try:
    models.check_params(params, model_config)
  except models.ParamsMismatchError as error:
    raise checkpoints.CheckpointError(str(error)) from None


def to_model_range(frames: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 ``x / 127.5 - 1`` in [-1, 1], on the host.

  True division, as the trainer's grids and the lip-sync score always computed it. (The
  input pipeline's ``to_model_range`` multiplies by ``1/127.5``, which differs by one ulp
  for 111 of the 256 values: enough to change 14 of 2.3 M pixels of the lip-sync score's
  crops, so its score would no longer be reproduced exactly.)
  """
  return np.asarray(frames).astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Model-range images in [-1, 1] -> uint8 pixels ``round((x + 1) * 127.5)``, clipped."""
  scaled = (np.asarray(images, np.float32) + 1.0) * 127.5
  return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def shared_noise(seed: int, image_size: int) -> np.ndarray:
  """The one ``[S, S, 3]`` noise image every frame starts from (reference ``sampling_seed``)."""
  return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (image_size, image_size, 3)))


def inference_mesh(devices: list | None = None, fsdp: int = 1) -> Mesh:
  """``Mesh([len(devices) // fsdp, fsdp], ("data", "fsdp"))`` over ``devices`` (default: all
  of this process's local devices, so no computation spans processes)."""
  devices = list(devices) if devices is not None else jax.local_devices()
  if not devices:
    raise InferenceInputError("no devices to sample on")
  if fsdp < 1 or len(devices) % fsdp:
    raise InferenceInputError(f"fsdp={fsdp} must divide the number of devices "
                              f"({len(devices)})")
  return Mesh(np.asarray(devices).reshape(len(devices) // fsdp, fsdp), sharding_lib.DATA_AXES)


def local_params(params: Any) -> Any:
  """Params this process can read: host arrays, or replicated global arrays' local copies.

  A global array split over other processes' devices (a multi-host trainer's fsdp state)
  cannot be gathered by one process alone; the caller must gather it on every process first.
  """
  def local(leaf):
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
      return leaf
    if leaf.is_fully_replicated:
      return leaf.addressable_data(0)
    raise InferenceInputError(
        f"a parameter of shape {leaf.shape} is split over other processes' devices; gather "
        "the params on every process first (jax.experimental.multihost_utils."
        "process_allgather)")
  return jax.tree_util.tree_map(local, params)


@functools.lru_cache(maxsize=8)
def _compiled_sampler(model_json: str, diffusion_json: str, respacing: str, sampler: str,
                      clip_denoised: bool, eta: float, mesh: Mesh):
  """One ``sampling.make_sampler`` per model/sampler setting and mesh: rebuilt samplers reuse
  its jit. The result stays split over the mesh like the frames (it is read on the host)."""
  model = models.create_model(config_utils.config_from_json(model_json))
  diffusion = create_diffusion(config_utils.config_from_json(diffusion_json),
                               timestep_respacing=respacing)
  run = sampling.make_sampler(model, diffusion, sampler=sampler, clip_denoised=clip_denoised,
                              eta=eta)
  return jax.jit(run, out_shardings=sharding_lib.batch_sharding(mesh, 4))


class PendingCrops:
  """Result of :meth:`Diff2LipSampler.submit`; the device works until :meth:`result`."""

  def __init__(self, x0: jax.Array, frames: np.ndarray, mask: np.ndarray, count: int):
    self._x0, self._frames, self._mask, self.count = x0, frames, mask, count

  def samples(self) -> np.ndarray:
    """float32 ``[count, S, S, 3]``: the sampler's ``x0`` in [-1, 1], before compositing."""
    return np.asarray(self._x0)[:self.count]

  def result(self) -> np.ndarray:
    """uint8 ``[count, S, S, 3]``: the sample under the mask, the input frame elsewhere."""
    x0 = self.samples()
    # Equals to_uint8(x0*mask + img*(1-mask)) of the reference, without the float round trip
    # of the unmasked pixels (which give the input pixels back exactly).
    return np.where(self._mask[:self.count] > 0, to_uint8(x0), self._frames[:self.count])


def pick_sampler(sampler: str | None, use_ddim: bool | None, eta: float,
                 defaults: ml_collections.ConfigDict) -> str:
  """The sampler name: ``sampler``, else "ddim"/"ddpm" from an explicit ``use_ddim``, else the
  config's ``sampling.sampler`` (its legacy ``use_ddim=False`` means "ddpm" when that field is
  absent or empty, and contradicts any other sampler).

  Raises :class:`InferenceInputError` for an unknown name or a contradictory setting.
  """
  where = ""
  if sampler is None and use_ddim is None:
    sampler = defaults.get("sampler") or None
    use_ddim = bool(defaults.get("use_ddim", True))
    where = "config sampling: "
  try:
    return sampling.resolve_sampler(sampler, True if use_ddim is None else use_ddim, eta)
  except ValueError as error:
    raise InferenceInputError(f"{where}{error}") from None


class Diff2LipSampler:
  """A Diff2Lip model with a jitted sampler, built once and applied to batches of face crops.

  Settings default to the config's ``sampling`` section (respacing, sampler, eta, seed,
  batch size); keyword arguments override them. ``sampler`` is one of ``diffusion.SAMPLERS``
  ("ddim", "ddpm", "dpmpp_2m", "unipc"); ``use_ddim=False`` is the older way to ask for DDPM.
  The ``batch_size`` argument is frames per device: each call takes up to
  ``self.batch_size = batch_size x devices`` frames (``devices``: default all local ones;
  ``fsdp`` of them share each parameter), split evenly over the devices, and is padded to
  that size (repeating the last frame), so the sampler compiles once. All frames start from
  one noise image drawn from ``seed`` (the reference's ``sampling_seed``), so results do not
  depend on how frames are batched or on the device count (except DDPM/eta > 0, which also
  draw fresh noise per call).
  Built from ``(params, config)`` (a training run's config works; ``check=False`` skips the
  parameter shape check) or :meth:`from_checkpoint`.
  """

  def __init__(self, params: Any, config: ml_collections.ConfigDict, *,
               respacing: str | None = None, use_ddim: bool | None = None,
               eta: float | None = None, clip_denoised: bool | None = None,
               seed: int | None = None, batch_size: int | None = None,
               dtype: str | None = None, rng_seed: int = 0, check: bool = True,
               sampler: str | None = None, devices: list | None = None, fsdp: int = 1):
    config = ml_collections.ConfigDict(config.to_dict())
    if dtype is not None:
      config.model.dtype = dtype
    defaults = config.get("sampling", ml_collections.ConfigDict())
    pick = lambda value, key, default: value if value is not None else defaults.get(key, default)
    self.respacing = str(pick(respacing, "timestep_respacing",
                              config.diffusion.get("timestep_respacing", "")))
    self.eta = float(pick(eta, "eta", 0.0))
    self.sampler = pick_sampler(sampler, use_ddim, self.eta, defaults)
    self.clip_denoised = bool(pick(clip_denoised, "clip_denoised", True))
    self.seed = int(pick(seed, "seed", 7))
    self.mesh = inference_mesh(devices, fsdp)
    self.per_device_batch = int(pick(batch_size, "batch_size", 16))
    if self.per_device_batch < 1:
      raise InferenceInputError(f"batch_size must be >= 1, got {self.per_device_batch}")
    # Every device runs the program one device runs with `batch_size` frames, so a frame's
    # crop is the same bit for bit on any number of devices. (The kernels' summation order
    # depends on the batch they are given: one device's batch of 16 and eight devices'
    # batches of 2 differ by ~1e-6, enough to flip a few uint8 pixels.)
    self.batch_size = self.per_device_batch * self.mesh.size
    if check:
      check_params(params, config.model)
    self.config = config
    self.image_size = int(config.model.image_size)
    self.use_ref = bool(config.model.get("use_ref", True))
    self.use_audio = bool(config.model.get("use_audio", True))
    self.nrefer = max(1, int(config.model.get("nrefer", 1)))
    self.face_hide_percentage = float(config.model.get("face_hide_percentage", 0.5))
    self._run = _compiled_sampler(config_utils.config_to_json(config.model),
                                  config_utils.config_to_json(config.diffusion),
                                  self.respacing, self.sampler, self.clip_denoised, self.eta,
                                  self.mesh)
    params = local_params(params)
    self.params = jax.device_put(params, sharding_lib.state_shardings(params, self.mesh))
    size, batch = self.image_size, self.batch_size
    self._noise = np.broadcast_to(shared_noise(self.seed, size), (batch, size, size, 3))
    self._noise_device = self._on_mesh(self._noise)
    # [batch, S, S, 1]: 1 on the rows the model regenerates (the lower half by default).
    self.mask = np.asarray(sampling.lower_half_mask(batch, size, self.face_hide_percentage))
    self._mask_device = self._on_mesh(self.mask)
    self._rng = jax.random.PRNGKey(rng_seed)

  @property
  def use_ddim(self) -> bool:
    return self.sampler != "ddpm"

  @property
  def num_devices(self) -> int:
    return int(self.mesh.size)

  def _on_mesh(self, batch: np.ndarray) -> jax.Array:
    """A host ``[batch_size, ...]`` array split over the mesh along its first axis."""
    return jax.device_put(batch, sharding_lib.batch_sharding(self.mesh, np.ndim(batch)))

  @classmethod
  def from_checkpoint(cls, path: str, **overrides: Any) -> "Diff2LipSampler":
    """Loads a converted checkpoint directory or a training workdir (its EMA params)."""
    params, config = checkpoints.load_inference_checkpoint(path)
    return cls(params, config, **overrides)

  def describe(self) -> dict:
    return {"image_size": self.image_size, "respacing": self.respacing,
            "sampler": self.sampler, "eta": self.eta, "seed": self.seed,
            "batch_size": self.per_device_batch, "frames_per_call": self.batch_size,
            "devices": self.num_devices,
            "mesh": dict(self.mesh.shape), "dtype": str(self.config.model.get("dtype"))}

  def _check(self, frames: np.ndarray, refs: np.ndarray, mels: np.ndarray) -> np.ndarray:
    size = self.image_size
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or frames.dtype != np.uint8:
      raise InferenceInputError(f"frames must be uint8 [N, {size}, {size}, 3], got "
                                f"{frames.dtype} {frames.shape}")
    if not self.use_ref:  # the model takes no reference; keep shapes fixed for the jit
      refs = frames
    elif refs.shape[-1] == 3 and self.nrefer > 1:
      refs = np.concatenate([refs] * self.nrefer, axis=-1)
    channels = 3 * self.nrefer if self.use_ref else 3
    if refs.shape != frames.shape[:3] + (channels,) or refs.dtype != np.uint8:
      raise InferenceInputError(f"refs must be uint8 [{len(frames)}, {size}, {size}, "
                                f"{channels}], got {refs.dtype} {refs.shape}")
    if mels.shape != (len(frames), 80, audio_lib.MEL_WINDOW_STEPS):
      raise InferenceInputError(f"mels must be [{len(frames)}, 80, 16] (one window per frame,"
                                f" see audio.mel_windows), got {mels.shape}")
    return refs

  def submit(self, frames: np.ndarray, refs: np.ndarray, mels: np.ndarray) -> PendingCrops:
    """Starts :meth:`generate` on at most ``batch_size`` frames without waiting for it."""
    frames, refs, mels = np.asarray(frames), np.asarray(refs), np.asarray(mels, np.float32)
    refs = self._check(frames, refs, mels)
    count = len(frames)
    if not 0 < count <= self.batch_size:
      raise InferenceInputError(f"submit takes 1..{self.batch_size} frames, got {count}")
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], self.batch_size - count, 0)], 0)
    frames = pad(frames)
    # The condition is built on the host, as the reference does (and bit for bit as the
    # trainer's grids and the lip-sync score always did).
    cond = sampling.masked_condition(to_model_range(frames), self.mask, self._noise)
    ref_img = self._on_mesh(to_model_range(pad(refs))) if self.use_ref else None
    indiv_mels = self._on_mesh(pad(mels)) if self.use_audio else None
    self._rng, key = jax.random.split(self._rng)
    x0 = self._run(self.params, self._noise_device, self._on_mesh(cond), self._mask_device,
                   ref_img, indiv_mels, key)
    return PendingCrops(x0, frames, self.mask, count)

  def generate(self, frames: np.ndarray, refs: np.ndarray, mels: np.ndarray) -> np.ndarray:
    """Regenerates the lower half of each face crop so that it follows its mel window.

    Args:
      frames: uint8 ``[N, S, S, 3]`` input face crops (S = ``image_size``); any N.
      refs: uint8 ``[N, S, S, 3]`` identity reference crops (``[N, S, S, 3*nrefer]`` also
        accepted; a single reference is repeated for ``nrefer > 1``).
      mels: float ``[N, 80, 16]`` mel windows (``data_pipelines.audio.mel_windows``).
    Returns:
      uint8 ``[N, S, S, 3]``: generated lower half, input upper half.
    """
    frames, mels = np.asarray(frames), np.asarray(mels, np.float32)
    refs = self._check(frames, np.asarray(refs), mels)
    pending = [self.submit(frames[i:i + self.batch_size], refs[i:i + self.batch_size],
                           mels[i:i + self.batch_size])
               for i in range(0, len(frames), self.batch_size)]
    if not pending:
      return np.zeros((0,) + frames.shape[1:], np.uint8)
    return np.concatenate([p.result() for p in pending])

  def lip_sync_crops(self, frames: np.ndarray, mel: np.ndarray,
                     refs: np.ndarray | None = None) -> np.ndarray:
    """The face crops of a clip, driven by a whole mel spectrogram (the reference inference).

    Frame k gets the per-frame window of ``audio.frame_mel_windows``; frames whose window
    runs past the audio are dropped.
    Args:
      frames: uint8 ``[T, S, S, 3]`` input face crops.
      mel: ``[M, 80]`` mel spectrogram of the driving audio (80 rows per second).
      refs: uint8 identity references like ``frames`` (default: the frames themselves, the
        reference's ``cross`` mode).
    Returns:
      uint8 ``[N, S, S, 3]`` with ``N = min(T, frames with a full mel window)``.
    """
    windows = audio_lib.frame_mel_windows(mel, len(frames))
    count = min(len(frames), len(windows))
    if count == 0:
      raise InferenceInputError(
          f"no frame has a full 16-step mel window: the audio has {np.shape(mel)[0]} mel "
          "steps (need at least 16, i.e. 0.2 s of audio)")
    refs = frames if refs is None else refs
    return self.generate(frames[:count], refs[:count], windows[:count])
