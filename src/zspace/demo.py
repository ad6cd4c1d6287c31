"""`make demo`: a VAE on Fashion-MNIST, trained, evaluated and drawn, in a few minutes."""
from __future__ import annotations

import time
from pathlib import Path

from .core.io import write_text_atomic
from .tasks import evaluate_run, write_evaluation
from .training import TrainConfig, train


def run_demo(out: str | Path = "runs/demo", epochs: int = 30, nll_samples: int = 500,
             data: str = "fashion-mnist", device: str = "cpu") -> Path:
    """Trains, evaluates and reports on ``device`` (cpu, cuda, cuda:N)."""
    from .core.compute import resolve_device

    device = str(resolve_device(device))      # a GPU this machine lacks: one line, before any work
    out = Path(out)
    start = time.perf_counter()
    print(f"zspace demo: training a VAE on {data} for {epochs} epochs into {out}", flush=True)
    config = TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, lr_schedule="cosine", eval_limit=2000,
                         device=device)
    # an earlier demo's run is replaced; a folder of other files is refused, not cleared
    run = train("vae", data, out=out, config=config, overwrite=(out / "checkpoints" / "latest").is_file(),
                latent_dim=32, hidden=(512, 256), activation="elu")
    print(f"evaluating on the full test set with {nll_samples} importance samples per image", flush=True)
    spec = run.data_spec
    result = evaluate_run(run, "test", nll_samples=nll_samples, batch_size=100, seed=0)
    rep, meaning, mse = result.likelihood, result.meaning, result.reconstruction_mse
    write_evaluation(result, None, out)      # RUN/eval-test-kK.json, with the weights' epoch and step
    minutes = (time.perf_counter() - start) / 60
    summary = f"""# zspace demo: {run.describe()}

Data: {data}, training split ({len(run.data().train)} examples), preprocessing
`{spec.preprocessing}`; evaluated on the {rep.num_examples} test examples (random
preprocessing drawn once with a fixed seed). Likelihood: {meaning.kind} ({meaning.note}).

| measure | value |
|---|---|
| test ELBO | {rep.elbo:.2f} nats (reconstruction {rep.rec:.2f}, KL {rep.kl:.2f}) |
| test NLL, importance-sampled, k = {rep.num_samples} | {rep.nll:.2f} ± {rep.nll_std_err:.2f} nats |
| bits/dim ({rep.num_dims} dimensions) | {rep.bits_per_dim:.4f} |
| reconstruction MSE per pixel (decoder mean at posterior mean) | {mse:.4f} |
| training | {epochs} epochs, batch 128, Adam lr 1e-3 cosine |
| wall time of the whole demo | {minutes:.1f} min |

![reconstructions](figures/reconstructions.png)
![samples](figures/samples.png)
![loss curves](figures/loss_curves.png)

Reproduce: `zspace train vae --data {data} --latent-dim 32 --hidden 512,256 --activation elu
--epochs {epochs} --batch-size 128 --eval-limit 2000 --out RUN` then
`zspace eval RUN --nll-samples {nll_samples}`. The full config is in config.json.
"""
    write_text_atomic(out / "summary.md", summary)
    from .report.html import write_report

    report = write_report(run)
    print(f"\ntest ELBO {rep.elbo:.2f} nats, NLL (k={rep.num_samples}) {rep.nll:.2f} nats, "
          f"{rep.bits_per_dim:.4f} bits/dim; {minutes:.1f} min")
    print(f"results: {out.resolve()}")
    print(f"  report (open in a browser): {report.resolve()}")
    for name in ("summary.md", "figures/reconstructions.png", "figures/samples.png",
                 "figures/loss_curves.png", "metrics.csv", "config.json"):
        print(f"  {out / name}")
    return out
