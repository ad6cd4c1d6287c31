"""The ``zspace`` command: parses, calls the library, prints. No logic of its own.

Model and training flags are generated from the config dataclasses, so every option a
config has is a flag (``latent_dim`` -> ``--latent-dim``) and new model families get
theirs without touching this file. A user error prints one line and exits with 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from .core.io import save_npy_atomic
from .errors import ConfigError, ZspaceError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1   # an unexpected exception: a bug in zspace, not the user's input
PRIOR_FIXED = ("input_shape", "head", "levels")   # set from the VQ-VAE by train_prior


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USER_ERROR)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# What a config field means, for fields whose definition carries no comment of its own.
_FIELD_HELP = {
    "latent_dim": "size of the latent code z", "hidden": "MLP layer widths, encoder order (comma-separated)",
    "activation": "hidden-layer non-linearity", "epochs": "passes over the training split",
    "batch_size": "examples per optimiser step (the global batch under --nproc)", "lr": "learning rate",
    "weight_decay": "L2 penalty (adam) or decoupled decay (adamw)", "seed": "fixes weights, batches and draws",
    "input_shape": "example shape", "corruption_level": "noise std or corrupted fraction of the corruption",
    "dropout": "dropout probability on hidden layers", "sparsity_weight": "weight of the sparsity penalty",
    "sparsity_target": "target mean activation of the kl sparsity penalty",
    "ema_decay": "EMA codebook: decay of the running counts and sums", "ema": "EMA codebook updates instead of a codebook loss",
    "stride": "stride of the encoder's convolutions", "embedding_dim": "size of each code vector (D)",
    "expansion": "features = expansion x input width", "k": "active features per token (topk/batchtopk)",
    "num_classes": "number of classes of a conditional model (labels 0..N-1)",
    "threads": "torch intra-op threads (default: min(cores, 4)); a bit-exact rerun needs the same count",
    "device": "cpu, cuda or cuda:N", "architecture": "encoder/decoder family (conv and resnet need images)",
    "channels": "conv channels per stride-2 stage (comma-separated)", "upsample": "conv decoder upsampling",
    "code_activation": "non-linearity on the code", "residual_blocks": "masked residual blocks after the first layer",
    "lr_final_fraction": "the schedule decays lr to lr x this fraction", "beta2": "adam/adamw second-moment decay",
}


def _choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of a config field, by its name (one meaning across the configs)."""
    from .distributions import LIKELIHOODS
    from .models.autoencoder import AE_LOSSES, CODE_ACTIVATIONS, PRESETS, SPARSITY
    from .models.dbvae import COMBINE, SAMPLING
    from .models.networks import ARCHITECTURES
    from .models.pixelcnn import HEADS
    from .models.sae import SAE_KINDS
    from .models.vqprior import PRIOR_MODELS
    from .nn.mlp import ACTIVATIONS
    from .nn.resnet import NORMS
    from .data.corruptions import CORRUPTIONS
    from .training.config import LR_SCHEDULES, OPTIMIZERS, PRECISIONS

    return {"architecture": ARCHITECTURES, "likelihood": LIKELIHOODS, "lr_schedule": LR_SCHEDULES,
            "optimizer": OPTIMIZERS, "precision": PRECISIONS, "activation": tuple(ACTIVATIONS),
            "code_activation": CODE_ACTIVATIONS, "preset": ("none", *PRESETS), "norm": NORMS, "head": HEADS,
            "sparsity": SPARSITY, "reconstruction_loss": AE_LOSSES, "prior_model": PRIOR_MODELS,
            "upsample": ("transpose", "nearest"), "output_activation": ("sigmoid", "none"),
            "corruption": tuple(CORRUPTIONS), "kind": SAE_KINDS, "combine": COMBINE, "sampling": SAMPLING}


def _field_comments(cls) -> dict[str, str]:
    """Each field's comment in the config's source (the trailing one, else the lines above it)."""
    import inspect
    import re

    found: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            m = re.match(r"\s+(\w+)\s*:[^#]*=[^#]*?(?:#\s*(.*))?$", line)
            if line.strip().startswith("#"):
                above.append(line.strip().lstrip("#").strip())
                continue
            if m and not line.strip().startswith(("def ", "return", "if ")):
                text = m.group(2) or " ".join(above)
                if text:
                    found[m.group(1)] = text
            above = []
    return found


def _add_config_flags(p: argparse.ArgumentParser, cls, skip=(), title=None) -> None:
    """One flag per dataclass field, described by the field's comment, its allowed values
    listed; the default is the config's (shown in --help)."""
    group = p.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    comments, choices = _field_comments(cls), _choices()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        what = comments.get(f.name) or _FIELD_HELP.get(f.name) or f.name.replace("_", " ")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        allowed = choices.get(f.name) if base is str else None
        if typing.get_origin(hint) is tuple or typing.get_origin(base) is tuple:
            kind, shown = _parse_ints, ",".join(map(str, f.default))
        elif base is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                               help=f"{what} (default: {f.default})")
            continue
        else:
            kind, shown = (base if base in (int, float, str) else str), f.default
        group.add_argument(_flag(f.name), type=kind, default=None, choices=allowed,
                           metavar="{" + ",".join(allowed) + "}" if allowed else f.name.split("_")[-1].upper(),
                           help=f"{what} (default: {shown})".replace("%", "%%"))


def _summary(doc: str | None, name: str) -> str:
    """A docstring's first sentence on one line (the verb list's description of a model)."""
    text = " ".join((doc or "").split())
    if not text:
        return f"the {name} model"
    import re

    end = re.search(r"(?<! al)(?<!e\.g)\.(\s|$)", text)   # "van den Oord et al. 2016" goes on
    return text if end is None else text[:end.start() + 1]


def _shared_fields(cls, other) -> tuple[str, ...]:
    """Fields of ``cls`` that ``other`` has too (their flags are added once, by ``other``)."""
    theirs = {f.name for f in dataclasses.fields(other)}
    return tuple(f.name for f in dataclasses.fields(cls) if f.name in theirs)


def _given(ns: argparse.Namespace, cls, skip=()) -> dict:
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(ns, f.name, None) is not None}


def _add_image_flags(p: argparse.ArgumentParser, channels_flag: str = "--channels") -> None:
    """Image-decoding flags; ``train`` names the colour flag --image-channels, since conv models
    already have --channels (their widths)."""
    p.add_argument("--image-size", type=int, help="images: resize (after a central square crop) to this side")
    p.add_argument(channels_flag, dest="image_channels", type=int, choices=(1, 3),
                   help="images: 1 grey or 3 RGB (default: the first image's)")
    p.add_argument("--skip-bad", action="store_true",
                   help="images: leave out files that do not decode (counted) instead of stopping")


def _add_compute_flags(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """--device, --threads and --no-progress: on every verb that computes."""
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="cpu", help="where the models run: cpu, cuda or cuda:N (default cpu; "
                   "checked against this machine)")
    g.add_argument("--threads", type=int, help="torch threads (default: min(cores, 4))")
    if progress:
        g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def build_parser() -> argparse.ArgumentParser:
    from .compare import COMPARE_EPOCHS, COMPARE_TRAIN_LIMIT, FULL_SETTING, VARIANTS
    from .data.corruptions import CORRUPTIONS
    from .data.sources import NAMED_DATASETS
    from .scorecard import SCORECARD_N
    from .tasks import DEFAULT_NLL_SAMPLES, LITERATURE_NLL_SAMPLES
    from .data.transforms import PREPROCESSING
    from .models.sae import SAE_KINDS, SAEConfig
    from .models import MODELS
    from .training import TrainConfig

    p = _Parser(prog="zspace", description="Deep latent-variable generative models: train, "
                "evaluate, sample, reconstruct, encode.")
    p.add_argument("--version", action="version", version=f"zspace {__import__('zspace').__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error "
                   "(accepted anywhere on the command line)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tr = sub.add_parser("train", help="train a model (or --resume a run)")
    models = tr.add_subparsers(dest="model", required=True, parser_class=_Parser)
    for name, cls in sorted(MODELS.items()):
        summary = _summary(cls.__doc__, name)
        m = models.add_parser(name, help=summary,
                              description=f"Train a model: {summary} Flags default to the config's values "
                                          f"(or to --config FILE's); flags given override the file.")
        m.add_argument("--config", type=Path, metavar="FILE",
                       help="options from a file with a run's config.json schema (JSON, or YAML with PyYAML "
                            "installed): model, data and train sections; a finished run's config.json "
                            "trains the same run again")
        m.add_argument("--data", default=None,
                       help="a named set (" + ", ".join(NAMED_DATASETS) + ") or a path: .npy (memory-mapped), "
                       ".npz, .csv, IDX, a shard store, a folder or .zip of images (default: fashion-mnist)")
        m.add_argument("--preprocess", choices=PREPROCESSING, default=None,
                       help="input preprocessing (default: the model's own: dynamic-binarize for a Bernoulli "
                            "likelihood, scale otherwise)")
        m.add_argument("--test-fraction", type=float, default=None,
                       help="share held out as test split when a file has none (default 0.1)")
        m.add_argument("--label-column", help="CSV column (name or index) holding labels")
        _add_image_flags(m, "--image-channels")
        m.add_argument("--out", type=Path, help="run folder to create (required unless --resume)")
        m.add_argument("--resume", type=Path, metavar="RUN",
                       help="continue this run from its latest checkpoint (only --epochs/--steps, --threads, "
                            "--workers and --no-progress may be given; bit-exact needs the same --threads)")
        m.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
        m.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
        m.add_argument("--nproc", type=int, metavar="N",
                       help="train data-parallel on N local processes (relaunched through torchrun)")
        _add_config_flags(m, cls.config_class, skip=("input_shape",), title=f"{name} model options")
        # the warm-up means something only for a model with a KL or sparsity term to warm up
        _add_config_flags(m, TrainConfig, title="training options",
                          skip=() if cls.warms_up else ("kl_warmup_epochs",))

    from .models.pixelcnn import GatedPixelCNNConfig
    from .models.tile_transformer import TileTransformerConfig

    pr = models.add_parser("prior", help="a (gated) PixelCNN or transformer prior over a VQ-VAE run's code grids",
                           description="Encode a VQ-VAE run's images into code grids and train an "
                                       "autoregressive prior on them (categorical over the K codes).")
    pr.add_argument("vqvae", type=Path, metavar="RUN", help="the VQ-VAE run folder")
    pr.add_argument("--out", type=Path, required=True, help="run folder of the prior")
    pr.add_argument("--plain", action="store_true", help="plain PixelCNN instead of the gated one")
    pr.add_argument("--transformer", action="store_true", help="a causal transformer over the tiles instead")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    _add_config_flags(pr, GatedPixelCNNConfig, skip=PRIOR_FIXED, title="prior options")
    _add_config_flags(pr, TileTransformerConfig, skip=_shared_fields(TileTransformerConfig, GatedPixelCNNConfig),
                      title="transformer prior options (with --transformer)")
    _add_config_flags(pr, TrainConfig, title="training options", skip=("kl_warmup_epochs",))

    ev = sub.add_parser("eval", help="test ELBO, importance-sampled NLL, bits/dim, reconstruction error",
                        description="Evaluate a run on a split. The importance-sampled NLL is printed with "
                                    "its standard error; the default k finishes in minutes on a CPU, "
                                    f"--nll-samples {LITERATURE_NLL_SAMPLES} is the literature's setting.")
    ev.add_argument("run", type=Path, help="the run folder")
    ev.add_argument("--nll-samples", type=int, default=DEFAULT_NLL_SAMPLES, metavar="K",
                    help=f"importance samples per example (default {DEFAULT_NLL_SAMPLES}; "
                         f"{LITERATURE_NLL_SAMPLES} for the literature's setting, ~10x longer)")
    ev.add_argument("--split", default="test", choices=("train", "test"), help="the split evaluated")
    ev.add_argument("--limit", type=int, help="evaluate the first N examples only")
    ev.add_argument("--batch-size", type=int, default=100, help="examples per forward pass (default 100)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    ev.add_argument("--json", type=Path, help="also write the results here (default RUN/eval-SPLIT-kK.json)")
    _add_compute_flags(ev)

    sa = sub.add_parser("sample", help="decode draws from the prior into an image grid (or arrays)")
    sa.add_argument("run", type=Path, help="the run folder")
    sa.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    sa.add_argument("--out", type=Path, help=".png grid, or .npy for the arrays (default RUN/samples.png)")
    sa.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    sa.add_argument("--label", type=int, help="the class to draw, for a conditional model (cvae)")
    _add_compute_flags(sa)

    rc = sub.add_parser("reconstruct", help="inputs beside their reconstructions")
    rc.add_argument("run", type=Path, help="the run folder")
    rc.add_argument("--out", type=Path, help=".png grid (default RUN/reconstructions.png)")
    rc.add_argument("-n", type=int, default=16, help="examples shown (default 16)")
    rc.add_argument("--split", default="test", choices=("train", "test"), help="where the examples come from")
    _add_compute_flags(rc)

    en = sub.add_parser("encode", help="write the codes (posterior means; VQ-VAE: code grids) of a data split to .npy")
    en.add_argument("run", type=Path, help="the run folder")
    en.add_argument("--data", help="default: the run's own data")
    en.add_argument("--split", default="test", choices=("train", "test", "all"), help="the split encoded")
    en.add_argument("--out", type=Path, help=".npy file for the (N, latent_dim) codes (default RUN/codes-SPLIT.npy)")
    en.add_argument("--labels-out", type=Path, help="also write the labels here (.npy)")
    _add_compute_flags(en)

    dn = sub.add_parser("denoise", help="corrupt a data split, reconstruct it, report PSNR and SSIM")
    dn.add_argument("run", type=Path, help="the run folder")
    dn.add_argument("--data", help="default: the run's own data")
    dn.add_argument("--split", default="test", choices=("train", "test", "all"), help="the split corrupted")
    dn.add_argument("--corruption", default="gaussian", choices=tuple(CORRUPTIONS),
                    help="the noise (default gaussian)")
    dn.add_argument("--level", type=float, default=0.3, help="noise std or corrupted fraction (default 0.3)")
    dn.add_argument("--limit", type=int, help="the first N examples only")
    dn.add_argument("--seed", type=int, default=0, help="seed of the corruption (default 0)")
    dn.add_argument("--out", type=Path, help=".png (clean / corrupted / denoised rows) or .npy (the denoised "
                                             "arrays) (default RUN/denoised-CORRUPTION.png)")
    dn.add_argument("-n", type=int, default=8, help="examples shown in the .png (default 8)")
    _add_compute_flags(dn)

    cp = sub.add_parser("compare", help="autoencoder variants and PCA side by side at one code size",
                        description="Train each autoencoder variant (PCA is fitted) and measure it on the test "
                                    f"split. The defaults ({COMPARE_EPOCHS} epochs on the first {COMPARE_TRAIN_LIMIT} "
                                    f"training examples) finish in minutes on a CPU; {FULL_SETTING} is the full "
                                    "setting of benchmarks/autoencoders.py (the whole training split, tens of "
                                    "minutes on a CPU).")
    cp.add_argument("--data", default="mnist", help="a named set or a labelled file (default mnist)")
    cp.add_argument("--variants", default="pca,linear,basic,conv,denoising,dropout,sparse-l1,sparse-kl",
                    help="comma-separated, from: " + ", ".join(VARIANTS) + " (default: %(default)s)")
    cp.add_argument("--code-size", type=int, default=32, help="code (latent) size of every variant (default 32)")
    cp.add_argument("--epochs", type=int, default=COMPARE_EPOCHS,
                    help=f"training epochs per autoencoder (default {COMPARE_EPOCHS}; 10 in the full setting)")
    cp.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    cp.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    cp.add_argument("--noise-levels", default="0.1,0.3,0.5", help="Gaussian noise stds of the denoising test")
    cp.add_argument("--train-limit", type=int, default=COMPARE_TRAIN_LIMIT, metavar="N",
                    help=f"train on the first N training examples (default {COMPARE_TRAIN_LIMIT}, minutes on a CPU; "
                         "0 for the whole training split)")
    cp.add_argument("--seed", type=int, default=0, help="seed of every variant (default 0)")
    cp.add_argument("--out", type=Path, required=True, help="folder for comparison.md/.csv and figures")
    _add_compute_flags(cp)

    sc = sub.add_parser("scorecard", help="the lectures' table of criteria, measured, for several runs")
    sc.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders trained on one data set")
    sc.add_argument("-n", type=int, default=SCORECARD_N,
                    help=f"samples per model and real images (default {SCORECARD_N}, minutes on a CPU; "
                         f"10000 for the literature's N)")
    sc.add_argument("--extractor", help="shipped feature extractor (mnist, fashion-mnist, cifar10; default: the runs' data)")
    sc.add_argument("--seed", type=int, default=0, help="seed of samples and subsets (default 0)")
    sc.add_argument("--nll-samples", type=int, default=100,
                    help="importance samples per test example for models without an exact likelihood (default 100)")
    sc.add_argument("--nll-limit", type=int, default=1000, help="test examples in the likelihood row (default 1000)")
    sc.add_argument("--out", type=Path, required=True, help="folder for scorecard.md and scorecard.html")
    _add_compute_flags(sc)

    rp = sub.add_parser("report", help="one self-contained HTML page: config, metrics, figures; "
                        "several runs: a side-by-side comparison")
    rp.add_argument("run", type=Path, nargs="+", metavar="RUN", help="a run folder, or several to compare")
    rp.add_argument("--out", type=Path, help="default RUN/report.html for one run; required for several")
    rp.add_argument("--seed", type=int, default=0, help="seed of the samples drawn (default 0)")
    _add_compute_flags(rp)

    ru = sub.add_parser("runs", help="list the runs under a folder: model, data, progress, key metrics, status",
                        description="Every run folder under DIR (finished, interrupted and resumable, not "
                                    "started, or damaged with the reason), as a table.")
    ru.add_argument("dir", type=Path, nargs="?", default=Path("runs"), metavar="DIR",
                    help="folder searched for runs (default: runs)")

    ex = sub.add_parser("explore", help="latent-space figures: traverse, manifold, interpolate, scatter, "
                        "attribute, classes, activity")
    kinds = ex.add_subparsers(dest="kind", required=True, parser_class=_Parser)

    def explore_parser(name: str, help: str, figure: bool = True) -> argparse.ArgumentParser:
        e = kinds.add_parser(name, help=help, description=help)
        e.add_argument("run", type=Path, help="the run folder")
        if figure:
            e.add_argument("--out", type=Path, help=f".png figure (default RUN/explore-{name}.png)")
        _add_compute_flags(e)
        return e

    e = explore_parser("traverse", "decode one latent dimension swept while the others stay fixed")
    e.add_argument("--dims", type=_parse_ints, help="dimensions to sweep (default: the most active by KL)")
    e.add_argument("--num-dims", type=int, default=8, help="how many of the most active (default 8)")
    e.add_argument("--steps", type=int, default=9, help="values per dimension (default 9)")
    e.add_argument("--span", type=float, default=3.0, help="sweep from -SPAN to SPAN prior std (default 3)")
    e.add_argument("--label", type=int, help="the class, for a conditional model")
    e.add_argument("--example", type=int, help="hold the other dimensions at this test example's code "
                   "(default: the prior mean)")
    e = explore_parser("manifold", "decode the grid Phi^-1(u) on a 2-D latent plane (Kingma & Welling)")
    e.add_argument("-n", type=int, default=20, help="grid size (default 20)")
    e.add_argument("--plane", type=_parse_ints, help="two dimensions I,J (required above 2 dimensions)")
    e.add_argument("--label", type=int, help="the class, for a conditional model")
    e = explore_parser("interpolate", "linear and spherical paths between encoded inputs")
    e.add_argument("--pairs", type=int, default=4, help="pairs of test inputs (default 4)")
    e.add_argument("--steps", type=int, default=10, help="points along each path (default 10)")
    e.add_argument("--split", default="test", choices=("train", "test"), help="where the inputs come from")
    e = explore_parser("scatter", "codes coloured by label (PCA above 2-D) beside PCA of the pixels")
    e.add_argument("--split", default="test", choices=("train", "test"), help="the split encoded")
    e.add_argument("--limit", type=int, default=5000, help="examples shown (default 5000)")
    e = explore_parser("attribute", "move encoded inputs along mean(z|attribute) - mean(z|not)")
    e.add_argument("--positive", type=int, help="the class that has the attribute")
    e.add_argument("--negative", type=int, help="the class without it (default: all other classes)")
    e.add_argument("--mask", type=Path, help=".npy of booleans, one per example of the split (instead of a class)")
    e.add_argument("--strengths", default="-3,-2,-1,0,1,2,3", help="multiples of the vector added (comma-separated)")
    e.add_argument("-n", type=int, default=6, help="inputs shown (default 6)")
    e.add_argument("--split", default="test", choices=("train", "test"), help="the split used")
    e.add_argument("--limit", type=int, default=5000, help="examples the vector is estimated from")
    e = explore_parser("classes", "prior samples, one row per class (conditional models)")
    e.add_argument("--per-class", type=int, default=10, help="samples per class (default 10)")
    e.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    e = explore_parser("activity", "KL per latent dimension and active units (Burda et al. 2016), printed",
                       figure=False)
    e.add_argument("--limit", type=int, default=2000, help="test examples measured (default 2000)")

    dt = sub.add_parser("detect", help="outlier detectors: fit one on data, score data with it")
    dkinds = dt.add_subparsers(dest="action", required=True, parser_class=_Parser)
    df = dkinds.add_parser("fit", help="train a detector (features standardised on these data)",
                           description="Train an outlier detector: a VAE or autoencoder on the given rows, "
                                       "scored by --score; or, with --run, an image detector on a trained "
                                       "run's model. Writes a folder (JSON + safetensors).")
    df.add_argument("--data", help="named set or .npy/.npz/.csv/IDX file (images are flattened); with --run: "
                    "the in-distribution images to fit on (default: the run's training images)")
    df.add_argument("--run", type=Path, help="image detector on this trained run's model (--score: combined "
                    "(default), nll, complexity, typicality, likelihood-ratio, orientation, reconstruction, mahalanobis)")
    df.add_argument("--background", type=Path, help="with --run: a background run (trained with "
                    "--input-mutation) for the likelihood-ratio score")
    df.add_argument("--limit", type=int, default=10000, help="with --run: at most this many images to fit on")
    df.add_argument("--split", default="all", choices=("train", "test", "all"), help="the rows fitted on")
    df.add_argument("--label-column", help="CSV column holding labels (left out of the features, and "
                                           "remembered: `detect score` leaves it out too)")
    df.add_argument("--model", default="vae", choices=("vae", "ae"), help="the generative model (default vae)")
    df.add_argument("--score", default=None, help="vae: nll, elbo, typicality, mahalanobis, reconstruction, "
                    "isolation; ae: reconstruction, mahalanobis, isolation; several joined by + are combined "
                    "(default: vae nll+isolation, ae reconstruction)")
    df.add_argument("--contamination", type=float, default=0.1, help="share of training rows flagged (0, 0.5]")
    df.add_argument("--latent-dim", type=int, help="default: min(8, features // 2)")
    df.add_argument("--hidden", type=_parse_ints, default=(64, 32), help="MLP widths (default 64,32)")
    df.add_argument("--epochs", default=None, help="an integer or auto (default: the detector's)")
    df.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    df.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 0.001)")
    df.add_argument("--num-samples", type=int, default=64, help="importance samples of the nll score")
    df.add_argument("--scaling", default=None, choices=("standard", "power", "quantile", "minmax", "none"),
                    help="default: the detector's (power, i.e. Yeo-Johnson, for vae; standard for ae)")
    df.add_argument("--seed", type=int, default=0, help="seed of the fit (default 0)")
    df.add_argument("--out", type=Path, required=True, help="detector folder to write")
    _add_compute_flags(df)
    ds = dkinds.add_parser("score", help="score rows with a fitted detector; CSV out (higher = more abnormal)")
    ds.add_argument("detector", type=Path, help="the detector folder (from detect fit)")
    ds.add_argument("--data", required=True, help="rows with the columns the detector was fitted on")
    ds.add_argument("--split", default="all", choices=("train", "test", "all"), help="the rows scored")
    ds.add_argument("--label-column", help="CSV column holding labels (reported, and AUROC if they are 0/1; "
                                           "default: the one given at fit, when the file has it)")
    ds.add_argument("--out", type=Path, required=True, help=".csv: row, score, outlier (0/1)[, label]")
    _add_compute_flags(ds)

    da = sub.add_parser("data", help="inspect a data source, or pack it into shard stores")
    dkind = da.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    for verb, text in (("info", "count, shape, dtype, classes and statistics, computed streaming"),
                       ("pack", "convert a source (images, arrays, a named set) into OUT/train and "
                                "OUT/test shard stores, read fast by later runs")):
        d = dkind.add_parser(verb, help=text, description=text)
        d.add_argument("source", help="a named set (" + ", ".join(NAMED_DATASETS) + ") or a path: "
                       ".npy/.npz/.csv/IDX file, shard store, folder or .zip of images")
        if verb == "pack":
            d.add_argument("out", type=Path, help="folder to create (an interrupted pack resumes)")
            d.add_argument("--rows-per-shard", type=int, default=65536, help="examples per shard file (default 65536)")
            d.add_argument("--dtype", choices=("uint8", "float16", "bfloat16", "float32"),
                           help="stored dtype (default: uint8 for 8-bit images, else float32)")
        else:
            d.add_argument("--split", choices=("train", "test", "all"), help="default: both splits")
            d.add_argument("--verify", action="store_true", help="also check a shard store's checksums")
        _add_image_flags(d)
        d.add_argument("--test-fraction", type=float, default=0.1,
                       help="share held out as test split when the source has none (default 0.1)")
        d.add_argument("--no-progress", action="store_true", help="no progress bar")

    sae = sub.add_parser("sae", help="sparse autoencoders on a transformer's activations: harvest, train, "
                         "eval, browse, steer")
    skind = sae.add_subparsers(dest="sae_command", required=True, parser_class=_Parser)
    h = skind.add_parser("harvest", help="run a language model over a corpus and store a hook point's "
                         "activations (one row per token) in a shard store")
    h.add_argument("--model", required=True, help="stories260K (found in $ZSPACE_DATA/models), minilm, "
                   "or a folder (llama2.c stories260K files or a Hugging Face model)")
    h.add_argument("--hook", required=True, help="module path or alias: resid_post.L, mlp_out.L, attn_out.L")
    h.add_argument("--corpus", required=True, type=Path, help="UTF-8 text file (documents split on "
                   "<|endoftext|> or blank lines)")
    h.add_argument("--out", required=True, type=Path, help="shard store folder to create (or continue)")
    h.add_argument("--context", type=int, default=128, help="tokens per window (default 128)")
    h.add_argument("--max-tokens", type=int, help="stop after this many rows")
    h.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    h.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"),
                   help="stored dtype of the activations (default float16)")
    h.add_argument("--keep-special", action="store_true", help="also store BOS/CLS/SEP positions")
    h.add_argument("--resume", action="store_true", help="continue an interrupted harvest into --out")
    h.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    _add_compute_flags(h, progress=False)
    t = skind.add_parser("train", help="train a sparse autoencoder on a harvested store")
    t.add_argument("store", type=Path, help="shard store of activations")
    t.add_argument("--out", required=True, type=Path, help="run folder to create")
    t.add_argument("--kind", default="topk", choices=SAE_KINDS, help="the sparsity mechanism (default topk)")
    t.add_argument("--expansion", type=int, default=8, help="width = expansion x d (default 8)")
    t.add_argument("--width", type=int, help="number of features (overrides --expansion)")
    t.add_argument("-k", type=int, default=32, help="topk/batchtopk: active features per token (default 32)")
    t.add_argument("--test-fraction", type=float, default=0.01, help="share of rows held out (default 0.01)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    _add_config_flags(t, SAEConfig, skip=("input_shape", "width", "kind", "k"), title="SAE options")
    _add_config_flags(t, TrainConfig, title="training options")
    e = skind.add_parser("eval", help="FVU, L0, dead fraction, density histogram; with --corpus the "
                         "splice fidelity (CE loss recovered and KL, or MiniLM embedding agreement)")
    e.add_argument("run", type=Path, help="the SAE run folder")
    e.add_argument("--corpus", type=Path, help="text to splice the reconstruction into the model on")
    e.add_argument("--model", help="the language model (default: the one named in the store)")
    e.add_argument("--limit", type=int, default=200_000, help="held-out rows evaluated (default 200000)")
    e.add_argument("--fidelity-tokens", type=int, default=20_000,
                   help="tokens the splice fidelity is measured on (default 20000)")
    e.add_argument("--json", type=Path, help="also write the results here")
    _add_compute_flags(e)
    from .sae.cli_parts import add_browse_steer_parsers

    add_browse_steer_parsers(skind)
    _add_compute_flags(skind.choices["browse"], progress=False)
    _add_compute_flags(skind.choices["steer"])

    de = sub.add_parser("demo", help="train a VAE on Fashion-MNIST, evaluate it, write figures")
    de.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    de.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    de.add_argument("--nll-samples", type=int, default=500, help="importance samples of the evaluation (default 500)")
    de.add_argument("--data", default="fashion-mnist", help="a named set (default fashion-mnist)")
    _add_compute_flags(de)
    _add_classify_parser(sub)
    return p


def run() -> None:
    """The ``zspace`` executable: malloc set to keep freed memory, then ``main``'s status as the
    exit code. A torchrun worker leaves its process group and exits without the interpreter's
    finalisation (``exit_process``)."""
    import torch.distributed as td

    from .core.compute import keep_freed_memory
    from .training.distributed import exit_process

    keep_freed_memory()   # a process-wide setting, so here and not in main: see its docstring
    try:
        code = main()
    except BaseException as e:
        if not (td.is_available() and td.is_initialized()):
            raise
        if isinstance(e, SystemExit) and (e.code is None or isinstance(e.code, int)):
            code = e.code or 0
        else:   # what the interpreter would print before ending
            sys.excepthook(type(e), e, e.__traceback__)
            code = EXIT_INTERNAL_ERROR
    exit_process(code)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv          # anywhere on the line: the full traceback of an unexpected error
    argv = [v for v in argv if v != "--debug"]
    args = build_parser().parse_args(argv)
    args.argv = argv   # `train --nproc N` relaunches it
    from .core.progress import showing

    try:
        _check_outputs(args)
        _set_compute(args)
        with showing(not getattr(args, "no_progress", False)):
            return COMMANDS[args.command](args) or 0
    except ZspaceError as e:
        if not getattr(e, "secondary", False):   # raised alike on every rank: rank 0 says it
            sys.stderr.write(f"zspace: error: {_one_line(e)}\n")
        return EXIT_USER_ERROR
    except OSError as e:  # unwritable output folder, disk full...
        sys.stderr.write(f"zspace: error: {e.strerror or _one_line(e)}: {e.filename or ''}\n")
        return EXIT_USER_ERROR
    except MemoryError:
        sys.stderr.write("zspace: error: not enough memory for this request; ask for less "
                         "(fewer samples, a smaller grid or model, a smaller --batch-size)\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("zspace: interrupted; the last completed epoch's checkpoint is kept\n")
        return 130
    except Exception as e:
        if isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or _is_oom(e)):
            sys.stderr.write(f"zspace: error: not enough memory for this request ({_one_line(e)}); ask for "
                             f"less (fewer samples, a smaller grid or model, a smaller --batch-size)\n")
            return EXIT_USER_ERROR
        if debug:
            raise
        sys.stderr.write(f"zspace: internal error: {type(e).__name__}: {_one_line(e)} (a bug in zspace; please "
                         f"report it with the traceback that --debug prints)\n")
        return EXIT_INTERNAL_ERROR


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text or type(e).__name__)[:500]


# Outputs of verbs that read a run or detector: none may land on that run's (or any run's) own
# files. Folders that a verb creates itself (train --out, data pack, detect fit) check themselves.
_OUTPUT_FLAGS = ("json", "labels_out")
_FOLDER_VERBS = {"train", "data", "demo", "sae"}


def _check_outputs(a) -> None:
    from .training.run import check_output_path

    seed = getattr(a, "seed", None)
    if seed is not None and not -2**63 <= seed < 2**63:   # torch and numpy take 64-bit seeds
        raise ConfigError(f"--seed must fit in 64 bits, got {seed}")

    names = _OUTPUT_FLAGS if a.command in _FOLDER_VERBS or getattr(a, "action", None) == "fit" \
        else _OUTPUT_FLAGS + ("out",)
    for name in names:
        value = getattr(a, name, None)
        if isinstance(value, Path):
            check_output_path(value)


def _set_compute(a) -> None:
    """--device checked and --threads (or the default that does not oversubscribe) set, for the
    verbs that compute outside a trainer (train and sae train carry them in their TrainConfig)."""
    from .core.compute import resolve_device, set_threads

    if a.command == "train" or getattr(a, "sae_command", None) == "train" or not hasattr(a, "threads"):
        return
    if getattr(a, "device", None) is not None:
        resolve_device(a.device)
    set_threads(a.threads)


def _open_run(a, path: Path | None = None):
    """The run named on the command line, loaded onto --device."""
    from .training import load_run

    return load_run(path if path is not None else a.run, map_location=getattr(a, "device", None) or "cpu")


def _default_out(a, name: str) -> Path:
    """--out, or RUN/NAME: a verb that reads one run writes into that run's folder by default."""
    return a.out if a.out is not None else Path(a.run) / name


def cmd_train(a) -> None:
    from . import models as _models
    from .training import TrainConfig, resume, train

    if a.model == "prior":
        from .models.pixelcnn import GatedPixelCNNConfig
        from .prior import train_prior

        from .models.tile_transformer import TileTransformerConfig

        opts = _given(a, GatedPixelCNNConfig, skip=PRIOR_FIXED)
        if a.plain and "num_classes" in opts:
            raise ConfigError("--num-classes needs the gated prior (drop --plain)")
        kind = "tile-transformer" if a.transformer else ("pixelcnn" if a.plain else "gated-pixelcnn")
        theirs = _given(a, TileTransformerConfig, skip=PRIOR_FIXED)
        mine, other = (theirs, opts) if a.transformer else (opts, theirs)
        stray = sorted(set(other) - set(mine))
        if a.transformer and a.plain or stray:
            raise ConfigError(f"{', '.join(_flag(f) for f in stray) or '--plain'} does not apply to the "
                              f"{kind} prior")
        run = train_prior(a.vqvae, a.out, prior_model=kind, config=TrainConfig(**_given(a, TrainConfig)),
                          progress=not a.no_progress, overwrite=a.overwrite, **mine)
        print(f"trained {run.describe()}: epoch {run.history()[-1]['epoch']}")
        print(f"run folder: {run.path}")
        return
    if a.nproc is not None:
        from .training.launch import launch_local

        code = launch_local(a.nproc, a.argv, device=a.device or "cpu", threads=a.threads)
        if code is not None:
            return code
    cls = _models.MODELS[a.model]
    model_opts = _given(a, cls.config_class, skip=("input_shape",))
    train_opts = _given(a, TrainConfig)
    data_opts = {k: v for k, v in (("data", a.data), ("preprocessing", a.preprocess),
                                   ("test_fraction", a.test_fraction), ("label_column", a.label_column),
                                   ("image_size", a.image_size), ("image_channels", a.image_channels),
                                   ("skip_bad", True if a.skip_bad else None)) if v is not None}
    if a.resume is not None:
        if a.config is not None:
            raise ConfigError("--resume continues a run with its stored config; leave out --config")
        extra = set(model_opts) | (set(train_opts) - {"epochs", "steps", "threads", "workers"})
        extra |= {"preprocess" if k == "preprocessing" else k for k in data_opts}
        extra |= {"out"} if a.out is not None else set()
        extra |= {"overwrite"} if a.overwrite else set()
        if extra:
            raise ConfigError(f"--resume continues a run with its stored config; only --epochs/--steps, "
                              f"--threads and --workers may change (got {', '.join(_flag(e) for e in sorted(extra))})")
        from .training.run import read_run_config

        stored_cfg = read_run_config(a.resume) if a.resume.is_dir() else None
        stored = stored_cfg["model"].get("name") if stored_cfg else None
        if stored is not None and stored != a.model:
            raise ConfigError(f"{a.resume} holds a {stored!r} run, not {a.model!r}; "
                              f"use `zspace train {stored} --resume {a.resume}`")
        before = (stored_cfg or {}).get("environment", {}).get("threads")
        if a.threads is not None and before is not None and a.threads != before:
            sys.stderr.write(f"zspace: note: the run trained on {before} thread(s), now {a.threads}: the "
                             f"result will not be bit-identical to an uninterrupted run\n")
        run = resume(a.resume, epochs=train_opts.get("epochs"), steps=train_opts.get("steps"),
                     threads=train_opts.get("threads"), workers=train_opts.get("workers"),
                     progress=not a.no_progress)
    else:
        if a.config is not None:   # the file first, the flags given on top
            from .training.config_file import load_run_options

            file = load_run_options(a.config)
            if file.model is not None and file.model != a.model:
                raise ConfigError(f"{a.config} describes a {file.model!r} model; use `zspace train {file.model} "
                                  f"--config {a.config}`")
            model_opts = {**file.model_options, **model_opts}
            train_opts = {**file.train, **train_opts}
            data_opts = {**file.data, **data_opts}
        if a.out is None:
            raise ConfigError("give --out RUN_FOLDER (or --resume RUN)")
        fraction = data_opts.pop("test_fraction", 0.1)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"--test-fraction must be between 0 and 1, got {fraction}")
        config = TrainConfig(**train_opts)
        run = train(a.model, data_opts.pop("data", "fashion-mnist"), out=a.out, config=config,
                    progress=not a.no_progress, overwrite=a.overwrite, test_fraction=fraction,
                    **data_opts, **model_opts)
    from .training.launch import is_main_process

    if not is_main_process():   # under torchrun rank 0 alone reports
        return
    last = run.history()[-1]
    print(f"trained {run.describe()}: epoch {last['epoch']}, step {last['step']}, "
          f"{last['wall_seconds']:.0f} s")
    print(f"run folder: {run.path}")


def _check_counts(a, *names: str) -> None:
    """Each of these options, where the command has and was given it, must be >= 1."""
    for name in names:
        value = getattr(a, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"{_flag(name) if len(name) > 1 else '-' + name} must be >= 1, got {value}")


MAX_FIGURE_SIDE = 200   # images along one side of a figure grid


def _check_suffix(path: Path, allowed: tuple[str, ...]) -> None:
    if path.suffix.lower() not in allowed:
        raise ConfigError(f"{path}: output must end in {', '.join(allowed)}")


def cmd_eval(a) -> None:
    from .tasks import LITERATURE_NLL_SAMPLES, evaluate_run, write_evaluation

    run = _open_run(a)
    res = evaluate_run(run, a.split, nll_samples=a.nll_samples, batch_size=a.batch_size, limit=a.limit,
                       seed=a.seed)
    rep = res.likelihood
    if rep is not None:
        print(f"{run.describe()}, {a.split} split, {rep.num_examples} examples")
        print(f"  ({res.meaning.kind}: {res.meaning.note})")
        if res.exact:
            print(f"  NLL (exact)     {rep.nll:10.3f} ± {rep.nll_std_err:.3f} nats")
        else:
            print(f"  ELBO            {rep.elbo:10.3f} nats  (reconstruction {rep.rec:.3f}, KL {rep.kl:.3f})")
            print(f"  NLL (IS, k={rep.num_samples:<5d}) {rep.nll:8.3f} ± {rep.nll_std_err:.3f} nats")
        print(f"  bits/dim        {rep.bits_per_dim:10.4f} ± {res.bits_per_dim_std_err:.4f}")
        print(f"  (± one standard error of the mean over the {rep.num_examples} examples; {rep.seconds:.0f} s)")
        if not res.exact and rep.num_samples < LITERATURE_NLL_SAMPLES:
            print(f"  k = {rep.num_samples} gives a looser bound than the literature's k = "
                  f"{LITERATURE_NLL_SAMPLES}: --nll-samples {LITERATURE_NLL_SAMPLES} for that setting")
    if res.reconstruction_mse is not None:
        print(f"  reconstruction MSE per dimension {res.reconstruction_mse:.5f}")
    res.run = str(a.run)
    print(f"results: {write_evaluation(res, a.json, run.path)}")


def cmd_sample(a) -> None:
    import numpy as np

    from .report.figures import as_images, save_image_grid
    from .tasks import sample_run

    if a.n < 1:
        raise ConfigError(f"-n must be >= 1, got {a.n}")
    a.out = _default_out(a, "samples.png")
    _check_suffix(a.out, (".png", ".pdf", ".svg", ".npy"))
    run = _open_run(a)
    _check_memory(a.n * 4 * int(np.prod(run.model.config.input_shape)), f"{a.n} samples")
    x = sample_run(run, a.n, label=a.label, seed=a.seed).x
    if a.out.suffix == ".npy":
        save_npy_atomic(a.out, x.numpy())
    else:
        images = as_images(x, tuple(x.shape[1:]))
        if images is None:
            raise ConfigError("samples are not images; write them with --out FILE.npy")
        cls = f", class {a.label}" if a.label is not None else ""
        save_image_grid(images, a.out, f"{run.describe()}\n{a.n} prior samples{cls}, seed {a.seed}")
    print(f"{a.n} samples: {a.out}")


def cmd_reconstruct(a) -> None:
    from .report.figures import save_reconstructions

    if a.n < 1:
        raise ConfigError(f"-n must be >= 1, got {a.n}")
    a.out = _default_out(a, "reconstructions.png")
    _check_suffix(a.out, (".png", ".pdf", ".svg"))
    path = save_reconstructions(_open_run(a), a.out, n=a.n, split=a.split, required=True)
    if path is None:
        raise ConfigError("the run's data are not images; use `zspace encode` instead")
    print(f"reconstructions: {path}")


def cmd_encode(a) -> None:
    from .data import load_dataset
    from .tasks import encode_run

    a.out = _default_out(a, f"codes-{a.split}.npy")
    _check_suffix(a.out, (".npy",))
    if a.labels_out is not None:
        _check_suffix(a.labels_out, (".npy",))
    codes = encode_run(_open_run(a), a.split, data=load_dataset(a.data) if a.data else None)
    save_npy_atomic(a.out, codes.z)
    print(f"codes {codes.z.shape}: {a.out}")
    if a.labels_out is not None:
        if codes.y is None:
            raise ConfigError("the data have no labels")
        save_npy_atomic(a.labels_out, codes.y)
        print(f"labels: {a.labels_out}")


def _check_memory(nbytes: int, what: str, copies: int = 4) -> None:
    """Refuses a request whose arrays (``copies`` of ``nbytes``: inputs, outputs, images) would
    not fit in the memory this machine has free."""
    from .core.io import available_memory

    free = available_memory()
    if free is not None and nbytes * copies > free:
        raise ConfigError(f"{what} need about {nbytes * copies / 2**30:.1f} GiB, more than the "
                          f"{free / 2**30:.1f} GiB of memory free; ask for fewer")


def _parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated numbers, got {text!r}") from None


def cmd_denoise(a) -> None:
    from .data import load_dataset
    from .report.figures import as_images, save_labelled_rows
    from .tasks import denoise_run

    a.out = _default_out(a, f"denoised-{a.corruption}.png")
    _check_suffix(a.out, (".png", ".npy"))
    _check_counts(a, "n", "limit")
    if not a.level >= 0 or a.level == float("inf"):
        raise ConfigError(f"--level must be a finite number >= 0, got {a.level}")
    run = _open_run(a)
    res = denoise_run(run, a.corruption, a.level, split=a.split, limit=a.limit, seed=a.seed,
                      data=load_dataset(a.data) if a.data else None)
    clean, noisy, out, corrupt = res.clean, res.noisy, res.denoised, res.corruption
    images = as_images(clean, run.model.config.input_shape) is not None
    print(f"{run.describe()}; {corrupt!r} on {len(clean)} {a.split} examples")
    for name, db in res.psnr.items():
        print(f"  {name:16s} PSNR {db:6.2f} dB" + (f"   SSIM {res.ssim[name]:.4f}" if name in res.ssim else ""))
    if a.out.suffix == ".npy":
        save_npy_atomic(a.out, out.numpy())
    else:
        shape = run.model.config.input_shape
        if not images:
            raise ConfigError("the data are not images; write the denoised arrays with --out FILE.npy")
        k = min(a.n, len(clean))
        rows = [(lbl, as_images(t[:k], shape)) for lbl, t in (("clean", clean), ("corrupted", noisy), ("denoised", out))]
        save_labelled_rows(rows, a.out, f"{run.describe()}: {corrupt!r}")
    print(f"denoised: {a.out}")


def cmd_compare(a) -> None:
    from .compare import FULL_SETTING, compare

    variants = tuple(v.strip() for v in a.variants.split(",") if v.strip())
    if a.code_size < 1 or a.epochs < 1:
        raise ConfigError("--code-size and --epochs must be >= 1")
    if not variants:
        raise ConfigError("--variants names none; give pca and/or autoencoder presets, comma-separated")
    _check_counts(a, "batch_size")
    if a.train_limit < 0:
        raise ConfigError(f"--train-limit must be >= 0 (0: the whole training split), got {a.train_limit}")
    subset = (f"at most the first {a.train_limit} training examples" if a.train_limit
              else "the whole training split")
    full = a.train_limit == 0 and a.epochs >= 10
    print(f"compare: {len(variants)} variant(s), {a.epochs} epochs each, on {subset} of {a.data}"
          + ("" if full else f" ({FULL_SETTING} for the full setting, tens of minutes on a CPU)"), flush=True)
    compare(a.data, variants, code_size=a.code_size, epochs=a.epochs, out=a.out,
            noise_levels=_parse_floats(a.noise_levels, "--noise-levels"), batch_size=a.batch_size,
            lr=a.lr, seed=a.seed, train_limit=a.train_limit or None, device=a.device)
    print((a.out / "comparison.md").read_text().rstrip())
    print(f"comparison: {a.out / 'comparison.md'} (also comparison.csv, reconstructions.png, denoising.png)")


def cmd_scorecard(a) -> None:
    from .scorecard import scorecard
    from .core.io import write_text_atomic

    if a.n < 2:
        raise ConfigError(f"-n must be >= 2, got {a.n}")
    _check_counts(a, "nll_samples", "nll_limit")
    card = scorecard(a.runs, n=a.n, seed=a.seed, extractor=a.extractor, device=a.device,
                     nll_samples=a.nll_samples, nll_limit=a.nll_limit)
    write_text_atomic(a.out / "scorecard.md", card.markdown())
    write_text_atomic(a.out / "scorecard.html", card.html())
    print(card.markdown())
    print(f"scorecard: {a.out / 'scorecard.md'} and {a.out / 'scorecard.html'}")


def cmd_report(a) -> None:
    from .report import report

    print(f"{'report' if len(a.run) == 1 else 'comparison'}: {report(a.run, a.out, seed=a.seed, device=a.device)}")


def cmd_explore(a) -> None:
    import numpy as np

    from .models.capabilities import ContinuousCode
    from .report import latent_figures as lf

    if a.kind != "activity":
        a.out = _default_out(a, f"explore-{a.kind}.png")
        _check_suffix(a.out, (".png", ".pdf", ".svg"))
    _check_counts(a, "steps", "n", "pairs", "num_dims", "per_class", "limit")
    for name in ("steps", "n", "pairs", "num_dims", "per_class"):   # rows/columns of one figure
        value = getattr(a, name, None)
        if value is not None and value > MAX_FIGURE_SIDE:
            raise ConfigError(f"{_flag(name) if len(name) > 1 else '-' + name} {value} is too many for one "
                              f"figure (at most {MAX_FIGURE_SIDE})")
    if getattr(a, "span", None) is not None and not 0 < a.span < float("inf"):
        raise ConfigError(f"--span must be a finite number > 0, got {a.span}")
    run = _open_run(a)
    if a.kind != "classes" and not isinstance(run.model, ContinuousCode):
        raise ConfigError(f"{run.describe()} has no continuous latent code to explore")
    if a.kind == "activity":
        act = lf.activity(run, limit=a.limit)
        print(f"{run.describe()}: {act.num_active} of {len(act.kl)} dimensions active "
              f"(A > {act.threshold:g}), on {act.num_examples} test examples")
        for d in act.ranked():
            print(f"  z{d:<4d} KL {act.kl[d]:8.4f} nats   A {act.variance[d]:.4g}")
        return
    if a.kind == "traverse":
        path = lf.save_traversal(run, a.out, dims=a.dims, num_dims=a.num_dims, steps=a.steps, span=a.span,
                                 label=a.label, example=a.example)
    elif a.kind == "manifold":
        path = lf.save_manifold(run, a.out, n=a.n, plane=a.plane, label=a.label)
    elif a.kind == "interpolate":
        path = lf.save_interpolations(run, a.out, pairs=a.pairs, steps=a.steps, split=a.split)
    elif a.kind == "scatter":
        path = lf.save_scatter(run, a.out, split=a.split, limit=a.limit)
    elif a.kind == "classes":
        path = lf.save_class_samples(run, a.out, per_class=a.per_class, seed=a.seed)
    else:
        if (a.mask is None) == (a.positive is None):
            raise ConfigError("give the attribute either as a class (--positive) or as a --mask file")
        mask = None
        if a.mask is not None:
            from .core.io import load_npy

            mask = np.asarray(load_npy(a.mask, ConfigError))
        path = lf.save_attribute(run, a.out, positive=a.positive, negative=a.negative, mask=mask,
                                 strengths=_parse_floats(a.strengths, "--strengths"), n=a.n, split=a.split,
                                 limit=a.limit)
    print(f"{a.kind}: {path}")


def cmd_detect(a) -> None:
    from .detect import AutoencoderOutlierDetector, VAEOutlierDetector, detector_rows, load_detector, save_detector

    if a.action == "fit" and a.run is not None:
        from .image_detect import fit_run_detector

        _check_counts(a, "num_samples", "limit")
        images = detector_rows(a.data, a.split, a.label_column)[0][:a.limit] if a.data else None
        det = fit_run_detector(a.run, images, background_dir=a.background, limit=a.limit,
                               score_type=a.score or "combined", num_samples=a.num_samples,
                               contamination=a.contamination, seed=a.seed, device=a.device)
        save_detector(det, a.out)
        print(f"image detector: {det.describe()}; fitted on {len(det.decision_scores_)} images; "
              f"threshold {det.threshold_:.4g} flags {det.labels_.mean():.1%} of them")
        print(f"detector: {a.out}")
        return
    if a.action == "fit":
        _check_counts(a, "batch_size", "num_samples")
        if a.data is None:
            raise ConfigError("detect fit needs --data (rows to fit on) or --run (an image model)")
        x, _ = detector_rows(a.data, a.split, a.label_column)
        epochs = int(a.epochs) if a.epochs is not None and a.epochs.isdigit() else a.epochs   # or "auto"
        given = {"score_type": None if a.score is None else (tuple(a.score.split("+")) if "+" in a.score else a.score),
                 "epochs": epochs, "scaling": a.scaling}
        cls = VAEOutlierDetector if a.model == "vae" else AutoencoderOutlierDetector
        det = cls(**{k: v for k, v in given.items() if v is not None}, latent_dim=a.latent_dim, hidden=a.hidden,
                  batch_size=a.batch_size, lr=a.lr, num_samples=a.num_samples, contamination=a.contamination,
                  random_state=a.seed, threads=a.threads, device=a.device)
        det.fit(x)
        save_detector(det, a.out, label_column=a.label_column)
        score = det.score_type if isinstance(det.score_type, str) else "+".join(det.score_type)
        print(f"{a.model} detector, score {score}, {det.epochs_} epochs, fitted on {len(x)} rows x {x.shape[1]} "
              f"features; threshold {det.threshold_:.4g} flags {det.labels_.mean():.1%} of them")
        print(f"detector: {a.out}")
        return
    _check_suffix(a.out, (".csv",))
    from .core.io import write_text_atomic
    from .tasks import score_rows

    det = load_detector(a.detector, device=a.device)
    x, y = detector_rows(a.data, a.split, a.label_column, detector=det)
    rows = score_rows(det, x, y)
    write_text_atomic(a.out, rows.csv(y))
    print(f"{len(x)} rows scored, {rows.flags.mean():.1%} above the threshold: {a.out}")
    if rows.separation is not None:
        m = rows.separation
        print(f"  against the labels (1 = outlier): AUROC {m['auroc']:.4f}, AUPRC {m['auprc']:.4f}, "
              f"FPR at 95% TPR {m['fpr95']:.4f}")


def cmd_demo(a) -> None:
    from .demo import run_demo

    run_demo(a.out, epochs=a.epochs, nll_samples=a.nll_samples, data=a.data, device=a.device)


def cmd_data(a) -> None:
    from .data import load_dataset
    from .data.info import pack, split_stats
    from .data.shards import ShardStore, is_store

    if a.image_size is not None and a.image_size < 1:
        raise ConfigError(f"--image-size must be at least 1, got {a.image_size}")
    splits = load_dataset(a.source, test_fraction=a.test_fraction, image_size=a.image_size,
                          channels=a.image_channels, skip_bad=a.skip_bad)
    if a.kind == "pack":
        if a.rows_per_shard < 1:
            raise ConfigError(f"--rows-per-shard must be at least 1, got {a.rows_per_shard}")
        stores = pack(splits, a.out, rows_per_shard=a.rows_per_shard, dtype=a.dtype, progress=not a.no_progress)
        for name, store in stores.items():
            print(f"{name}: {len(store)} examples of shape {store.example_shape} in "
                  f"{len(store.manifest['shards'])} shard(s), {a.out / name}")
        print(f"train with: --data {a.out}")
        return
    if a.verify:
        path = Path(a.source)
        stores = [path] if is_store(path) else [path / s for s in ("train", "test") if is_store(path / s)]
        if not stores:
            raise ConfigError(f"--verify checks shard stores; {a.source} is not one")
        for p in stores:
            ShardStore(p).verify()
            print(f"{p}: every shard matches its checksum")
    print(f"{splits.name} ({splits.source})")
    for name in ([a.split] if a.split else ["train", "test"]):
        for line in split_stats(splits.split(name), progress=not a.no_progress).lines():
            print(line)


def cmd_sae(a) -> None:
    from . import sae

    if a.sae_command == "harvest":
        lm = sae.load_language_model(a.model, device=a.device)
        store = sae.harvest(lm, a.hook, a.corpus, a.out, context=a.context, batch_size=a.batch_size,
                            max_tokens=a.max_tokens, dtype=a.dtype, exclude_special=not a.keep_special,
                            progress=not a.no_progress, resume=a.resume)
        print(f"{len(store)} activation rows of {store.example_shape[0]} dims from {a.hook} of {lm.name} "
              f"in {a.out} ({store.metadata.get('tokens_per_s', '?')} tokens/s)")
        return
    if a.sae_command == "train":
        from .models.sae import SAEConfig
        from .training import TrainConfig

        opts = _given(a, SAEConfig, skip=("input_shape", "width", "kind", "k"))
        train_opts = _given(a, TrainConfig)
        if a.expansion < 1:
            raise ConfigError(f"--expansion must be at least 1, got {a.expansion}")
        if a.width is not None and a.width < 1:
            raise ConfigError(f"--width must be at least 1, got {a.width}")
        from .data import load_dataset as _load

        d = _load(str(a.store), test_fraction=a.test_fraction).example_shape[-1]
        run = sae.train_sae(a.store, a.out, kind=a.kind, width=a.width, expansion=a.expansion, k=a.k,
                            config=sae.default_config(a.width or a.expansion * d, a.kind, **train_opts), test_fraction=a.test_fraction,
                            progress=not a.no_progress, overwrite=a.overwrite, **opts)
        last = run.history()[-1]
        print(f"trained {run.model.describe()}: step {last['step']}, test FVU {last.get('test_fvu', float('nan')):.4f}, "
              f"L0 {last.get('test_l0', float('nan')):.1f}, {last['wall_seconds']:.0f} s")
        print(f"run folder: {run.path}")
        return
    if a.sae_command == "eval":
        texts = sae.read_corpus(a.corpus) if a.corpus else None
        lm = sae.load_language_model(a.model, device=a.device) if a.model else None
        ev = sae.evaluate_sae(a.run, lm=lm, texts=texts, limit=a.limit, fidelity_tokens=a.fidelity_tokens,
                              device=a.device)
        print(f"{ev.tokens} held-out tokens: FVU {ev.fvu:.4f}, L0 {ev.l0:.2f}, dead {100 * ev.dead_fraction:.2f}% "
              f"(no firing in {ev.tokens} tokens)")
        for k, v in ev.fidelity.items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        if a.json:
            from .core.io import write_json_atomic

            write_json_atomic(a.json, ev.as_dict())
        return
    if a.sae_command in ("browse", "steer"):
        from .sae.cli_parts import run_browse, run_steer

        return (run_browse if a.sae_command == "browse" else run_steer)(a)
    raise ConfigError(f"unknown sae command {a.sae_command!r}")


def cmd_runs(a) -> None:
    from .training.runs import list_runs, runs_table

    found = list_runs(a.dir)
    if not found:
        print(f"no runs under {a.dir}")
        return
    print(runs_table(found, a.dir))
    counts = {}
    for r in found:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{len(found)} run(s): " + ", ".join(f"{n} {k}" for k, n in counts.items()))


COMMANDS = {"runs": cmd_runs, "sae": cmd_sae, "data": cmd_data, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
            "reconstruct": cmd_reconstruct, "encode": cmd_encode, "denoise": cmd_denoise,
            "compare": cmd_compare, "report": cmd_report, "scorecard": cmd_scorecard, "explore": cmd_explore, "detect": cmd_detect, "demo": cmd_demo}


# ---- zspace classify (issue 21): the generative classifier with a reject option -------------
def _add_classify_parser(sub) -> None:
    c = sub.add_parser("classify", help="label data by Bayes' rule over a class-conditional run (cvae, "
                       "gated-pixelcnn) and reject what p(x) says is unlike its training data",
                       description="p(y|x) = p(x|y) p(y) / p(x) with log p(x|y) for every class (importance-"
                       "sampled for a CVAE, exact for a gated PixelCNN); inputs whose score lies above the "
                       "threshold that keeps --coverage of the run's held-out test examples are rejected.")
    c.add_argument("run", type=Path, help="a class-conditional run folder")
    c.add_argument("--data", help="data to classify (default: the run's own; its first --calibrate test "
                   "examples set the threshold and are not classified again)")
    c.add_argument("--split", default="test", choices=("train", "test", "all"), help="the split classified (default test)")
    c.add_argument("--limit", type=int, help="the first N examples only")
    c.add_argument("--coverage", type=float, default=1.0, help="fraction of held-out inputs kept, in (0, 1] "
                   "(default 1: no rejection)")
    c.add_argument("--score", default="nll", choices=("nll", "complexity", "orientation", "combined"),
                   help="nll: -log p(x); complexity: NLL bits minus PNG bits (Serrà et al. 2020); orientation: "
                   "NLL minus the likelier mirror image's; combined: the largest of the three, each standardised "
                   "on the held-out examples")
    c.add_argument("--calibrate", type=int, default=1000, help="held-out test examples that set the threshold")
    c.add_argument("--nll-samples", type=int, default=100, help="importance samples per example and class (CVAE)")
    c.add_argument("--batch-size", type=int, default=100, help="examples per forward pass (default 100)")
    c.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    c.add_argument("--json", type=Path, help="write the summary here")
    c.add_argument("--out", type=Path, help="write one CSV row per example here (index,label,kept)")
    _add_compute_flags(c)


def cmd_classify(a) -> None:
    from .classify import classify_run, write_classification

    _check_counts(a, "limit", "calibrate", "nll_samples", "batch_size")
    if a.out is not None:
        _check_suffix(a.out, (".csv",))
    res = classify_run(_open_run(a), a.data, split=a.split, limit=a.limit, num_samples=a.nll_samples,
                       coverage=a.coverage, score=a.score, calibrate=a.calibrate, batch_size=a.batch_size,
                       seed=a.seed)
    for line in res.lines():
        print(line)
    for path in write_classification(res, a.json, a.out):
        print(f"wrote {path}")


COMMANDS["classify"] = cmd_classify

if __name__ == "__main__":
    sys.exit(main())
