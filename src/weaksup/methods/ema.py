"""An exponential moving average (EMA) of a network's parameters, kept as buffers.

Mean Teacher, FixMatch and Meta Pseudo Labels evaluate an EMA of the trained weights. The
popular PyTorch port of Meta Pseudo Labels (kekmodel/MPL-pytorch, `models.py` `ModelEMA`)
deep-copies the student and, after every student step (`main.py`, right after
`s_scheduler.step()`), sets each parameter to `decay * ema + (1 - decay) * live` and copies the
buffers (BatchNorm statistics) as they are; its README runs CIFAR-10-4K with `--ema 0.995`.

Here the averages are buffers of a small module (no second model, nothing the optimizers or
DDP see as parameters), so they land in the method's `state_dict` and therefore in every
checkpoint, and resume and `weaksup-eval` restore them with the weights. The live network's
buffers serve the average as they are, which is MPL-pytorch's copy of the buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

# `register_buffer` refuses dots; parameter names (`backbone.layers.0.weight`) never hold `/`.
_SEPARATOR = "/"


class ParameterAverage(nn.Module):
    """EMA `average ← decay · average + (1 − decay) · parameter` of every parameter of a network.

    Starts at the network's weights when built, like MPL-pytorch's `deepcopy(model)`.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.parameter_names = [name for name, _ in network.named_parameters()]
        for name, parameter in network.named_parameters():
            if _SEPARATOR in name:
                raise ValueError(f"parameter name {name!r} holds {_SEPARATOR!r}")
            self.register_buffer(name.replace(".", _SEPARATOR), parameter.detach().clone())

    def averages(self) -> dict[str, Tensor]:
        """The averaged parameters by their name in the network."""
        return {
            name: self.get_buffer(name.replace(".", _SEPARATOR)) for name in self.parameter_names
        }

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """One EMA step towards the network's current parameters (one fused op per dtype)."""
        live = dict(network.named_parameters())
        averages = self.averages()
        # lerp(average, live, 1 − decay) = decay · average + (1 − decay) · live; the fused form
        # is what torch.optim.swa_utils.get_ema_multi_avg_fn uses.
        torch._foreach_lerp_(
            list(averages.values()),
            [live[name].detach() for name in averages],
            1.0 - self.decay,
        )

    @torch.no_grad()
    def copy_to(self, network: nn.Module) -> None:
        """Overwrite the network's parameters with the averages (MPL-pytorch loads its
        `avg_state_dict` into the student before fine-tuning it)."""
        averages = self.averages()
        for name, parameter in network.named_parameters():
            parameter.copy_(averages[name])

    def forward_with_averages(self, network: nn.Module, *inputs: Tensor) -> Tensor:
        """`network(*inputs)` computed with the averaged parameters and the live buffers."""
        return functional_call(network, self.averages(), inputs)
