"""benchmarks/bench_samplers.py helpers: the mouth-region error and the sampler passed to the lip-sync score."""
import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_samplers.py")
_SPEC = importlib.util.spec_from_file_location("bench_samplers", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_mouth_mae_counts_only_the_generated_lower_half():
  reference = np.zeros((3, 8, 8, 3), np.uint8)
  crops = reference.copy()
  crops[:, :4] = 255  # the kept upper half differs: not counted
  assert bench.mouth_mae(crops, reference) == 0.0
  crops[:, 4:, :, 0] = 30  # one channel of the lower half: mean 10
  assert bench.mouth_mae(crops, reference) == pytest.approx(10.0)


def test_respacing_and_table():
  assert bench.respacing_for(5, "ddim") == "ddim5" and bench.respacing_for(5, "even") == "5"
  assert bench.respacing_for(5, "logsnr") == "logsnr5"
  with pytest.raises(ValueError, match="unknown spacing"):
    bench.respacing_for(5, "quadratic")
  report = {"reference": {"respacing": "ddim250"}, "num_clips": 2, "num_frames": 10,
            "results": [{"sampler": "unipc", "evals": 5, "respacing": "ddim5",
                         "mouth_mae": 1.5}]}
  assert "| unipc | 5 | ddim5 | 1.5 | - | - | - |" in bench.table(report)


def test_lipsync_passes_the_sampler_to_the_score(monkeypatch):
  seen = {}
  monkeypatch.setattr(bench.lipsync_score, "score",
                      lambda params, config, **kwargs: seen.update(kwargs) or "report")
  assert bench.lipsync("p", "c", "ddim5", "dpmpp_2m", 2, 10, 4) == "report"
  assert seen == {"num_clips": 2, "num_frames": 10, "respacing": "ddim5", "batch_size": 4,
                  "sampler": "dpmpp_2m"}
