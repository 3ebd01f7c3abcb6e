"""Gaussian diffusion of guided-diffusion as used by Diff2Lip, in JAX (NHWC).

The methods of `GaussianDiffusion` are also exported as functions taking the diffusion
first, e.g. `q_sample(diffusion, x_start, t, noise)`.
"""
from diff2lip_jax.diffusion.enums import LossType, ModelMeanType, ModelVarType
from diff2lip_jax.diffusion.factory import create_diffusion, loss_type_for
from diff2lip_jax.diffusion.gaussian import TABLE_NAMES, GaussianDiffusion
from diff2lip_jax.diffusion.losses import (approx_standard_normal_cdf,
                                           discretized_gaussian_log_likelihood, mean_flat,
                                           normal_kl)
from diff2lip_jax.diffusion.schedules import (BETA_SCHEDULES, betas_for_alpha_bar,
                                              get_named_beta_schedule, logsnr_timesteps,
                                              respace_betas, respacing_timesteps,
                                              space_timesteps)
from diff2lip_jax.diffusion.solvers import ODE_SOLVERS, SAMPLERS, multistep_coefficients

model_timesteps = GaussianDiffusion.model_timesteps
q_mean_variance = GaussianDiffusion.q_mean_variance
q_sample = GaussianDiffusion.q_sample
q_posterior_mean_variance = GaussianDiffusion.q_posterior_mean_variance
predict_xstart_from_eps = GaussianDiffusion.predict_xstart_from_eps
predict_eps_from_xstart = GaussianDiffusion.predict_eps_from_xstart
predict_xstart_from_xprev = GaussianDiffusion.predict_xstart_from_xprev
split_model_output = GaussianDiffusion.split_model_output
p_mean_variance = GaussianDiffusion.p_mean_variance
ddpm_step = GaussianDiffusion.ddpm_step
ddim_step = GaussianDiffusion.ddim_step
ddim_reverse_step = GaussianDiffusion.ddim_reverse_step
ddim_sample_loop = GaussianDiffusion.ddim_sample_loop
p_sample_loop = GaussianDiffusion.p_sample_loop
denoise = GaussianDiffusion.denoise
multistep_sample_loop = GaussianDiffusion.multistep_sample_loop
sample_loop = GaussianDiffusion.sample_loop
sample_timesteps = GaussianDiffusion.sample_timesteps
vb_terms_bpd = GaussianDiffusion.vb_terms_bpd
hybrid_vb_term = GaussianDiffusion.hybrid_vb_term
mse_target = GaussianDiffusion.mse_target
training_losses = GaussianDiffusion.training_losses
prior_bpd = GaussianDiffusion.prior_bpd

__all__ = [
    "BETA_SCHEDULES", "GaussianDiffusion", "LossType", "ModelMeanType", "ModelVarType",
    "ODE_SOLVERS", "SAMPLERS", "TABLE_NAMES", "approx_standard_normal_cdf",
    "betas_for_alpha_bar", "create_diffusion", "ddim_reverse_step", "ddim_sample_loop",
    "ddim_step", "ddpm_step", "denoise", "discretized_gaussian_log_likelihood",
    "get_named_beta_schedule", "hybrid_vb_term", "logsnr_timesteps", "loss_type_for",
    "mean_flat", "model_timesteps", "mse_target", "multistep_coefficients",
    "multistep_sample_loop", "normal_kl", "p_mean_variance", "p_sample_loop",
    "predict_eps_from_xstart", "predict_xstart_from_eps", "predict_xstart_from_xprev",
    "prior_bpd", "q_mean_variance", "q_posterior_mean_variance", "q_sample",
    "respace_betas", "respacing_timesteps", "sample_loop", "sample_timesteps",
    "space_timesteps", "split_model_output", "training_losses", "vb_terms_bpd",
]
