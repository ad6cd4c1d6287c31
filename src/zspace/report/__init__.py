"""Figures (matplotlib) for runs; the HTML report comes later."""
from .figures import image_grid, save_image_grid, write_run_figures

__all__ = ["image_grid", "save_image_grid", "write_run_figures"]
