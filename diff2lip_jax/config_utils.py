"""Loading ml_collections config files and (de)serialising configs next to checkpoints."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
from typing import Any

import ml_collections


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports ``path`` (a trusted config file of the user) and returns ``get_config([arg])``."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} does not exist (expected e.g. configs/released.py)")
  spec = importlib.util.spec_from_file_location(f"_diff2lip_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} has no get_config() function")
  return module.get_config(arg) if arg is not None else module.get_config()


def config_to_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def config_from_dict(data: dict[str, Any]) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(data)


def config_from_json(text: str) -> ml_collections.ConfigDict:
  return config_from_dict(json.loads(text))
