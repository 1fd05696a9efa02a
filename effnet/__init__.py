"""EfficientNet training on SLURM GPU clusters as a staged, resumable pipeline."""

__version__ = "0.1.0"
