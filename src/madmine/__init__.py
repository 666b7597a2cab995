"""madmine: maximum-discrepancy mining of segmentation failures at scale."""

__version__ = "0.1.0"
