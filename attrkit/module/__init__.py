"""Captum's ``captum.module``: learnable stochastic gates for feature selection."""
from ._gates import BinaryConcreteStochasticGates, GaussianStochasticGates, StochasticGatesBase

__all__ = ["BinaryConcreteStochasticGates", "GaussianStochasticGates", "StochasticGatesBase"]
