"""The Gradio page: uploads, options, Run with progress, the result video and its download.

Only this module imports Gradio; the work itself is :mod:`diff2lip_jax.app.jobs`. Element ids
(``video_in``, ``audio_in``, ``run``, ``result``, ``download``, ``status``) are what the browser
test drives, so keep them stable.
"""
from __future__ import annotations

import gradio as gr

from diff2lip_jax.app.jobs import Choices, JobRequest, LipSyncJobs

INTRO = """# Diff2Lip lip sync
Upload a face video and a speech recording (or click the synthetic example below), choose the
options and press **Run**: the mouth region is regenerated so the lips follow the speech. The
result is an mp4 (25 fps, H.264 + AAC) to watch here or download. Everything runs on this
machine; nothing is sent anywhere."""

CROP_HELP = ("how the face is found: the choices and the default of "
             "`python -m diff2lip_jax.sample --crop`; 'box' uses the box below")


def theme() -> gr.themes.Base:
  """Gradio's default look with system fonts only, so the page fetches no web fonts."""
  return gr.themes.Default(font=["DejaVu Sans", "Liberation Sans", "Arial", "sans-serif"],
                           font_mono=["DejaVu Sans Mono", "Liberation Mono", "monospace"])


def _options(choices: Choices) -> list[gr.components.Component]:
  """The option widgets, in the order the Run handler takes them."""
  crop = gr.Dropdown(list(choices.crops), value=choices.crop, label="Face crop",
                     info=CROP_HELP, elem_id="crop")
  box = gr.Textbox(label="Crop box X1,Y1,X2,Y2 (pixels, exclusive ends)",
                   placeholder="e.g. 40,20,216,236", visible=choices.crop == "box",
                   elem_id="box")
  crop.change(lambda kind: gr.Textbox(visible=kind == "box"), crop, box, queue=False)
  steps = gr.Dropdown(list(choices.steps), value=choices.step, allow_custom_value=True,
                      label="Sampler steps",
                      info="DDIM steps: fewer are faster, more follow the model more closely",
                      elem_id="steps")
  paste = gr.Radio(list(choices.pastes), value=choices.paste, label="Paste mode",
                   info="how the generated face is put back into the frame", elem_id="paste")
  mode = gr.Radio(list(choices.modes), value=choices.mode, label="Mode",
                  info="cross: every frame is the input; reconstruction: the first frame "
                       "drives the whole clip", elem_id="mode")
  loop = gr.Checkbox(value=choices.loop_video, label="Loop the video to cover longer speech",
                     elem_id="loop_video")
  return [crop, box, steps, paste, mode, loop]


def build_demo(jobs: LipSyncJobs, choices: Choices,
               examples: list[list[str]] | None = None) -> gr.Blocks:
  """The page. ``examples`` are ``[video, audio]`` pairs offered for one click."""

  def on_run(video, audio, crop, box, steps, paste, mode, loop,
             progress=gr.Progress(track_tqdm=True)):
    request = JobRequest(video=video, audio=audio, crop=crop, box=box or "", steps=steps or "",
                         paste=paste, mode=mode, loop_video=bool(loop))
    result = jobs.run(request, report=lambda fraction, text: progress(fraction, desc=text))
    return result.path, result.path, result.message

  # delete_cache: uploads and served results older than an hour go, checked every 30 min.
  with gr.Blocks(title="Diff2Lip lip sync", analytics_enabled=False,
                 delete_cache=(1800, 3600)) as demo:
    gr.Markdown(INTRO)
    with gr.Row():
      with gr.Column():
        # buttons: download only; Gradio's "share" posts to Hugging Face Spaces.
        video = gr.Video(label="Face video", sources=["upload"], buttons=["download"],
                         elem_id="video_in")
        audio = gr.Audio(label="Speech", sources=["upload"], type="filepath",
                         buttons=["download"], elem_id="audio_in")
        if examples:
          gr.Examples(examples, inputs=[video, audio], cache_examples=False,
                      label="Example: a synthetic face and another synthetic voice")
        with gr.Accordion("Options", open=True):
          options = _options(choices)
        run = gr.Button("Run", variant="primary", elem_id="run")
      with gr.Column():
        result = gr.Video(label="Result", interactive=False, buttons=["download"],
                          elem_id="result")
        download = gr.File(label="Download the result", interactive=False, elem_id="download")
        status = gr.Textbox(label="Status", interactive=False, lines=2, elem_id="status")
    run.click(on_run, [video, audio] + options, [result, download, status],
              concurrency_limit=1)
  return demo
