"""Training the SyncNet lip-sync expert (Wav2Lip `color_syncnet_train.py` settings, CPU-sized run).

    python -m diff2lip_jax.train_syncnet --config configs/syncnet.py --workdir /tmp/syncnet \
        --config.data.shards=/data/shards --config.data.batch_size=64 --config.num_steps=200000

Wav2Lip trains with batch 64, Adam lr 1e-4, evaluating and checkpointing every 10k steps, until
the eval loss stops improving (its released expert reaches ~0.25). The defaults here are a short
run that finishes on a laptop CPU; without `data.shards` a small synthetic dataset is generated
into the workdir.
"""
import ml_collections

from diff2lip_jax.syncnet import data as syncnet_data


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_steps = 300
  config.log_every = 10
  config.eval_every = 100
  config.checkpoint_every = 100
  config.max_checkpoints_to_keep = 3
  # Optional starting weights: a Wav2Lip .pth (e.g. lipsync_expert.pth, to fine-tune) or an
  # expert exported by this trainer. Ignored when resuming from the workdir's own checkpoints.
  config.init_checkpoint = ml_collections.config_dict.placeholder(str)

  config.data = syncnet_data.get_config()
  config.data.shards = ml_collections.config_dict.placeholder(str)  # dir, glob or file
  config.data.eval_shards = ml_collections.config_dict.placeholder(str)  # None: hold out clips
  config.data.num_eval_clips = 8          # held out of data.shards when eval_shards is None
  config.data.batch_size = 16             # global batch (Wav2Lip: 64)
  config.data.eval_batch_size = 16
  config.data.num_eval_batches = 8        # same examples at every evaluation
  config.data.eval_seed = 1234
  config.data.synthetic = False           # True: train on generated clips (no shards needed)
  config.data.synthetic_clips = 48
  config.data.synthetic_min_frames = 50
  config.data.synthetic_max_frames = 75
  config.data.synthetic_seed = 0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-4   # Wav2Lip hparams.syncnet_lr
  config.optimizer.b1 = 0.9               # torch.optim.Adam defaults
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.grad_clip_norm = 0.0   # 0: no clipping (Wav2Lip clips nothing)
  return config
