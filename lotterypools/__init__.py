"""Lottery Pools: lottery tickets by iterative magnitude pruning, and stronger tickets by interpolating them.

A re-implementation of Yin et al., "Lottery Pools: Winning More by Interpolating Tickets without
Increasing Training or Inference Cost" (AAAI 2023). The CIFAR and ImageNet scripts are thin front ends
over this package.
"""

__version__ = "0.1.0"
