"""benchmarks/accelerator_suite: the CPU smoke run with only the core packages importable,
the budget guard, the peak-FLOP/s table and the suite's config."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import accelerator_suite as suite
from benchmarks.accelerator import device as device_lib
from benchmarks.accelerator.configs import suite_config
from configs import released

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What an accelerator machine with only jax/flax/optax/orbax/numpy lacks (torch/scipy/cv2 may
# be there, but the suite must not need them).
BLOCKED = ("ml_collections", "librosa", "grain", "tensorflow", "av", "cv2", "torch", "scipy",
           "soundfile", "PIL")
SITECUSTOMIZE = f"""
import sys
BLOCKED = {BLOCKED!r}
class BlockNonCorePackages:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ModuleNotFoundError(f"{{name}} is blocked: the accelerator machine has no such package")
    return None
sys.meta_path.insert(0, BlockNonCorePackages())
"""


def _blocked_env(tmp_path: pathlib.Path) -> dict[str, str]:
  (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), PYTHON=sys.executable,
             JAX_PLATFORMS="cpu")
  return env


def _numbers(tree, path=""):
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from _numbers(value, f"{path}/{key}")
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield path, tree


@pytest.mark.timeout(1500)
def test_cpu_smoke_runs_with_only_core_packages(tmp_path):
  env = _blocked_env(tmp_path)
  probe = subprocess.run([sys.executable, "-c", "import ml_collections"], env=env,
                         capture_output=True, text=True, timeout=60)
  assert probe.returncode != 0 and "blocked" in probe.stderr   # the blocker is active
  out = tmp_path / "suite.json"
  # Generous timeout: the compiles dominate; a 2-core machine shared with other jobs took
  # over 15 minutes.
  run = subprocess.run(["bash", str(ROOT / "benchmarks" / "accelerator_suite.sh"), "--cpu_smoke",
                        "--budget_s", "3000", "--output", str(out)],
                       env=env, capture_output=True, text=True, timeout=1400)
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.loads(run.stdout)
  assert json.loads(out.read_text()) == report
  assert report["errors"] == [] and report["skipped"] == [], (report["errors"], report["skipped"])
  assert not set(report["imported_packages"]) & set(BLOCKED)
  assert {"jax", "flax", "optax", "numpy"} <= set(report["imported_packages"])
  assert report["device"]["device_kind"] and report["device"]["device_count"] >= 1
  assert report["device"]["jax_version"]
  for dtype in ("float32", "bfloat16"):
    assert report["forward"][dtype]["2"]["frames_per_s"] > 0
    assert report["forward"][dtype]["2"]["output_finite"]
  # --cpu_smoke runs DDIM, training and attention in float32 (fast XLA:CPU compiles).
  assert report["ddim"]["float32"]["2"]["model_evaluations"] == 5
  train = report["train_step"]
  assert train["step_s"] > 0 and train["tflop_per_call"] > 0 and train["frames_per_step"] == 5
  assert train["mfu"] is None and "not in the peak table" in report["peak_note"]   # a CPU
  attention = report["attention"]
  for impl in ("default", "dot_product_attention"):
    assert attention[impl]["frames_per_s"] > 0
  # float32: the kernels agree to rounding (tests/test_attention_impl.py checks 1e-5).
  assert attention["max_abs_diff"] <= 1e-4 * max(1.0, attention["output_scale"]), attention
  assert "note" in report["memory"]                         # CPUs report no memory stats
  for path, value in _numbers({k: report[k] for k in ("forward", "ddim", "train_step",
                                                       "attention")}):
    if not path.endswith(("max_abs_diff", "peak_bytes_in_use_so_far")):
      assert value > 0, path


def test_budget_guard_skips_what_does_not_fit_and_reports_errors():
  sizes = dict(est_s=dict(fast=1.0, slow=1e6))

  def broken():
    raise RuntimeError("no cuDNN")

  items = [(("a", "x"), "fast", lambda: {"frames_per_s": 3.0}), (("b",), "slow", lambda: {}),
           (("c",), "fast", broken)]
  report = {"skipped": [], "errors": []}
  suite.run_items(items, sizes, suite.Budget(100.0), report)
  assert report["a"]["x"]["frames_per_s"] == 3.0 and "b" not in report
  assert len(report["skipped"]) == 1 and report["skipped"][0].startswith("b:")
  assert report["errors"] == ["c: RuntimeError: no cuDNN"]


def test_full_suite_refuses_a_cpu_only_machine():
  with pytest.raises(SystemExit, match="--cpu_smoke"):
    suite.main(["--budget_s", "1"])


@pytest.mark.parametrize("kind,peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                                       ("NVIDIA H100 PCIe", 756e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                       ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
                                       ("TPU v5p", 459e12), ("TPU v5", 459e12),
                                       ("TPU v6 lite", 918e12), ("cpu", None)])
def test_peak_table(kind, peak):
  assert device_lib.peak_bf16_flops(kind)[0] == peak


def test_suite_config_is_the_released_config():
  reference = released.get_config()
  config = suite_config(tiny=False, dtype="bfloat16", attention_impl="dot_product_attention")
  assert dict(config.model) == dict(reference.model.to_dict(), dtype="bfloat16",
                                    attention_impl="dot_product_attention")
  assert dict(config.diffusion) == reference.diffusion.to_dict()
  assert config.optimizer == reference.optimizer.to_dict() and config.train.seed == 0
  assert (config.loss.mse, config.loss.sync, config.loss.adversarial) == (1.0, 0.0, 0.0)
