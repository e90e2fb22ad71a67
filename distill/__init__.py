"""r1-distill core: recipe and row schemas, storage, engines, sampling, verification, merge, SFT, eval."""

__version__ = "0.1.0"
