"""The BatchNorm-statistics loss (DeepInversion, Yin et al., CVPR 2020; used by Hu et al., arXiv 2208.12464):
how far the statistics a network's BatchNorm layers see on a batch are from the running statistics the
layers stored in training, i.e. from those of the images the network was trained on.

:class:`BatchNormStatistics` puts a forward pre-hook on every ``nn.BatchNorm2d`` with running statistics. While
:meth:`~BatchNormStatistics.recording`, each layer's input mean and (biased) variance over the batch and the
pixels are kept, with their autograd graph; :meth:`~BatchNormStatistics.loss` is then

    sum over layers  || mean - running_mean ||_2 + || var - running_var ||_2

The network stays in eval mode (its running statistics are not updated) and may be frozen: gradients flow to
its input, which is what the transformation network is trained through.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["BatchNormStatistics", "batchnorm_layers"]


def batchnorm_layers(network: nn.Module) -> list[nn.BatchNorm2d]:
    """The ``nn.BatchNorm2d`` layers of ``network`` that keep running statistics, in module order."""
    return [m for m in network.modules()
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None]


class BatchNormStatistics:
    """Records the input statistics of ``network``'s BatchNorm layers; ValueError if it has none."""

    def __init__(self, network: nn.Module) -> None:
        self.layers = batchnorm_layers(network)
        if not self.layers:
            raise ValueError(f"{type(network).__name__} has no BatchNorm2d layers with running statistics")
        self._seen: list[tuple[nn.BatchNorm2d, torch.Tensor, torch.Tensor]] = []
        self._recording = False
        self._handles = [layer.register_forward_pre_hook(self._hook) for layer in self.layers]

    def _hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if self._recording:
            x = args[0].float()
            self._seen.append((module, x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)))

    @contextmanager
    def recording(self) -> Iterator[BatchNormStatistics]:
        """Keep the statistics of the forward passes inside the block (earlier ones are dropped)."""
        self._seen, self._recording = [], True
        try:
            yield self
        finally:
            self._recording = False

    def loss(self) -> torch.Tensor:
        """Sum over the recorded layer calls of the L2 distances of mean and variance to the running ones."""
        if not self._seen:
            raise RuntimeError("no BatchNorm layer ran while recording")
        return torch.stack([torch.linalg.vector_norm(mean - layer.running_mean)
                            + torch.linalg.vector_norm(var - layer.running_var)
                            for layer, mean, var in self._seen]).sum()

    def remove(self) -> None:
        """Take the hooks off the network."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
