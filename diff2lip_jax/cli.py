"""Command-line handling shared by the entry points (argparse, like every CLI of the project).

* ``--config FILE`` (an ml_collections config file, optionally ``FILE:ARG``) and typed
  overrides ``--config.a.b=value`` or ``--config.a.b value``: the value is parsed as the type
  of the existing field (bools accept true/false/1/0/yes/no, placeholders their declared type,
  ``None`` where the default is None); unknown fields and bad values are errors that name the
  field and its closest valid names.
* ``--help`` explains every flag and lists every config field with its default (of the file
  given with ``--config``, else of the trainer's default config).
* The multi-host flags (``--distributed`` or ``DIFF2LIP_DISTRIBUTED=1``, ``--coordinator_address``,
  ``--num_processes``, ``--process_id``), quiet logging (no Orbax/Grain/absl INFO lines), and
  :func:`run`, which turns user errors into one ``error: ...`` line and exit status 1 (2 for a
  bad command line) instead of a traceback (``DIFF2LIP_TRACEBACK=1`` shows it).
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import pathlib
import signal
import sys
import threading
from typing import Any, Callable

import ml_collections

from diff2lip_jax import config_utils

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
OVERRIDE_PREFIX = "--config."
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")
# Fields of the SyncNet trainer before both trainers shared one schema.
RENAMED_FIELDS = {
    "seed": "train.seed", "num_steps": "train.num_steps", "log_every": "train.log_every",
    "eval_every": "train.eval_every", "checkpoint_every": "train.checkpoint_every",
    "max_checkpoints_to_keep": "train.keep_checkpoints",
    "init_checkpoint": "train.init_checkpoint", "optimizer.learning_rate": "optimizer.lr",
    "data.batch_size": "train.batch_size", "data.eval_batch_size": "train.eval_batch_size",
    "data.num_eval_batches": "train.num_eval_batches",
    "data.synthetic_min_frames": "data.min_frames",
    "data.synthetic_max_frames": "data.max_frames",
    "data.synthetic": "data.synthetic_clips"}  # synthetic data now: data.shards left empty
DISTRIBUTED_GRACE_S = 30  # XLA's own connect timeout fires this much after ours
QUIET_LOGGERS = ("absl", "jax", "orbax", "grain", "etils", "tensorflow", "tensorboardX", "PIL")


class UsageError(ValueError):
  """A bad command line or config field (exit status 2)."""


# ----------------------------------------------------------------------------- config fields

def config_fields(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """``{"a.b": value}`` for every leaf field of ``config`` (sections in sorted order)."""
  out = {}
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      out.update(config_fields(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def closest_fields(name: str, fields: list[str]) -> list[str]:
  """Valid field names a user probably meant by ``name`` (renamed, same leaf, or similar)."""
  found = [RENAMED_FIELDS[name]] if RENAMED_FIELDS.get(name) in fields else []
  leaf = name.rsplit(".", 1)[-1]
  found += [f for f in fields if f.rsplit(".", 1)[-1] == leaf]
  if found:  # renamed, or the right name in another section: no guessing beyond that
    return list(dict.fromkeys(found))[:4]
  found += difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
  by_leaf = {f.rsplit(".", 1)[-1]: f for f in fields}
  found += [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=2, cutoff=0.7)]
  return list(dict.fromkeys(found))[:4]


def unknown_field_error(name: str, fields: list[str], source: str) -> UsageError:
  close = closest_fields(name, fields)
  hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
  return UsageError(f"unknown config field {name!r} in {source}{hint} (--help lists every "
                    "field)")


def parse_value(text: str, field_type: type, default: Any, name: str,
                nullable: bool = False) -> Any:
  """``text`` as a value of ``name``'s type (``field_type``; ``default`` is its current value;
  ``nullable``: "None" means None, as for fields whose default is None)."""
  if text.lower() == "none" and (nullable or default is None):
    return None
  try:
    if field_type is bool:
      if text.lower() in TRUE_WORDS + FALSE_WORDS:
        return text.lower() in TRUE_WORDS
      raise ValueError
    if field_type is int:
      return int(text)
    if field_type is float:
      return float(text)
    if field_type in (tuple, list):
      items = [s.strip() for s in text.strip("()[]").split(",") if s.strip()]
      item_type = type(default[0]) if default else str
      return field_type(parse_value(s, item_type, None, name) for s in items)
  except ValueError:
    raise UsageError(f"--config.{name}={text!r}: expected {field_type.__name__} (default "
                     f"{default!r})") from None
  if field_type is ml_collections.ConfigDict:
    raise UsageError(f"--config.{name} is a section; set its fields, e.g. --config.{name}.<field>")
  return text


def set_field(config: ml_collections.ConfigDict, name: str, text: str, source: str,
              nullable: bool = False) -> None:
  """Sets ``config.<name>`` from the command-line string ``text`` (typed, see module doc)."""
  parent, keys = config, name.split(".")
  for key in keys[:-1]:
    if key not in parent or not isinstance(parent[key], ml_collections.ConfigDict):
      raise unknown_field_error(name, list(config_fields(config)), source)
    parent = parent[key]
  leaf = keys[-1]
  if leaf not in parent:
    raise unknown_field_error(name, list(config_fields(config)), source)
  field_type = parent.get_type(leaf)
  value = parse_value(text, field_type, parent[leaf], name, nullable)
  try:
    parent[leaf] = value
  except TypeError as error:
    raise UsageError(f"--config.{name}={text!r}: {error}") from None


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates ``--config.a.b=v`` / ``--config.a.b v`` from the other arguments."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(OVERRIDE_PREFIX):
      name, sep, value = arg[len(OVERRIDE_PREFIX):].partition("=")
      if not sep:
        if i + 1 >= len(argv):
          raise UsageError(f"{arg} needs a value: {arg}=VALUE or {arg} VALUE")
        value, i = argv[i + 1], i + 1
      overrides.append((name, value))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]],
                    source: str) -> None:
  """Sets each ``(field, text)`` of :func:`split_overrides` (see :func:`set_field`)."""
  nullable = {name for name, value in config_fields(config).items() if value is None}
  for name, text in overrides:
    set_field(config, name, text, source, nullable=name in nullable)


def load_config(spec: str, overrides: list[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """Loads ``FILE`` or ``FILE:ARG`` (``get_config(ARG)``), locked, with the overrides applied."""
  path, arg = spec, None
  if not os.path.exists(spec) and ":" in spec:
    path, arg = spec.rsplit(":", 1)
  config = config_utils.load_config_file(path, arg)
  config.lock()  # fields can change but not be added: a typo cannot create a new one
  apply_overrides(config, overrides, spec)
  return config


def check_schema(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
                 source: str) -> None:
  """Raises :class:`UsageError` when ``config`` lacks fields of ``reference`` or has others."""
  have, want = config_fields(config), config_fields(reference)
  problems = [str(unknown_field_error(n, list(want), source)).split(" (--help")[0]
              for n in have if n not in want]
  problems += [f"missing config field {n!r} in {source}" for n in want if n not in have]
  if problems:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise UsageError("; ".join(problems[:3]) + more)


def describe_config(config: ml_collections.ConfigDict, source: str) -> str:
  """The ``--help`` listing: every field of ``config`` with its default and type."""
  lines = [f"config fields of {source} (override with --config.<field>=<value>; the comments "
           "in the file explain them):"]
  for name, value in config_fields(config).items():
    *sections, leaf = name.split(".")
    parent = config
    for key in sections:
      parent = parent[key]
    kind = f"  ({parent.get_type(leaf).__name__}, may be None)" if value is None else ""
    lines.append(f"  {name} = {value!r}{kind}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- trainer CLIs

def training_parser(prog: str, description: str) -> argparse.ArgumentParser:
  """``--config``, ``--workdir``, ``--verbose`` and the multi-host flags."""
  parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, metavar="FILE",
                      help="config file (configs/*.py, or FILE:ARG for get_config(ARG)); "
                           "override any field with --config.<field>=<value> or "
                           "--config.<field> <value> (fields listed below)")
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="run directory (local path or gs://...): checkpoints, TensorBoard "
                           "logs, samples; an existing workdir is resumed")
  parser.add_argument("--verbose", action="store_true",
                      help="also show the INFO lines of JAX, Orbax and Grain")
  add_multihost_flags(parser)
  return parser


def add_multihost_flags(parser: argparse.ArgumentParser) -> None:
  """``--distributed``, ``--coordinator_address``, ``--num_processes``, ``--process_id``
  (read by :func:`init_distributed`)."""
  group = parser.add_argument_group(
      "multi-host", "One process per host (TPU VM worker or GPU node), all with the same "
      "flags. On Cloud TPU VMs --distributed alone is enough.")
  group.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() (also set by the environment "
                          "variable DIFF2LIP_DISTRIBUTED=1)")
  group.add_argument("--coordinator_address", metavar="HOST:PORT",
                     help="host:port of process 0 (GPU clusters)")
  group.add_argument("--num_processes", type=int, metavar="N", help="number of processes")
  group.add_argument("--process_id", type=int, metavar="I", help="this process's index")
  group.add_argument("--distributed_timeout", type=int, default=300, metavar="S",
                     help="give up when not all processes joined the coordinator within S "
                          "seconds (default 300)")


def _help_epilog(rest: list[str], default_config: pathlib.Path, notes: str) -> str:
  spec = os.path.relpath(default_config)
  spec = str(default_config) if spec.startswith("..") else spec
  for i, arg in enumerate(rest):
    if arg == "--config" and i + 1 < len(rest):
      spec = rest[i + 1]
    elif arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
  try:
    listing = describe_config(load_config(spec), spec)
  except Exception as error:  # pylint: disable=broad-except  (help must always print)
    listing = f"(could not load {spec} to list its fields: {error})"
  return (f"{notes}\n\nSet DIFF2LIP_TRACEBACK=1 to see the traceback of an error.\n\n"
          f"{listing}")


def parse_training_args(parser: argparse.ArgumentParser, argv: list[str],
                        default_config: str, notes: str = ""
                        ) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
  """Parses ``argv``; returns the flags and the overridden, locked config.

  ``default_config`` (a file name in ``configs/``) defines the schema a config must follow
  and is the one ``--help`` lists when no ``--config`` is given.
  """
  rest, overrides = split_overrides(argv)
  reference = CONFIGS_DIR / default_config
  if "-h" in rest or "--help" in rest:
    parser.epilog = _help_epilog(rest, reference, notes)
  args = parser.parse_args(rest)
  config = load_config(args.config)
  check_schema(config, config_utils.load_config_file(reference), args.config)
  apply_overrides(config, overrides, args.config)
  return args, config


def start_training(argv: list[str], prog: str, description: str, default_config: str,
                   notes: str) -> tuple[argparse.Namespace, ml_collections.ConfigDict]:
  """What a trainer CLI does before training: parse flags and config, set up logging, join
  the other processes (multi-host), keep compiled steps in ``<workdir>/jax_cache``. Returns
  the flags and the config."""
  parser = training_parser(prog, description)
  args, config = parse_training_args(parser, argv, default_config, notes)
  setup_logging(args.verbose)
  if init_distributed(args):
    from diff2lip_jax.training import multihost  # every process must train the same run
    multihost.check_same_settings(config_utils.config_to_json(config) + "\n" + args.workdir,
                                  "config and --workdir")
  if "://" not in args.workdir and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    import jax  # a resumed run (after preemption) then skips most of the compile time
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return args, config


def init_distributed(args: argparse.Namespace) -> bool:
  """``jax.distributed.initialize`` when asked for by flag or ``DIFF2LIP_DISTRIBUTED=1``;
  returns whether it was. When not every process joined the coordinator within
  ``--distributed_timeout`` seconds, prints one ``error:`` line naming the address and exits
  with status 1 (XLA's own timeout aborts the process with a C++ stack trace instead)."""
  if not (args.distributed or os.environ.get("DIFF2LIP_DISTRIBUTED") == "1"):
    return False
  import jax
  timeout = int(getattr(args, "distributed_timeout", 300))
  message = (f"process {args.process_id} of {args.num_processes} could not join the run at "
             f"coordinator {args.coordinator_address} within --distributed_timeout={timeout} s: "
             "start every process (process 0 runs the coordinator) with the same "
             "--coordinator_address and --num_processes")
  watchdog = threading.Timer(timeout, _give_up, args=(message,))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=timeout + DISTRIBUTED_GRACE_S)
  finally:
    watchdog.cancel()
  return True


def _give_up(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  os._exit(1)  # the main thread is blocked inside XLA's connect call


def setup_logging(verbose: bool = False) -> None:
  """INFO lines of this project on stderr; libraries only from WARNING on (unless verbose)."""
  logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  logging.getLogger().setLevel(logging.INFO)  # also when a caller configured handlers
  for name in QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


class StopRequested:
  """``requested`` turns True on SIGTERM (a preemption notice): the training loops then save a
  checkpoint and return, so the process exits 0 and a re-run resumes."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True


def _is_out_of_memory(error: BaseException) -> bool:
  return type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError") and (
      "RESOURCE_EXHAUSTED" in str(error))


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
  """Calls ``main(argv)`` and returns its exit status; a user error (bad flags, bad config,
  missing or bad files, a diverged run, Ctrl-C, out of memory) becomes one ``error: ...``
  line on stderr and status 1 (2 for usage errors) instead of a traceback."""
  argv = sys.argv[1:] if argv is None else list(argv)
  show_traceback = os.environ.get("DIFF2LIP_TRACEBACK") == "1"
  try:
    return int(main(argv) or 0)
  except KeyboardInterrupt:
    print("error: interrupted (re-run the same command to resume from the last checkpoint)",
          file=sys.stderr)
    return 1
  except Exception as error:  # pylint: disable=broad-except  (bugs are re-raised)
    user_error = isinstance(error, (ValueError, OSError, ArithmeticError))
    if show_traceback or not (user_error or _is_out_of_memory(error)):
      raise
    message = str(error) or type(error).__name__
    if _is_out_of_memory(error):
      message = ("out of device memory: lower train.batch_size or use model.dtype=bfloat16, "
                 f"model.remat=True or mesh.fsdp > 1 ({message.splitlines()[0]})")
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2 if isinstance(error, UsageError) else 1
