r"""Start N training processes on this machine, joined with ``jax.distributed`` over 127.0.0.1.

Simulates a multi-host run (or drives one multi-GPU node with one process per GPU group)::

  python launch/local.py --num_processes 2 --cpu_devices 4 -- \
      python -m diff2lip_jax.train --config configs/synthetic.py --workdir runs/mh

Each process gets the command plus ``--distributed --coordinator_address 127.0.0.1:PORT
--num_processes N --process_id I`` (PORT: a free port unless ``--port`` is given).
``--cpu_devices K`` makes each process a CPU host with K simulated devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=K``, ``JAX_PLATFORMS=cpu``) and gloo
collectives between the processes (``JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo``).

Output lines of process I are printed prefixed with ``[I] ``; the launcher's own lines start
with ``[launch] `` (the pids of the processes first, so a test can signal one of them).
SIGTERM / SIGINT to the launcher are forwarded to every process (the trainer then saves a
checkpoint and exits 0). When a process fails (exit status != 0) or ``--timeout`` passes,
the other processes are killed: one process alone cannot continue a multi-host run. The exit
status is the first non-zero status of a process (124 on timeout), else 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

TIMEOUT_STATUS = 124
KILL_GRACE_S = 10.0


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return int(sock.getsockname()[1])


def process_env(cpu_devices: int | None) -> dict[str, str]:
  """The environment of every process (this one's, plus the simulated-CPU-host settings)."""
  env = dict(os.environ)
  if cpu_devices:
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={cpu_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
  return env


def process_command(command: list[str], index: int, count: int, port: int) -> list[str]:
  return list(command) + ["--distributed", "--coordinator_address", f"127.0.0.1:{port}",
                          "--num_processes", str(count), "--process_id", str(index)]


def _relay(index: int, stream, lock: threading.Lock) -> None:
  for line in stream:
    with lock:
      sys.stdout.write(f"[{index}] {line}")
      sys.stdout.flush()


def _say(text: str, lock: threading.Lock) -> None:
  with lock:
    print(f"[launch] {text}", flush=True)


def _stop_all(processes: list[subprocess.Popen], sig: int) -> None:
  for proc in processes:
    if proc.poll() is None:
      proc.send_signal(sig)


def supervise(processes: list[subprocess.Popen], timeout: float, lock: threading.Lock) -> int:
  """Waits for all processes; kills the rest when one fails or at the timeout. Returns the
  exit status (module docstring)."""
  deadline = time.monotonic() + timeout
  status = 0
  while any(proc.poll() is None for proc in processes):
    failed = [(i, p.returncode) for i, p in enumerate(processes)
              if p.returncode not in (None, 0)]
    if failed and status == 0:
      index, code = failed[0]
      status = code if code > 0 else 128 - code
      _say(f"process {index} exited with status {code}: killing the others", lock)
      _stop_all(processes, signal.SIGKILL)
    if time.monotonic() > deadline and status == 0:
      status = TIMEOUT_STATUS
      _say(f"timeout after {timeout:.0f} s: killing all processes", lock)
      _stop_all(processes, signal.SIGKILL)
    time.sleep(0.1)
  if status == 0:
    codes = [p.returncode for p in processes]
    failed = [c for c in codes if c != 0]
    status = (failed[0] if failed[0] > 0 else 128 - failed[0]) if failed else 0
  return status


def launch(command: list[str], num_processes: int, cpu_devices: int | None = None,
           port: int | None = None, timeout: float = 3600.0) -> int:
  """Runs ``command`` as ``num_processes`` joined processes; returns the exit status."""
  port = port or free_port()
  env, lock = process_env(cpu_devices), threading.Lock()
  processes, relays = [], []
  for index in range(num_processes):
    proc = subprocess.Popen(process_command(command, index, num_processes, port), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # Ctrl-C reaches them only via us
    processes.append(proc)
    _say(f"process {index}: pid {proc.pid}", lock)
    relay = threading.Thread(target=_relay, args=(index, proc.stdout, lock), daemon=True)
    relay.start()
    relays.append(relay)
  forward = lambda signum, frame: _stop_all(processes, signum)
  previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    status = supervise(processes, timeout, lock)
  finally:
    _stop_all(processes, signal.SIGKILL)
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  for relay in relays:
    relay.join(timeout=KILL_GRACE_S)
  _say(f"exit status {status}", lock)
  return status


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python launch/local.py", description=__doc__.split("\n\n")[0],
      usage="%(prog)s [options] -- COMMAND ...")
  parser.add_argument("--num_processes", type=int, default=2, metavar="N")
  parser.add_argument("--cpu_devices", type=int, default=None, metavar="K",
                      help="simulate K CPU devices per process, gloo collectives")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
  parser.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                      help="kill every process after S seconds (exit status 124)")
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--" not in argv:
    parser.error("give the command after --, e.g. -- python -m diff2lip_jax.train ...")
  split = argv.index("--")
  args = parser.parse_args(argv[:split])
  if args.num_processes < 1 or not argv[split + 1:]:
    parser.error("need --num_processes >= 1 and a command after --")
  return launch(argv[split + 1:], args.num_processes, args.cpu_devices, args.port, args.timeout)


if __name__ == "__main__":
  sys.exit(main())
