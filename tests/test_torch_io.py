"""Reading torch checkpoints without torch and without executing pickled code."""
import collections
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from diff2lip_jax.porting import torch_io

try:
  import torch
except ImportError:  # the torch-free tests below still run
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch creates the fixtures")


def _expected(t: "torch.Tensor") -> np.ndarray:
  t = t.detach()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def _tensors():
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=gen)
  return collections.OrderedDict(
      transposed=base.t(),                       # non-contiguous strides
      window=base[1:, 2:5],                      # storage offset + strides
      every_other=torch.arange(10.0)[1::2],      # offset + stride 2
      half=torch.randn(3, 4, generator=gen).half(),
      bf16=torch.randn(5, generator=gen).bfloat16(),
      float64=torch.randn(2, 2, generator=gen).double(),
      int64=torch.arange(5),
      int32=torch.arange(3, dtype=torch.int32),
      uint8=torch.tensor([0, 7, 255], dtype=torch.uint8),
      boolean=torch.tensor([True, False]),
      scalar=torch.tensor(7),
      empty=torch.zeros(0, 3),
      param=torch.nn.Parameter(torch.ones(2, 2)),
      shared=base,                               # same storage as the views above
  )


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_all_dtypes_and_layouts(tmp_path, zip_format):
  tensors = _tensors()
  path = tmp_path / "ckpt.pt"
  torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
  loaded = torch_io.load_torch_state_dict(path)
  assert list(loaded) == list(tensors)
  for name, tensor in tensors.items():
    want = _expected(tensor)
    assert loaded[name].dtype == want.dtype, name
    assert loaded[name].shape == want.shape, name
    np.testing.assert_array_equal(loaded[name], want, err_msg=name)
    assert loaded[name].flags.writeable


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_unwraps_nesting_and_strips_module_prefix(tmp_path, zip_format):
  weights = {"module.conv.weight": torch.randn(2, 3), "module.conv.bias": torch.randn(2)}
  ema = {"conv.weight": torch.zeros(2, 3), "conv.bias": torch.zeros(2)}
  path = tmp_path / "wrapped.pth"
  torch.save({"state_dict": weights, "ema": ema, "optimizer": {"param_groups": [{"lr": 1e-3}]},
              "global_step": 10, "tag": b"bytes"}, path,
             _use_new_zipfile_serialization=zip_format)
  auto = torch_io.load_torch_state_dict(path)
  assert sorted(auto) == ["conv.bias", "conv.weight"]
  np.testing.assert_array_equal(auto["conv.weight"], weights["module.conv.weight"].numpy())
  chosen = torch_io.load_torch_state_dict(path, key="ema")
  np.testing.assert_array_equal(chosen["conv.weight"], np.zeros((2, 3), np.float32))
  kept = torch_io.load_torch_state_dict(path, key="state_dict", strip_prefix=None)
  assert sorted(kept) == ["module.conv.bias", "module.conv.weight"]
  with pytest.raises(KeyError, match="no entry 'nope'"):
    torch_io.load_torch_state_dict(path, key="nope")
  with pytest.raises(ValueError, match="not a state dict of tensors"):
    torch_io.load_torch_state_dict(path, key=None)
  whole = torch_io.load_torch_checkpoint(path)
  assert whole["global_step"] == 10 and whole["tag"] == b"bytes"


@needs_torch
def test_nested_key_path(tmp_path):
  path = tmp_path / "deep.pt"
  torch.save({"model": {"net": {"w": torch.ones(3)}, "other": 1}}, path)
  loaded = torch_io.load_torch_state_dict(path, key=("model", "net"))
  np.testing.assert_array_equal(loaded["w"], np.ones(3, np.float32))


class _Boom:
  def __reduce__(self):
    return (os.system, ("touch " + _Boom.marker,))


def _write_zip_checkpoint(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("container", ["zip", "legacy", "raw"])
def test_malicious_pickle_is_refused_without_executing(tmp_path, container):
  marker = tmp_path / "executed"
  _Boom.marker = str(marker)
  payload = pickle.dumps({"state_dict": {"w": _Boom()}}, protocol=2)
  path = tmp_path / "evil.pt"
  if container == "zip":
    _write_zip_checkpoint(path, payload)
  elif container == "legacy":
    with open(path, "wb") as f:
      for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, f, protocol=2)
      f.write(payload)
  else:
    path.write_bytes(payload)
  with pytest.raises(torch_io.UnsafeCheckpointError) as err:
    torch_io.load_torch_state_dict(path)
  message = str(err.value)
  assert str(path) in message and "system" in message
  assert not marker.exists()


@needs_torch
def test_pickled_module_object_is_refused(tmp_path):
  path = tmp_path / "module.pt"
  torch.save(torch.nn.Linear(2, 2), path)
  with pytest.raises(torch_io.UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
    torch_io.load_torch_state_dict(path)


def _handmade_tensor_pickle(numel: int, size: int, stride: int) -> bytes:
  """data.pkl for {"w": tensor(size,) with the given stride over FloatStorage '0' of numel}."""
  def text(s: str) -> bytes:
    return b"X" + len(s).to_bytes(4, "little") + s.encode()
  return (b"\x80\x02}" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(("
          + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu")
          + b"K" + bytes([numel]) + b"tQK\x00K" + bytes([size]) + b"\x85K" + bytes([stride])
          + b"\x85\x89ccollections\nOrderedDict\n)RtRs.")


def _write_handmade(path, numel, size, stride, stored):
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", _handmade_tensor_pickle(numel, size, stride))
    zf.writestr("archive/data/0", np.arange(stored, dtype="<f4").tobytes())


def test_handmade_zip_without_torch(tmp_path):
  path = tmp_path / "ok.pt"
  _write_handmade(path, numel=6, size=3, stride=2, stored=6)
  np.testing.assert_array_equal(torch_io.load_torch_state_dict(path)["w"], [0.0, 2.0, 4.0])


@pytest.mark.parametrize("numel,size,stride,stored", [(4, 8, 1, 4), (4, 3, 2, 4), (4, 4, 1, 2)])
def test_out_of_bounds_tensor_is_rejected(tmp_path, numel, size, stride, stored):
  path = tmp_path / "oob.pt"
  _write_handmade(path, numel, size, stride, stored)
  with pytest.raises(ValueError, match="corrupt"):
    torch_io.load_torch_state_dict(path)


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / "text.pt"
  path.write_text("hello")
  with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
    torch_io.load_torch_state_dict(path)
  with pytest.raises(FileNotFoundError):
    torch_io.load_torch_state_dict(tmp_path / "absent.pt")


def test_check_state_dict_lists_every_problem():
  expected = {"a": (2, 3), "b": (4,), "c": (1,), "bn.num_batches_tracked": ()}
  given = {"a": np.zeros((3, 2)), "b": np.zeros(4), "extra": np.zeros(1)}
  with pytest.raises(torch_io.StateDictMismatchError) as err:
    torch_io.check_state_dict(given, expected, "Toy", optional=["bn.num_batches_tracked"])
  text = str(err.value)
  assert "missing (1): c" in text and "unexpected (1): extra" in text
  assert "a: file (3, 2) vs model (2, 3)" in text
  torch_io.check_state_dict({"a": np.zeros((2, 3)), "b": np.zeros(4), "c": np.zeros(1)},
                            expected, "Toy", optional=["bn.num_batches_tracked"])
