"""Evaluation of generated videos (PSNR, SSIM, LSE-D/LSE-C) and the synthetic lip-sync score."""
