"""Out-of-distribution detection on images with a VAE or a PixelCNN: Fashion-MNIST -> MNIST
and back, plus noise, horizontal flips and inverted images of the training set's own test split.

For each direction a model is trained on the in-distribution training split, and a
background model of the same family on the same images with a fraction of pixels mutated
(Ren et al. 2019). Every score of zspace.evaluation.outliers that the family supports is
computed on the in-distribution test split (label 0) and on each out-of-distribution set
(label 1): AUROC, AUPRC and FPR at 95% TPR. The raw-likelihood failure (Nalisnick et al.
2019: a Fashion-MNIST model gives MNIST higher likelihood) shows up as an AUROC below 0.5
for the NLL.

The PixelCNN (discretized logistic mixture on 8-bit pixels: a true discrete likelihood, so
its bits compare with PNG's) can be the one benchmarks/pixelcnn_likelihood.py trained
(--foreground RUN); its background model trains here for --background-epochs.

    python benchmarks/outliers_images.py --train fashion-mnist
    python benchmarks/outliers_images.py --train mnist
    python benchmarks/outliers_images.py --train fashion-mnist --model pixelcnn \
        --foreground runs/bench-pixelcnn-fashion-mnist-cpu --background-epochs 1
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import zspace
from _common import ROOT, command_line, machine, update_section, use_shared_data
from zspace.data import ArrayData, BatchLoader, Preprocessing
from zspace.evaluation import outliers as O
from zspace.evaluation.likelihood import collect
from zspace.rng import seeded

OTHER = {"fashion-mnist": "mnist", "mnist": "fashion-mnist"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="fashion-mnist", choices=tuple(OTHER))
    ap.add_argument("--model", default="vae", choices=("vae", "pixelcnn"))
    ap.add_argument("--epochs", type=int, default=20, help="the model's epochs (when not given --foreground)")
    ap.add_argument("--foreground", default=None, help="a trained run of the chosen family to use as the model")
    ap.add_argument("--background", default=None, help="a trained background run (input_mutation > 0) to use")
    ap.add_argument("--background-epochs", type=int, default=None, help="default: --epochs")
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--mutation", type=float, default=0.2, help="background model's mutation rate (Ren et al.)")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="background model's L2 (Ren et al.'s option)")
    ap.add_argument("--nll-samples", type=int, default=100)
    ap.add_argument("--limit", type=int, default=10000, help="images per evaluation set")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    inside = zspace.load_dataset(args.train)
    other = zspace.load_dataset(OTHER[args.train])
    family = FAMILIES[args.model]
    out = ROOT / "runs" / (f"bench-ood-{args.train}" + ("" if args.model == "vae" else f"-{args.model}"))
    config = zspace.TrainConfig(epochs=args.epochs, batch_size=family["batch"], lr=1e-3, lr_schedule="cosine",
                                eval_limit=2000, seed=0, threads=args.threads)
    if args.foreground:
        fg = zspace.load_run(args.foreground)
        if fg.model.name not in family["names"] or fg.data_spec.source != args.train:
            raise SystemExit(f"{args.foreground} holds a {fg.model.name} run on {fg.data_spec.source}, "
                             f"not a {args.model} on {args.train}")
    else:
        fg = zspace.train(args.model, inside, out=out / "model", config=config, preprocessing=family["pre"],
                          overwrite=True, progress=False, **family["options"](args))
    model = fg.model
    if args.background:
        bg = zspace.load_run(args.background)
        mutation = getattr(bg.model.config, "input_mutation", 0.0)
        if bg.model.name != model.name or bg.data_spec.source != args.train or not mutation:
            raise SystemExit(f"{args.background} is not a {model.name} background (input_mutation > 0) on {args.train}")
        bg_epochs, bg_decay = bg.config["train"]["epochs"], bg.config["train"]["weight_decay"]
    else:
        mutation, bg_epochs, bg_decay = args.mutation, args.background_epochs or args.epochs, args.weight_decay
        bg = zspace.train(fg.model.name, inside, out=out / "background", preprocessing=family["pre"],
                          overwrite=True, progress=False, figures=False,
                          config=config.replace(weight_decay=bg_decay, epochs=bg_epochs),
                          **model.config.to_dict() | {"input_mutation": mutation})
    background = bg.model
    train_minutes = (time.perf_counter() - start) / 60

    test = inside.test.head(args.limit).x
    rng = np.random.default_rng(0)
    sets = {
        OTHER[args.train]: other.test.head(args.limit).x,
        "uniform noise": rng.integers(0, 256, size=test.shape, dtype=np.uint8),
        "horizontally flipped": test[..., ::-1].copy(),
        "inverted": (255 - test).astype(np.uint8),
    }
    scores_of = family["scores"]
    nll_name = family["nll_name"]
    # typical set and latent Gaussian from 10,000 training images
    reference = inside.train.head(args.limit).x
    ref = scores_of(model, background, reference, args)
    latent = O.LatentGaussian(ref["codes"]) if "codes" in ref else None
    inl = scores_of(model, background, test, args)
    sections, failure = [], None
    for name, x in sets.items():
        outl = scores_of(model, background, x, args)
        table = []
        for score, (a, b) in derived_scores(inl, outl, ref, latent, nll_name).items():
            y = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
            m = O.separation(y, np.r_[a, b])
            table.append((score, m))
        best = max(table, key=lambda t: t[1]["auroc"])
        if name == OTHER[args.train]:
            failure = dict(table)[nll_name]["auroc"], best
        batch = typicality_batches(inl["nll"], outl["nll"], ref["nll"])
        rows = "\n".join(f"| {s} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['fpr95']:.3f} |" for s, m in table)
        sections.append(f"""**{args.train} test (inliers) vs {name} (outliers)**, {len(test)} + {len(x)} images; best: **{best[0]} {best[1]['auroc']:.3f}**

| score (higher = more abnormal) | AUROC | AUPRC | FPR at 95% TPR |
|---|---|---|---|
{rows}

Typicality batch test (Nalisnick et al. 2019b; batches of 10, α = 0.01, bootstrap from training NLLs): flags {batch[0]:.1%} of inlier batches and {batch[1]:.1%} of outlier batches.
""")
    minutes = (time.perf_counter() - start) / 60
    nll_auroc, best = failure
    target = ""
    if args.train == "fashion-mnist":
        target = (f"\nTarget (Fashion-MNIST → MNIST): best score ≥ 0.99 AUROC: **{best[0]} {best[1]['auroc']:.3f}, "
                  f"{'met' if best[1]['auroc'] >= 0.99 else 'not met'}**; raw likelihood's AUROC "
                  f"{nll_auroc:.3f} ({'the failure reproduced: MNIST looks *more* likely' if nll_auroc < 0.5 else 'no failure here'}).\n")
    trained = (f"`{args.foreground}` (trained by its own command above): {model.describe()}" if args.foreground
               else family["describe"](args))
    md = f"""### Out-of-distribution detection with a {family['title']}, trained on {args.train}

Command: `{command_line()}` ({minutes:.0f} min, of which training {train_minutes:.0f} min)
Machine: {machine()}; {args.threads} threads.
Model: {trained}. Background model (likelihood ratio){f' `{args.background}`' if args.background else ''}: the same architecture, trained {bg_epochs} epoch(s) with
{mutation:.0%} of pixels replaced by uniform random levels each step{f', weight decay {bg_decay:g}' if bg_decay else ''}.
{family['nll_note'](args)} Complexity: PNG (zlib level 9) code length in bits (Serrà et al. 2020).
Typicality: |NLL − mean training NLL| ({len(reference)} training images).{family['extra_note']}
{target}
{chr(10).join(sections)}"""
    update_section(f"ood-{args.train}" + ("" if args.model == "vae" else f"-{args.model}"), md)
    print(md)


def vae_scores(model, background, x_uint8: np.ndarray, args) -> dict[str, np.ndarray]:
    data = ArrayData.from_arrays(x_uint8)
    loader = BatchLoader(data, 500, Preprocessing("scale"), shuffle=False)
    k = args.nll_samples
    with seeded(0):
        res = {
            "l1": O.reconstruction_scores(model, loader.epoch(0), "l1"),
            "l2": O.reconstruction_scores(model, loader.epoch(0), "l2"),
            "linf": O.reconstruction_scores(model, loader.epoch(0), "linf"),
            "nelbo": O.negative_elbo(model, loader.epoch(0)),
            "nll": O.importance_sampled_nll(model, loader.epoch(0), k),
            "nll_bg": O.importance_sampled_nll(background, loader.epoch(0), k),
        }
    res["codes"] = collect(model, loader.epoch(0), lambda m, x, y: m.embed(x))
    res["png_bits"] = O.png_bits(x_uint8)
    return res


def pixelcnn_scores(model, background, x_uint8: np.ndarray, args) -> dict[str, np.ndarray]:
    loader = BatchLoader(ArrayData.from_arrays(x_uint8), 250, Preprocessing("uint8"), shuffle=False)
    return {"nll": O.exact_nll(model, loader.epoch(0)), "nll_bg": O.exact_nll(background, loader.epoch(0)),
            "png_bits": O.png_bits(x_uint8)}


FAMILIES = {
    "vae": dict(
        title="VAE", names=("vae",), pre="scale", batch=128, scores=vae_scores, nll_name="NLL (importance-sampled)",
        options=lambda a: dict(latent_dim=a.latent_dim, hidden=(512, 256), activation="elu"),
        describe=lambda a: (f"VAE 784-512-256-{a.latent_dim} (elu), Bernoulli decoder on grey levels scaled to "
                            f"[0, 1], {a.epochs} epochs, batch 128, Adam lr 1e-3 cosine, seed 0"),
        nll_note=lambda a: (f"NLL: importance-sampled, k = {a.nll_samples}, in nats (Bernoulli cross-entropy on "
                            "grey levels: a score, not a normalised likelihood)."),
        extra_note=" Mahalanobis: posterior means under a Gaussian fitted to the same training codes."),
    "pixelcnn": dict(
        title="PixelCNN", names=("pixelcnn", "gated-pixelcnn"), pre="uint8", batch=64, scores=pixelcnn_scores,
        nll_name="NLL (exact)",
        options=lambda a: dict(head="logistic-mixture"),
        describe=lambda a: (f"PixelCNN with its defaults, discretized logistic mixture on 8-bit pixels, {a.epochs} "
                            "epochs, batch 64, Adam lr 1e-3 cosine, seed 0"),
        nll_note=lambda a: "NLL: exact, in nats (a normalised likelihood of the 8-bit image).",
        extra_note=""),
}


def derived_scores(a: dict, b: dict, ref: dict, latent, nll_name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every score both score dictionaries support, as (inlier scores, outlier scores)."""
    both = lambda f: (f(a), f(b))  # noqa: E731
    out = {}
    if "l1" in a:
        out.update({
            "reconstruction error, L1": both(lambda s: s["l1"]),
            "reconstruction error, L2": both(lambda s: s["l2"]),
            "reconstruction error, L∞": both(lambda s: s["linf"]),
            "negative ELBO": both(lambda s: s["nelbo"]),
        })
    out.update({
        nll_name: both(lambda s: s["nll"]),
        "likelihood ratio (NLL − background NLL)": both(lambda s: O.likelihood_ratio(s["nll"], s["nll_bg"])),
        "complexity-corrected NLL (bits − PNG bits)": both(lambda s: O.complexity_corrected(s["nll"], s["png_bits"])),
        "typicality |NLL − H|": both(lambda s: O.typicality(s["nll"], ref["nll"])),
    })
    if latent is not None:
        out["latent Mahalanobis"] = both(lambda s: latent.score(s["codes"]))
    return out


def typicality_batches(inl: np.ndarray, outl: np.ndarray, ref: np.ndarray, m: int = 10) -> tuple[float, float]:
    def flagged(nll):
        n = len(nll) // m
        return np.mean([O.typicality_test(nll[i * m:(i + 1) * m], ref, alpha=0.01, seed=i)[0] for i in range(n)])
    return flagged(inl), flagged(outl)


if __name__ == "__main__":
    main()
