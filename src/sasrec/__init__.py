"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018) in PyTorch."""

__version__ = "0.1.0"
