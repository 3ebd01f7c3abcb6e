"""The shared command-line helpers: typed --config.<field> overrides, errors that name the
field, the schema check, and one-line errors instead of tracebacks."""
import pathlib

import ml_collections
import pytest

from diff2lip_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC = str(REPO / "configs/synthetic.py")
SYNCNET = str(REPO / "configs/syncnet.py")


def _parse(argv, default="released.py"):
  parser = cli.training_parser("prog", "test")
  return cli.parse_training_args(parser, argv, default)


def test_overrides_are_typed_from_the_existing_field():
  args, config = _parse(["--config", SYNTHETIC, "--workdir", "/w", "--config.train.batch_size=6",
                         "--config.loss.sync", "0.25", "--config.model.dtype=bfloat16",
                         "--config.data.shards=/data/x y", "--config.model.use_ref=false",
                         "--config.train.async_checkpointing", "1",
                         "--config.data.pipeline.num_epochs=3", "--process_id", "2"])
  assert args.workdir == "/w" and args.process_id == 2 and not args.distributed
  assert config.train.batch_size == 6 and config.loss.sync == 0.25
  assert config.model.dtype == "bfloat16" and config.data.shards == "/data/x y"
  assert config.model.use_ref is False and config.train.async_checkpointing is True
  assert config.data.pipeline.num_epochs == 3  # a placeholder(int), default None
  assert isinstance(config.loss.lpips, float)
  _, config = _parse(["--config", SYNTHETIC, "--workdir", "/w", "--config.loss.sync=1"])
  assert config.loss.sync == 1.0 and isinstance(config.loss.sync, float)
  # Configs stay locked: later code cannot add a field by a typo.
  with pytest.raises(AttributeError):
    config.train.num_step = 3


def test_placeholders_accept_none_and_bools_reject_other_words():
  config = cli.load_config(SYNTHETIC, [("data.pipeline.min_ref_distance", "7"),
                                       ("data.pipeline.num_epochs", "none")])
  assert config.data.pipeline.min_ref_distance == 7 and config.data.pipeline.num_epochs is None
  cli.set_field(config, "data.pipeline.min_ref_distance", "None", "x", nullable=True)
  assert config.data.pipeline.min_ref_distance is None
  with pytest.raises(cli.UsageError, match="expected int"):  # not nullable: no None
    cli.set_field(config, "train.batch_size", "None", "x")
  with pytest.raises(cli.UsageError, match="expected bool"):
    cli.set_field(config, "model.use_ref", "maybe", "x")
  with pytest.raises(cli.UsageError, match=r"expected int \(default 2\)"):
    cli.set_field(config, "train.batch_size", "2.5", "x")
  with pytest.raises(cli.UsageError, match="is a section"):
    cli.set_field(config, "train", "3", "x")
  with pytest.raises(cli.UsageError, match="needs a value"):
    cli.split_overrides(["--config.train.seed"])


@pytest.mark.parametrize("name,suggestion", [
    ("train.num_step", "train.num_steps"),          # typo
    ("num_steps", "train.num_steps"),               # right leaf, wrong section
    ("train.lr", "optimizer.lr"),
    ("optimizer.learning_rate", "optimizer.lr"),    # the old SyncNet schema
    ("max_checkpoints_to_keep", "train.keep_checkpoints"),
    ("data.batch_size", "train.batch_size"),
    ("data.synthetic_min_frames", "data.min_frames"),
    ("data.synthetic", "data.synthetic_clips"),
])
def test_unknown_fields_name_the_closest_valid_one(name, suggestion):
  config = cli.load_config(SYNCNET)
  with pytest.raises(cli.UsageError) as error:
    cli.set_field(config, name, "1", "configs/syncnet.py")
  message = str(error.value)
  assert f"unknown config field {name!r} in configs/syncnet.py" in message
  assert f"did you mean {suggestion!r}" in message or f"or {suggestion!r}" in message, message


def test_config_files_must_follow_the_schema(tmp_path):
  old = tmp_path / "old_syncnet.py"
  old.write_text("import ml_collections\n\ndef get_config():\n"
                 "  return ml_collections.ConfigDict(dict(num_steps=5))\n")
  with pytest.raises(cli.UsageError) as error:
    _parse(["--config", str(old), "--workdir", "/w"], default="syncnet.py")
  assert "did you mean 'train.num_steps'" in str(error.value)
  assert "missing config field" in str(error.value)
  _parse(["--config", SYNCNET, "--workdir", "/w"], default="syncnet.py")  # its own schema


def test_config_listing_shows_every_field_with_its_default():
  config = cli.load_config(SYNCNET)
  text = cli.describe_config(config, "configs/syncnet.py")
  for name, value in cli.config_fields(config).items():
    assert f"  {name} = {value!r}" in text, name
  assert "  train.init_checkpoint = ''" in text
  assert "  data.pipeline.num_epochs = None  (int, may be None)" in text
  nested = ml_collections.ConfigDict({"a": {"b": 1}, "c": 2})
  assert cli.config_fields(nested) == {"a.b": 1, "c": 2}


def test_run_turns_user_errors_into_one_line(capsys):
  def failing(error):
    def main(argv):
      raise error
    return main

  assert cli.run(failing(ValueError("bad value")), []) == 1
  assert capsys.readouterr().err == "error: bad value\n"
  assert cli.run(failing(cli.UsageError("bad flag")), []) == 2
  assert cli.run(failing(FileNotFoundError(2, "No such file", "x.mp4")), []) == 1
  assert "x.mp4" in capsys.readouterr().err
  assert cli.run(failing(KeyboardInterrupt()), []) == 1
  assert capsys.readouterr().err.startswith("error: interrupted")
  assert cli.run(lambda argv: None, []) == 0
  with pytest.raises(TypeError):  # a bug keeps its traceback
    cli.run(failing(TypeError("bug")), [])
