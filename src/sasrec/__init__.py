"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018) in PyTorch."""

__version__ = "0.1.0"
__all__ = ["Recommender"]


def __getattr__(name: str):
    # Lazy, so that `import sasrec.recommend` (inference) does not pull in the training loop.
    if name == "Recommender":
        from sasrec.api import Recommender

        return Recommender
    raise AttributeError(f"module 'sasrec' has no attribute {name!r}")
