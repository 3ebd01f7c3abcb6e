"""Training the SyncNet lip-sync expert (Wav2Lip `color_syncnet_train.py` settings, CPU-sized run).

    python -m diff2lip_jax.train_syncnet --config configs/syncnet.py --workdir /tmp/syncnet \
        --config.data.shards=/data/shards --config.train.batch_size=64 \
        --config.train.num_steps=200000

Wav2Lip trains with batch 64, Adam lr 1e-4, evaluating and checkpointing every 10k steps, until
the eval loss stops improving (its released expert reaches ~0.25). The defaults here are a short
run that finishes on a laptop CPU; without `data.shards` a small synthetic dataset is generated
into the workdir. The sections and names follow the Diff2Lip configs (configs/released.py).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.train = ml_collections.ConfigDict(dict(
      num_steps=300,              # optimizer updates of the whole run
      batch_size=16,              # global batch of face/audio pairs (Wav2Lip: 64)
      seed=0,                     # weight init, data order and pair draws
      log_every=10,               # steps between progress lines / TensorBoard scalars
      eval_every=100,             # steps between evaluations on the held-out pairs
      eval_batch_size=16,         # global batch of an evaluation
      num_eval_batches=8,         # batches per evaluation (the same pairs every time)
      checkpoint_every=100,       # steps between checkpoints (also on the last step/SIGTERM)
      keep_checkpoints=3,         # newest checkpoints kept in <workdir>/checkpoints
      async_checkpointing=True,   # write checkpoints in a background thread
      # Starting weights: a Wav2Lip .pth (e.g. lipsync_expert.pth, to fine-tune) or an expert
      # exported by this trainer ("": PyTorch's default init). Ignored when resuming.
      init_checkpoint=""))

  config.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-4,                    # Adam learning rate (Wav2Lip hparams.syncnet_lr)
      b1=0.9, b2=0.999, eps=1e-8,  # torch.optim.Adam defaults
      grad_clip_norm=0.0))        # global-norm clipping (0: none; Wav2Lip clips nothing)

  config.data = ml_collections.ConfigDict(dict(
      shards="",                  # training shards (dir, glob or file) from data_pipelines.prepare
      eval_shards="",             # "": hold num_eval_clips of the training clips out
      num_eval_clips=8,           # clips held out of data.shards when eval_shards is ""
      eval_seed=1234,             # seed of the evaluation pairs (the same at every evaluation)
      # Without shards: generate this many synthetic clips into <workdir>/synthetic_shards.
      synthetic_clips=48,
      synthetic_seed=0,
      min_frames=50,              # length range of the synthetic clips
      max_frames=75))
  # The Grain pair pipeline (diff2lip_jax.syncnet.data), field by field.
  config.data.pipeline = ml_collections.ConfigDict(dict(
      image_size=128,             # crop size S the shards were written with
      min_shift=1,                # smallest |k - j| (frames) of an off-sync pair
      in_sync_probability=0.5,    # chance that a pair is in sync (label 1)
      shuffle=True,               # shuffle clip order (per epoch, seeded)
      # passes over the clips; None: repeat forever (the trainer needs None)
      num_epochs=ml_collections.config_dict.placeholder(int),
      worker_count=0,             # Grain worker processes (0: everything in this process)
      worker_buffer_size=2,       # batches each worker prepares ahead
      read_threads=0,             # threads fetching and decoding examples per process
      prefetch_buffer_size=64,    # examples those threads keep ready
      verify_checksums=True,      # check the TFRecord CRC of every record read
      max_skips_per_example=16,   # unusable records tolerated in a row
      drop_remainder=True,        # drop a final partial batch (only with num_epochs)
      host_prefetch=2))           # batches a background thread keeps ready (0: none)
  return config
