"""Device facts for the accelerator suite: name, peak bf16 FLOP/s, memory, loaded packages."""
from __future__ import annotations

import sys
from typing import Any

import jax

# Nominal dense bfloat16 peak FLOP/s of ONE chip, matched as a case-insensitive substring of
# `device_kind`, first match wins (so "H100 PCIe" precedes "H100", "v5 lite" precedes "v5").
# H100/H200 are the SXM parts; TPU v5e reports "TPU v5 lite", v5p "TPU v5", v6e "TPU v6 lite".
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
)


def peak_bf16_flops(device_kind: str) -> tuple[float | None, str]:
  """(peak dense bf16 FLOP/s of one chip or None, where the number comes from)."""
  for name, flops in PEAK_BF16_FLOPS:
    if name.lower() in device_kind.lower():
      return flops, f"nominal dense bf16 peak of {name} (benchmarks/accelerator/device.py)"
  return None, (f"device kind {device_kind!r} is not in the peak table; MFU is null "
                "(add its dense bf16 peak to PEAK_BF16_FLOPS)")


def device_info() -> dict[str, Any]:
  """Backend, the first device's kind and name, device count and library versions."""
  import flax  # pylint: disable=import-outside-toplevel  (only for its version)
  import numpy as np  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "platform": device.platform,
          "device_kind": device.device_kind, "device_name": str(device),
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "measured_on": "the first device only (one chip)", "jax_version": jax.__version__,
          "jaxlib_version": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
          "flax_version": flax.__version__, "numpy_version": np.__version__,
          "python": sys.version.split()[0]}


def _jaxlib_version() -> str | None:
  try:
    import jaxlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return getattr(jaxlib, "__version__", None)


def memory_stats() -> dict[str, Any] | None:
  """The first device's ``peak_bytes_in_use`` (process peak so far) and limit; None on CPU."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return None
  return {"peak_bytes_in_use": stats.get("peak_bytes_in_use"),
          "bytes_in_use": stats.get("bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}


def third_party_modules(project: tuple[str, ...] = ("diff2lip_jax", "configs", "benchmarks",
                                                    "data_pipelines")) -> list[str]:
  """Top-level packages this process has imported that are neither stdlib nor the project's."""
  names = {name.split(".")[0] for name in list(sys.modules)}
  stdlib = set(sys.stdlib_module_names) | {"__main__", "__mp_main__"}
  return sorted(n for n in names if n not in stdlib and n not in project and not n.startswith("_"))
