"""Sparse autoencoders on a transformer's activations: language models, hook points, harvesting."""
from .corpus import corpus_digest, read_corpus, split_documents
from .hooks import (activations, block_list, capture, harvest, replace_output, resolve_hook,
                    stream_activations)
from .train import SAEEvaluation, default_config, default_lr, evaluate_sae, feature_statistics, train_sae
from .lm import (LanguageModel, Llama2cTokenizer, greedy_generate, llama2c_reference_logits, llama2c_to_hf,
                 load_language_model, load_minilm, load_stories260k, read_llama2c, sentence_embeddings)

__all__ = ["default_config", "default_lr", "SAEEvaluation", "evaluate_sae", "feature_statistics", "train_sae", "corpus_digest", "read_corpus", "split_documents", "activations", "block_list", "capture", "harvest",
           "replace_output", "resolve_hook", "stream_activations", "LanguageModel", "Llama2cTokenizer",
           "greedy_generate", "llama2c_reference_logits", "llama2c_to_hf", "load_language_model", "load_minilm",
           "load_stories260k", "read_llama2c", "sentence_embeddings"]

from .browser import Context, FeatureSummary, Summaries, feature_summaries, write_browser  # noqa: E402
from .steer import SteerResult, promoted_tokens, steer, steering, steering_fn  # noqa: E402

__all__ += ["Context", "FeatureSummary", "Summaries", "feature_summaries", "write_browser", "SteerResult",
            "promoted_tokens", "steer", "steering", "steering_fn"]
