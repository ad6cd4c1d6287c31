"""SAELens's side of benchmarks/sae_peers.py: run with the sae-lens venv's python.

Drives SAELens's own TopKTrainingSAE and its own SAETrainer (Adam, its default lr 3e-4 at
every width, constant schedule, grad-norm clip 1.0, aux-k loss on latents dead for its
default 1000-step window, decoder-norm-rescaled top-k, decoder rows initialised to norm 0.1,
b_dec at zero, no input normalisation: all its defaults) on the rows of a zspace shard
store, fed through SAETrainer's data-provider seam in the order zspace's trainer uses.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sae_common import Batches, arguments, finish, held_out_metrics, load_store  # noqa: E402

import sae_lens  # noqa: E402
from sae_lens.config import LoggingConfig, SAETrainerConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402


def main() -> None:
    a = arguments(__doc__)
    X, X_test = load_store(a.train), load_store(a.test)
    order = np.load(a.order)
    d = X.shape[1]
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=a.width, k=a.k, dtype="float32", device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=a.steps * a.batch_size, train_batch_size_samples=a.batch_size,
                           device="cpu", logger=LoggingConfig(log_to_wandb=False),
                           lr_end=SAETrainerConfig.lr / 10)   # what its runner config's post-init sets
    batches = Batches(X, order, a.batch_size, a.steps)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(batches))
    trainer.fit()
    batches.times.append(__import__("time").perf_counter())   # fit stops without asking for one more
    sae.eval()
    with torch.no_grad():
        m = held_out_metrics(lambda x: sae(x), lambda x: sae.encode(x), X_test)
        check_x = torch.from_numpy(X_test[:64].astype(np.float32))
        check_xhat = sae(check_x)
    m.update(library="sae_lens", version=sae_lens.__version__, lr=cfg.lr, steps=a.steps, batch_size=a.batch_size,
             tokens=a.steps * a.batch_size, tokens_per_s=batches.tokens_per_s(), torch=torch.__version__,
             threads=torch.get_num_threads(), dead_window_steps=cfg.dead_feature_window,
             rescale_acts_by_decoder_norm=bool(sae.cfg.rescale_acts_by_decoder_norm),
             apply_b_dec_to_input=bool(sae.cfg.apply_b_dec_to_input))
    finish(a.out, {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec,
                   "input_scale": np.float32(1.0),
                   "rescale_acts_by_decoder_norm": np.bool_(sae.cfg.rescale_acts_by_decoder_norm),
                   "apply_b_dec_to_input": np.bool_(sae.cfg.apply_b_dec_to_input)}, check_x, check_xhat, m)


if __name__ == "__main__":
    main()
