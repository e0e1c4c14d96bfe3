"""Shared type aliases.

A ``TensorMapping`` maps a variable name to a tensor. Unless a docstring says
otherwise, every tensor of one mapping has the same shape and the leading
dimension is the sample dimension.
"""

from collections.abc import Mapping

import torch

TensorMapping = Mapping[str, torch.Tensor]
TensorDict = dict[str, torch.Tensor]
