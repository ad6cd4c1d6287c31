"""Evaluation: likelihoods now; sample quality, outlier scores and probes later."""
from .likelihood import (LikelihoodReport, bits_per_dim, evaluate_likelihood,
                         importance_sampled_log_likelihood, mean_loss_terms, reconstruction_error)

__all__ = ["LikelihoodReport", "bits_per_dim", "evaluate_likelihood",
           "importance_sampled_log_likelihood", "mean_loss_terms", "reconstruction_error"]
