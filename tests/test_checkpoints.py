"""Checkpoints load whatever topology wrote them: 8 simulated devices with fsdp-sharded params
-> a 1-device process (inference params, the whole training state, a SyncNet expert); async
saves capture the state of the moment they are called."""
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from diff2lip_jax import checkpoints
from diff2lip_jax.syncnet.expert import torch_default_init
from diff2lip_jax.training import sharding
from diff2lip_jax.training.state import inference_params
from tests.training_utils import model_and_state, tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]

# Runs in a process with ONE CPU device: loads everything and writes it as flat .npz files.
LOADER = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from diff2lip_jax import checkpoints
    from diff2lip_jax.training import sharding
    from tests.training_utils import model_and_state
    workdir, out = sys.argv[1], sys.argv[2]
    assert jax.device_count() == 1
    flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v)
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    params, config = checkpoints.load_inference_checkpoint(workdir)
    np.savez(out + "/params.npz", **flat(params))
    _, _, fresh = model_and_state(config, seed=5)  # other values, same structure
    config.mesh.fsdp = 1  # what a user restarting on one device sets
    mesh = sharding.create_mesh(config)
    fresh = jax.device_put(fresh, sharding.state_shardings(fresh, mesh))
    manager = checkpoints.training_manager(workdir, config)
    step, state = checkpoints.restore_training_state(manager, fresh, None)
    manager.close()
    np.savez(out + "/state.npz", step=step, **flat(state))
    expert = checkpoints.load_syncnet_expert(workdir + "/syncnet/checkpoints")
    np.savez(out + "/expert.npz", **flat(expert))
""")


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.slow  # ~1 min: a model init here and in the 1-device process
def test_fsdp_checkpoint_of_8_devices_loads_in_a_1_device_process(tmp_path):
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  config = tiny_config()
  config.mesh.fsdp = 4
  _, _, state = model_and_state(config)
  mesh = sharding.create_mesh(config)
  shardings = sharding.state_shardings(state, mesh, min_size=1024)
  state = jax.device_put(state, shardings)
  specs = [s.spec for s in jax.tree_util.tree_leaves(shardings.params)]
  assert any("fsdp" in tuple(spec) for spec in specs)  # really sharded over 4 devices
  with checkpoints.training_manager(tmp_path, config) as manager:
    checkpoints.save_training_state(manager, 3, state, inference_params(state, config), None,
                                    config, wait=True)
  replicated = sharding.replicated(jax.sharding.Mesh(np.asarray(jax.devices()), ("data",)))
  variables = jax.device_put(torch_default_init(0), replicated)
  with checkpoints.open_manager(tmp_path / "syncnet" / "checkpoints", create=True) as manager:
    checkpoints.save_syncnet_state(manager, 1, variables, {"step": np.int32(1)}, None, config,
                                   wait=True)

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path), str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  for name, tree in (("params", inference_params(state, config)), ("state", state),
                     ("expert", variables)):
    loaded = dict(np.load(tmp_path / f"{name}.npz"))
    if name == "state":
      assert int(loaded.pop("step")) == 3
    want = _flat(jax.device_get(tree))
    assert sorted(loaded) == sorted(want), name
    for key, value in want.items():
      np.testing.assert_array_equal(loaded[key], value, err_msg=f"{name}{key}")


def test_async_save_keeps_the_values_of_the_moment_of_the_call(tmp_path):
  """The trainer donates the state to the next step right after an async save returns."""
  step = jax.jit(lambda x: x * 2.0 + 1.0, donate_argnums=0)
  tree = {"w": jax.numpy.arange(4096.0).reshape(64, 64)}
  want = np.asarray(tree["w"])
  with checkpoints.open_manager(tmp_path, create=True, async_save=True) as manager:
    checkpoints.save(manager, 1, {"params": tree}, wait=False)
    for _ in range(5):
      tree = {"w": step(tree["w"])}
    jax.block_until_ready(tree)
  with checkpoints.open_manager(tmp_path) as manager:
    target = checkpoints.local_target(checkpoints.saved_shapes(manager, 1, "params"))
    params = checkpoints.restore(manager, 1, {"params": target})["params"]
  np.testing.assert_array_equal(np.asarray(params["w"]), want)


def test_missing_or_foreign_checkpoints_are_named(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
    checkpoints.load_inference_checkpoint(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(checkpoints.CheckpointError, match="no complete checkpoint step"):
    checkpoints.load_inference_checkpoint(tmp_path / "empty")
  with checkpoints.open_manager(tmp_path / "other", create=True) as manager:
    checkpoints.save(manager, 0, {"variables": {"x": np.zeros(2)}})
  with pytest.raises(checkpoints.CheckpointError, match=r"lacks the items \['params', 'config'\]"):
    checkpoints.load_inference_checkpoint(tmp_path / "other")
