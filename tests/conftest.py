import os

# Tests run on CPU; simulate 8 devices so sharding tests have a mesh to work with.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
