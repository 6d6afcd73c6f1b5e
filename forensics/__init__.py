"""gscan's library: find, decode, tile and score images for GAN fingerprints."""

__version__ = "0.1.0"
