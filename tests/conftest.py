"""Shared test set-up: 8 simulated CPU devices, golden models and a tiny checkpoint per session."""
import dataclasses
import os
from typing import Any, Callable

# Tests run on CPU; simulate 8 devices so sharding tests have a mesh to work with. Set before
# anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@dataclasses.dataclass(frozen=True)
class GoldenModel:
  """A reference TFG model: its manifest, flags as a ConfigDict, converted params, golden npz."""
  manifest: dict
  config: Any
  params: Any
  golden: dict


@pytest.fixture(scope="session")
def golden_model() -> Callable[[str], GoldenModel]:
  """``golden_model("tiny" | "released")``: the reference model with its deterministic weights
  (../shared/reference), converted once per session."""
  import ml_collections
  from diff2lip_jax.porting.tfg import params_from_torch
  from tests import reference
  built: dict[str, GoldenModel] = {}

  def get(name: str) -> GoldenModel:
    if name not in built:
      manifest = reference.load_manifest(f"manifest_{name}.json")
      config = ml_collections.ConfigDict(manifest["flags"])
      params = params_from_torch(reference.deterministic_state_dict(manifest), config)
      built[name] = GoldenModel(manifest, config, params,
                                reference.load_npz(f"tfg_{name}_golden.npz"))
    return built[name]

  return get


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
  """A converted-style checkpoint directory of the tiny synthetic config with random weights."""
  from diff2lip_jax import checkpoints
  from tests import inference_helpers
  config = inference_helpers.tiny_config()
  directory = tmp_path_factory.mktemp("tiny_ckpt") / "checkpoint"
  checkpoints.save_inference_checkpoint(directory, inference_helpers.random_params(config.model),
                                        config)
  return str(directory)
