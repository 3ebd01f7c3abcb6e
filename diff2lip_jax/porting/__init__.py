"""Weights from the original PyTorch projects: a restricted ``.pt`` reader (no pickled code is
run) and one converter per network (Diff2Lip TFG model, Wav2Lip SyncNet, LPIPS, S3FD)."""
