"""Data layer: prompts, ground-truth scorers, PairSet (pairs + card), T→NT composition.

Submodules are imported where used (``from fairl.data.pairset import PairSet``) so that
importing one part does not load the models of another.
"""
