"""Figures (matplotlib) for runs, latent-space figures, the self-contained HTML report and the
side-by-side comparison of several runs."""
from .comparison import report, write_comparison
from .figures import image_grid, save_image_grid, write_run_figures
from .html import write_report

__all__ = ["image_grid", "save_image_grid", "write_run_figures", "write_report", "write_comparison", "report"]
