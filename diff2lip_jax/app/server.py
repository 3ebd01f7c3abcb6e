"""Lip-sync web app: a page in your browser in front of the same pipeline as `sample`.

    python -m diff2lip_jax.app --checkpoint CKPT [--host 127.0.0.1] [--port 7860]

then open the printed address (http://127.0.0.1:7860 by default). Upload a face video and a
speech file (or click the bundled synthetic example), choose the face crop, sampler steps,
paste mode and mode, press Run, and watch or download the result.

Offline by design: Gradio's analytics and version check are off, the page uses system fonts
(no web-font or CDN requests), there are no share links (no --share flag), and the server
listens on 127.0.0.1 unless --host says otherwise. Uploads and results live in a temporary
directory that is removed when the app exits (Ctrl-C or SIGTERM).
Needs the optional extra:  pip install -e ".[app]"
Exit status: 0 after a normal stop, 1 when the app cannot start (message on stderr).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from typing import Sequence

GRADIO_RANGE = (6, 7)  # the [app] extra pins gradio>=6,<7
INSTALL_HINT = 'pip install -e ".[app]"'
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m diff2lip_jax.app", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="converted checkpoint directory or training workdir (as for `sample`)")
  p.add_argument("--host", default="127.0.0.1",
                 help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 "
                      "exposes the app, without a password, to your network)")
  p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
  p.add_argument("--respacing",
                 help="sampler steps preselected in the page and built at startup, e.g. "
                      "ddim25 (default: the checkpoint's config.sampling)")
  p.add_argument("--batch_size", type=int,
                 help="frames per device per sampler call (default: the checkpoint's "
                      "config.sampling)")
  p.add_argument("--sampler",
                 help="ddim, ddpm, dpmpp_2m or unipc (default: the checkpoint's "
                      "config.sampling)")
  p.add_argument("--s3fd_weights", help="S3FD checkpoint (s3fd.pth) for the 's3fd' face crop")
  p.add_argument("--max_file_size", default="500mb",
                 help="largest upload accepted, e.g. 200mb or 2gb (default 500mb)")
  p.add_argument("--no_examples", action="store_true",
                 help="do not render the synthetic example clip at startup (saves a few s)")
  return p


def offline_environment(work_dir: str) -> None:
  """Settings Gradio and huggingface_hub read at import: no telemetry, files in ``work_dir``."""
  os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"   # also turns the version check off
  os.environ["HF_HUB_OFFLINE"] = "1"
  os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
  os.environ["GRADIO_SHARE"] = "False"
  os.environ["GRADIO_TEMP_DIR"] = os.path.join(work_dir, "gradio")  # uploads, served copies


def import_gradio():
  """Gradio, or an ``ImportError`` whose message says how to install the right version."""
  try:
    import gradio
  except ImportError as error:
    raise ImportError(f"the web app needs Gradio, which is not installed ({error}); "
                      f"install it with: {INSTALL_HINT}") from None
  major = int(gradio.__version__.split(".")[0])
  if not GRADIO_RANGE[0] <= major < GRADIO_RANGE[1]:
    raise ImportError(f"the web app needs gradio>={GRADIO_RANGE[0]},<{GRADIO_RANGE[1]}, found "
                      f"{gradio.__version__}; install it with: {INSTALL_HINT}")
  return gradio


def _stop_on_sigterm() -> None:
  """SIGTERM ends the app like Ctrl-C does, so the temporary directory is removed."""
  def handler(signum, frame):
    raise SystemExit(0)
  signal.signal(signal.SIGTERM, handler)


def serve(args: argparse.Namespace, work_dir: str) -> int:
  """Loads the checkpoint, builds the page and serves it until interrupted."""
  offline_environment(work_dir)
  try:
    import_gradio()
  except ImportError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  from diff2lip_jax.app import jobs, ui
  if args.s3fd_weights and not os.path.isfile(args.s3fd_weights):
    print(f"error: --s3fd_weights {args.s3fd_weights} is not a file", file=sys.stderr)
    return 1
  print(f"loading {args.checkpoint} ...", file=sys.stderr)
  try:
    overrides = {key: value for key, value in (("batch_size", args.batch_size),
                                               ("sampler", args.sampler)) if value is not None}
    samplers = jobs.SamplerCache(args.checkpoint, respacing=args.respacing, **overrides)
    examples = [] if args.no_examples else jobs.write_examples(os.path.join(work_dir,
                                                                            "examples"))
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"sampler: {samplers.default.describe()}", file=sys.stderr)
  lip_sync = jobs.LipSyncJobs(samplers, work_dir, s3fd_weights=args.s3fd_weights)
  demo = ui.build_demo(lip_sync, jobs.cli_choices(samplers.default.respacing), examples)
  try:
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=False, inbrowser=False,
        prevent_thread_lock=True, ssr_mode=False, mcp_server=False, pwa=False,
        allowed_paths=[work_dir], max_file_size=args.max_file_size,
        footer_links=["settings"], theme=ui.theme(), quiet=True)
  except OSError as error:  # e.g. the port is taken
    print(f"error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
    return 1
  if args.host not in LOOPBACK:
    print(f"warning: --host {args.host} lets other machines reach the app, without a "
          "password", file=sys.stderr)
  print(f"serving on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr,
        flush=True)
  try:
    demo.block_thread()
  finally:
    demo.close(verbose=False)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if not 0 < args.port < 65536:
    build_parser().error(f"--port must be 1..65535, got {args.port}")
  _stop_on_sigterm()
  with tempfile.TemporaryDirectory(prefix="diff2lip_app_") as work_dir:
    return serve(args, work_dir)


if __name__ == "__main__":
  sys.exit(main())
