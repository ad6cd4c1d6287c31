"""EleutherAI sparsify's side of benchmarks/sae_peers.py: run with the eai-sparsify venv's python.

sparsify's ``Trainer`` pulls activations out of a live model's forward pass, so this driver
runs the body of its training step itself, with sparsify's own objects, on the stored rows:
its ``SparseCoder`` (topk, unit-norm decoder, encoder = nn.Linear default init, W_dec its
copy), on the first step b_dec set to the batch mean, ``set_decoder_norm_to_unit_norm()``
before every forward, loss = the coder's own ``fvu`` (+ auxk_alpha * auxk_loss; its default
auxk_alpha is 0 and its dead threshold 10M tokens, so no aux-k term here), then
``remove_gradient_parallel_to_decoder_directions()``, and its default optimizer: signum,
``ScheduleFreeWrapper(SignSGD, momentum=0.95)`` at lr 5e-3 / sqrt(width / 2^14), no schedule.
Weights are exported after ``optimizer.eval()`` (the schedule-free average), as its checkpoint does.
``--precision bf16`` runs that forward under CPU bf16 autocast: what sparsify's own
``@torch.autocast("cuda", enabled=torch.cuda.is_bf16_supported())`` does on a bf16 GPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sae_common import Batches, arguments, finish, held_out_metrics, load_store  # noqa: E402

from importlib.metadata import version  # noqa: E402

from schedulefree import ScheduleFreeWrapper  # noqa: E402
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402
from sparsify.config import TrainConfig  # noqa: E402
from sparsify.sign_sgd import SignSGD  # noqa: E402


def main() -> None:
    a = arguments(__doc__)
    X, X_test = load_store(a.train), load_store(a.test)
    order = np.load(a.order)
    d = X.shape[1]
    cfg = TrainConfig(SparseCoderConfig(num_latents=a.width, k=a.k), log_to_wandb=False)
    sae = SparseCoder(d, cfg.sae, "cpu", dtype=torch.float32)
    lr = cfg.lr or 5e-3 / (sae.num_latents / (2**14)) ** 0.5          # sparsify's signum default
    opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
    opt.train()
    since_fired = torch.zeros(sae.num_latents, dtype=torch.long)
    batches = Batches(X, order, a.batch_size, a.steps)
    for step, x in enumerate(batches):
        if step == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        dead = since_fired > cfg.dead_feature_threshold if cfg.auxk_alpha > 0 else None
        total_variance = (x - x.mean(0)).pow(2).sum()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            out = sae(x=x, y=x, dead_mask=dead, total_variance=total_variance)
        loss = out.fvu + cfg.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            fired = torch.zeros(sae.num_latents, dtype=torch.bool)
            fired[out.latent_indices.flatten()] = True
            since_fired += len(x)
            since_fired[fired] = 0
    opt.eval()                               # the schedule-free average, as sparsify's checkpoint saves it
    sae.eval()

    def encode(x):
        acts, idx, _ = sae.encode(x)
        return torch.zeros(len(x), sae.num_latents).scatter_(1, idx, acts.float())

    with torch.no_grad():
        m = held_out_metrics(lambda x: sae(x).sae_out, encode, X_test)
        check_x = torch.from_numpy(X_test[:64].astype(np.float32))
        check_xhat = sae(check_x).sae_out
    m.update(library="sparsify", version=version("eai-sparsify"), precision=a.precision, lr=lr, optimizer=cfg.optimizer, steps=a.steps,
             batch_size=a.batch_size, tokens=a.steps * a.batch_size, tokens_per_s=batches.tokens_per_s(),
             torch=torch.__version__, threads=torch.get_num_threads(), auxk_alpha=cfg.auxk_alpha,
             dead_feature_threshold=cfg.dead_feature_threshold)
    # nn.Linear keeps (width, d); zspace's W_enc is (d, width)
    finish(a.out, {"W_enc": sae.encoder.weight.t(), "b_enc": sae.encoder.bias, "W_dec": sae.W_dec, "b_dec": sae.b_dec,
                   "input_scale": np.float32(1.0)}, check_x, check_xhat, m)


if __name__ == "__main__":
    main()
