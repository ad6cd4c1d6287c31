"""`zspace compare`: autoencoder variants and PCA at one code size on one data set.

For each variant (an autoencoder preset, or ``pca``) it measures, on the test split:
reconstruction MSE per pixel, linear-probe accuracy of the code (logistic regression on
standardised codes, trained on the training split's codes), denoising PSNR against the
clean image for additive Gaussian noise at several sigma (the noisy input's own PSNR is
the floor), code sparsity (Hoyer's measure, 0 = dense, 1 = one active unit, and the
fraction of exactly-off units), and training time. The linear autoencoder also gets its
largest principal angle to the PCA subspace. Writes a Markdown table, a CSV and two
figure sheets.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import DataSplits, load_dataset
from .data.corruptions import GaussianNoise
from .core.compute import resolve_device
from .core.progress import Progress, is_enabled
from .errors import ConfigError
from .evaluation.image_quality import mean_psnr_db
from .evaluation.probes import linear_probe_accuracy, pca_reconstruction_mse, principal_angles_to_pca
from .models.autoencoder import PRESETS
from .training import TrainConfig, train
from .core.io import write_text_atomic

VARIANTS = ("pca", *PRESETS)
# `zspace compare`'s defaults: the eight default variants, 5 epochs on the first 10,000 MNIST training
# images, finish in 1.2 min on a 2-thread CPU (benchmarks/cli_defaults.py), 2.8 min while other jobs
# shared it (10 epochs took 5.4 min then).
# The full setting, --epochs 10 --train-limit 0 (benchmarks/autoencoders.py's), takes tens of minutes here:
# 12x the steps, and the linear probe fitted on 60,000 codes. The library's compare() keeps the full setting.
COMPARE_TRAIN_LIMIT, COMPARE_EPOCHS = 10_000, 5
FULL_SETTING = "--epochs 10 --train-limit 0"


@dataclass
class VariantResult:
    variant: str
    description: str
    reconstruction_mse: float
    probe_accuracy: float
    denoising_psnr: dict[float, float] = field(default_factory=dict)
    hoyer_sparsity: float = float("nan")
    zero_fraction: float = float("nan")
    train_seconds: float = 0.0
    max_principal_angle: float = float("nan")

    def line(self) -> str:
        """One readable line: the variant's measurements with their units."""
        psnr = ", ".join(f"σ={k:g} {v:.2f} dB" for k, v in self.denoising_psnr.items())
        probe = f", probe acc. {self.probe_accuracy:.4f}" if not math.isnan(self.probe_accuracy) else ""
        return (f"{self.variant}: test MSE/pixel {self.reconstruction_mse:.5f}{probe}, denoising PSNR {psnr}, "
                f"Hoyer sparsity {self.hoyer_sparsity:.3f}, {self.train_seconds:.0f} s")


def hoyer_sparsity(codes: np.ndarray) -> float:
    """Mean over examples of (sqrt(k) - |h|_1/|h|_2) / (sqrt(k) - 1) (Hoyer 2004)."""
    k = codes.shape[1]
    l1 = np.abs(codes).sum(1)
    l2 = np.sqrt((codes**2).sum(1))
    ok = l2 > 0
    return float(np.mean((math.sqrt(k) - l1[ok] / l2[ok]) / (math.sqrt(k) - 1))) if ok.any() else 1.0


def _flat_unit(x: np.ndarray) -> np.ndarray:
    return (x.reshape(len(x), -1).astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.reshape(len(x), -1)


def _noisy(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    return GaussianNoise(sigma)(x, torch.Generator().manual_seed(seed))


def compare(data: str | DataSplits, variants=("pca", "linear", "basic", "conv", "denoising", "dropout",
                                               "sparse-l1", "sparse-kl"), *, code_size: int = 32,
            epochs: int = 10, noise_levels=(0.1, 0.3, 0.5), out: str | Path | None = None,
            batch_size: int = 128, lr: float = 1e-3, seed: int = 0, train_limit: int | None = None,
            progress: bool | None = None, overrides: dict[str, dict] | None = None,
            device: str = "cpu") -> list[VariantResult]:
    """Trains each variant (PCA is fitted) and measures it; see the module docstring. ``progress``
    shows the training bars and a line per variant (None: the process setting, core.progress);
    the autoencoders train and are measured on ``device`` (cpu, cuda, cuda:N; PCA runs on the CPU)."""
    show = is_enabled(progress)
    device = str(resolve_device(device))      # a GPU this machine lacks: one line, before any work
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if any(not 0 <= s for s in noise_levels):
        raise ConfigError("noise levels must be >= 0")
    splits = load_dataset(data)
    if splits.train.y is None:
        raise ConfigError("compare needs labelled data for the linear probe")
    if train_limit:
        splits = DataSplits(splits.train.head(train_limit), splits.test, splits.name, splits.source)
    out = Path(out) if out is not None else None
    x_train, x_test = _flat_unit(splits.train.x), _flat_unit(splits.test.x)
    if not 1 <= code_size <= min(x_train.shape):   # PCA's limit; a wider code is no compression
        raise ConfigError(f"--code-size must lie in [1, {min(x_train.shape)}] for {splits.name} "
                          f"({x_train.shape[1]} features, {x_train.shape[0]} training examples), got {code_size}")
    clean = torch.from_numpy(x_test).reshape(len(x_test), *splits.example_shape)
    results = []
    mid = noise_levels[len(noise_levels) // 2] if noise_levels else 0.3
    shown = clean[:8]
    shown_noisy = _noisy(shown, mid, seed)
    rec_rows, den_rows = [("input", shown)], [(f"noisy σ={mid:g}", shown_noisy)]
    bar = Progress(len(variants), "compare", "variants", enabled=show)
    for variant in variants:
        bar.set_description(f"compare: {variant}")
        start = time.perf_counter()
        if variant == "pca":
            from sklearn.decomposition import PCA

            pca = PCA(n_components=code_size, svd_solver="randomized", random_state=seed).fit(x_train)
            seconds = time.perf_counter() - start
            z_train, z_test = pca.transform(x_train), pca.transform(x_test)

            def reconstruct(x: torch.Tensor) -> torch.Tensor:
                flat = x.reshape(len(x), -1).numpy()
                return torch.from_numpy(pca.inverse_transform(pca.transform(flat)).astype(np.float32)).reshape(x.shape)

            res = VariantResult("pca", f"PCA, {code_size} components", pca_reconstruction_mse(pca, x_test),
                                float("nan"), train_seconds=seconds)
        else:
            opts = {"preset": variant, "latent_dim": code_size, **(overrides or {}).get(variant, {})}
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, eval_limit=1000, device=device)
            run = train("ae", splits, out=None if out is None else out / "runs" / variant, config=cfg,
                        preprocessing="scale", progress=show, figures=False, overwrite=True, **opts)
            seconds = run.history()[-1]["wall_seconds"]
            model = run.model.eval()
            dev = next(model.parameters()).device     # CPU tensors in, CPU results out

            def reconstruct(x: torch.Tensor, model=model, dev=dev) -> torch.Tensor:
                with torch.no_grad():
                    return torch.cat([model.reconstruct(b.to(dev)).cpu() for b in x.split(500)])

            def codes(x: np.ndarray, model=model, dev=dev) -> np.ndarray:
                t = torch.from_numpy(x).reshape(len(x), *splits.example_shape)
                with torch.no_grad():
                    return torch.cat([model.embed(b.to(dev)).cpu() for b in t.split(1000)]).numpy()

            z_train, z_test = codes(x_train), codes(x_test)
            rec = reconstruct(clean)
            res = VariantResult(variant, model.describe(), float(((rec - clean) ** 2).mean()), float("nan"),
                                train_seconds=seconds)
            if variant == "linear":
                angles, pca = principal_angles_to_pca(model, x_train)
                res.max_principal_angle = float(angles[-1])
        res.probe_accuracy = linear_probe_accuracy(z_train, splits.train.y, z_test, splits.test.y, seed=seed)
        res.hoyer_sparsity = hoyer_sparsity(z_test)
        res.zero_fraction = float(np.mean(np.abs(z_test) < 1e-6))
        for i, sigma in enumerate(noise_levels):
            noisy = _noisy(clean, sigma, seed + i)
            res.denoising_psnr[sigma] = mean_psnr_db(reconstruct(noisy).clamp(0, 1), clean)
        rec_rows.append((variant, reconstruct(shown).clamp(0, 1)))
        den_rows.append((variant, reconstruct(shown_noisy).clamp(0, 1)))
        results.append(res)
        bar.write(res.line())
        bar.update(1)
    bar.close()
    if out is not None:
        write_comparison(results, splits, clean, noise_levels, out, code_size, epochs, seed)
        from .report.figures import save_labelled_rows

        what = f"{splits.name} test images, code size {code_size}, {epochs} epochs"
        save_labelled_rows(rec_rows, out / "reconstructions.png", f"Reconstructions: {what}")
        save_labelled_rows(den_rows, out / "denoising.png",
                           f"Denoising Gaussian noise σ={mid:g}: {what}")
    return results


def noisy_input_psnr(clean: torch.Tensor, noise_levels, seed: int) -> dict[float, float]:
    return {s: mean_psnr_db(_noisy(clean, s, seed + i), clean) for i, s in enumerate(noise_levels)}


def comparison_table(results: list[VariantResult], floor: dict[float, float]) -> str:
    levels = list(floor)
    head = ("| variant | test MSE/pixel | linear probe acc. | " + " | ".join(f"PSNR σ={s:g}" for s in levels)
            + " | Hoyer sparsity | zero fraction | train s | max angle to PCA |")
    lines = [head, "|" + "---|" * (8 + len(levels) - 1)]
    lines.append("| noisy input (no model) | | | " + " | ".join(f"{floor[s]:.2f}" for s in levels) + " | | | | |")
    for r in results:
        angle = f"{r.max_principal_angle:.2f}°" if not math.isnan(r.max_principal_angle) else ""
        lines.append(f"| {r.variant} ({r.description}) | {r.reconstruction_mse:.5f} | {r.probe_accuracy:.4f} | "
                     + " | ".join(f"{r.denoising_psnr[s]:.2f}" for s in levels)
                     + f" | {r.hoyer_sparsity:.3f} | {r.zero_fraction:.3f} | {r.train_seconds:.0f} | {angle} |")
    return "\n".join(lines)


def write_comparison(results, splits, clean, noise_levels, out: Path, code_size, epochs, seed) -> None:
    floor = noisy_input_psnr(clean, noise_levels, seed)
    table = comparison_table(results, floor)
    text = (f"# zspace compare: {splits.name}, code size {code_size}\n\n"
            f"Training split: {len(splits.train)} images; test split: {len(clean)} images, all measured. "
            f"Autoencoders: {epochs} epochs, seed {seed}, inputs scaled to [0, 1]. Linear probe: logistic "
            f"regression on standardised codes. PSNR in dB of the output against the clean test image, "
            f"Gaussian noise of std σ added (clipped to [0, 1]).\n\n{table}\n")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "comparison.md", text)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["variant", "description", "reconstruction_mse", "probe_accuracy",
                *[f"psnr_sigma_{s:g}" for s in noise_levels], "hoyer_sparsity", "zero_fraction",
                "train_seconds", "max_principal_angle_deg"])
    for r in results:
        w.writerow([r.variant, r.description, r.reconstruction_mse, r.probe_accuracy,
                    *[r.denoising_psnr[s] for s in noise_levels], r.hoyer_sparsity, r.zero_fraction,
                    r.train_seconds, r.max_principal_angle])
    write_text_atomic(out / "comparison.csv", buf.getvalue())
