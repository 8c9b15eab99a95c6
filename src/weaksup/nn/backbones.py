"""Backbones: a stack of stages (the feature extractor) and an optional linear head.

Every backbone exposes per-layer features, which later methods need:
`forward_with_features(x)` returns the output and the *input of every stage and of the
head* (what the multiscale inversion loss reconstructs, Balestriero et al. 2018, eq. 6);
`embed(x)` returns the penultimate representation (what MIL embedding-level pooling and
the min-max class embeddings work on).

A stage is one *level*: one convolution, one linear layer or one pooling layer, with the
layers that follow it before the next such layer. Activation, BatchNorm and dropout belong to
the stage of the convolution, linear or pooling layer they follow; a `Flatten` opens the first
linear stage, so the input of that stage keeps its image shape. So every convolution, linear
and pooling layer has its input in `features`, in order: `features[0] is x`, then the input of
each further stage, then the input of the head (the embedding). Each feature is the tensor the
next stage is computed from, so `torch.autograd.grad(<output, v>, features)` gives the
reconstruction `ẑ_l = ∂⟨output, v⟩/∂z_l` of every level from one backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,  # a purely linear MLP, e.g. the min-max post's one-layer encoder
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"backbone.activation={name!r} is unknown; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Backbone(nn.Module):
    """Stages followed by an optional linear head (`num_outputs=None`: embeddings only)."""

    def __init__(self, stages: Sequence[nn.Module], embedding_dim: int, num_outputs: int | None):
        super().__init__()
        if num_outputs is not None and num_outputs <= 0:
            raise ValueError(f"num_outputs must be positive, got {num_outputs}")
        self.stages = nn.ModuleList(stages)
        self.embedding_dim = embedding_dim
        self.num_outputs = num_outputs
        self.head = nn.Linear(embedding_dim, num_outputs) if num_outputs is not None else None

    def embed(self, inputs: Tensor) -> Tensor:
        hidden = inputs
        for stage in self.stages:
            hidden = stage(hidden)
        return hidden

    def forward(self, inputs: Tensor) -> Tensor:
        embedding = self.embed(inputs)
        return embedding if self.head is None else self.head(embedding)

    def forward_with_features(self, inputs: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Output plus the input of each stage (and of the head), in order; `features[0] is inputs`."""
        features: list[Tensor] = []
        hidden = inputs
        for stage in self.stages:
            features.append(hidden)
            hidden = stage(hidden)
        if self.head is not None:
            features.append(hidden)
            hidden = self.head(hidden)
        return hidden, features


def _num_features(input_shape: Sequence[int]) -> int:
    size = 1
    for dim in input_shape:
        size *= int(dim)
    return size


class MLP(Backbone):
    """Fully connected network; any input shape is flattened first.

    One stage per linear layer (its activation and dropout with it), so `features` is
    `[x, hidden_1, ..., hidden_k]`, the last being the embedding the head reads.

    Args:
        input_shape: shape of one example (given by the data, not the config).
        num_outputs: size of the linear head; `None` for an embedding-only network.
        hidden_sizes: width of each hidden layer (the last is the embedding size).
        activation: one of `ACTIVATIONS`.
        dropout: dropout probability after each hidden activation.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int | None = None,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        if len(hidden_sizes) == 0 or any(int(size) <= 0 for size in hidden_sizes):
            raise ValueError(
                f"backbone.hidden_sizes must be positive widths, got {list(hidden_sizes)}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"backbone.dropout must be in [0, 1), got {dropout}")
        stages: list[nn.Module] = []
        width = _num_features(input_shape)
        for index, size in enumerate(hidden_sizes):
            layers: list[nn.Module] = [nn.Flatten()] if index == 0 else []
            layers += [nn.Linear(width, int(size)), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            stages.append(nn.Sequential(*layers))
            width = int(size)
        super().__init__(stages, embedding_dim=width, num_outputs=num_outputs)


class LinearEncoder(Backbone):
    """One affine layer (the min-max post's `Dense(n_dim)` feature encoder), inputs flattened.

    Args:
        input_shape: shape of one example (from the data).
        num_outputs: optional linear head (None: the layer's output is the embedding).
        embedding_dim: output width (default: the input width, as in the post).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        width = _num_features(input_shape)
        embedding_dim = width if embedding_dim is None else int(embedding_dim)
        if embedding_dim <= 0:
            raise ValueError(f"backbone.embedding_dim must be positive, got {embedding_dim}")
        super().__init__(
            [nn.Sequential(nn.Flatten(), nn.Linear(width, embedding_dim))],
            embedding_dim,
            num_outputs,
        )


class ConvolutionStage(nn.Sequential):
    """Layers applied in order to images kept in one memory format (channels-last or not).

    The input is reordered to that format first; values and shapes are unchanged, and the
    parameter names are those of a plain `nn.Sequential`, so checkpoints load either way.
    """

    def __init__(self, *layers: nn.Module, channels_last: bool) -> None:
        super().__init__(*layers)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, images: Tensor) -> Tensor:
        return super().forward(images.contiguous(memory_format=self.memory_format))


def image_shape(input_shape: Sequence[int], option: str) -> tuple[int, int, int]:
    """`(channels, height, width)` of one example, or a ValueError naming `backbone=<option>`."""
    if len(input_shape) != 3:
        raise ValueError(
            f"backbone={option} needs image inputs [channels, height, width], "
            f"the data gives {tuple(int(d) for d in input_shape)}"
        )
    channels, height, width = (int(d) for d in input_shape)
    return channels, height, width


# Where each parameter of the two-stage LeNet (before every layer became a stage) lives now.
_TWO_STAGE_LENET_KEYS = {
    "stages.0.0.": "stages.0.0.",  # first convolution
    "stages.0.3.": "stages.2.0.",  # second convolution
    "stages.1.0.": "stages.4.1.",  # dense layer (after the Flatten that opens its stage)
}


def rename_two_stage_lenet_keys(state_dict: dict[str, Tensor], prefix: str) -> None:
    """Rename, in place, the keys of a LeNet state dict written with two stages.

    Checkpoints from before every layer was a level hold `stages.0.{0,3}` (convolutions) and
    `stages.1.0` (dense); `stages.0.3.weight` is the mark of that layout (the current one has
    no layer 3 in stage 0), so a current state dict is left as it is.
    """
    if f"{prefix}stages.0.3.weight" not in state_dict:
        return
    for key in [k for k in state_dict if k.startswith(f"{prefix}stages.")]:
        local = key[len(prefix) :]
        for old, new in _TWO_STAGE_LENET_KEYS.items():
            if local.startswith(old):
                state_dict[prefix + new + local[len(old) :]] = state_dict.pop(key)
                break


class LeNet(Backbone):
    """LeNet-like CNN for single-channel images of about 28x28.

    The layout of Ilse et al. 2018's MNIST-bags network (their `model.py`):
    Conv(c->20, 5) ReLU MaxPool2 -> Conv(20->50, 5) ReLU MaxPool2 -> Linear(->500) ReLU.
    Five levels, so `forward_with_features` on 28x28 inputs gives
    `[x (c,28,28), conv1 out (20,24,24), pool1 out (20,12,12), conv2 out (50,8,8),
    pool2 out (50,4,4), embedding (500)]`. State dicts of the former two-stage layout
    (`stages.0.0/0.3/1.0`) still load: their keys are renamed on loading.

    Args:
        input_shape: `[channels, height, width]` of one image (given by the data).
        num_outputs: size of the linear head; `None` for an embedding-only network.
        channels: widths of the two convolutions.
        embedding_dim: width of the dense layer (the embedding).
        dropout: dropout probability after the dense layer.
        channels_last: keep the convolution weights and activations in channels-last (NHWC)
            memory, whatever the strides of the input. Same function; on CPU (oneDNN, 2
            threads) a training step of 320 NCHW MNIST images took 60-66 ms instead of
            91-101 ms here, mostly in the max-pooling and the convolution backward. A
            one-channel batch gathered so that its channel stride is 1 (as the bag batches are)
            already takes the NHWC kernels, so the MIL benchmark
            (`benchmarks/mil_throughput.py --no-channels-last`) shows no difference.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int | None = None,
        channels: Sequence[int] = (20, 50),
        embedding_dim: int = 500,
        dropout: float = 0.0,
        channels_last: bool = True,
    ) -> None:
        in_channels, height, width = image_shape(input_shape, "lenet")
        if min(height, width) < 16:
            raise ValueError(
                f"backbone=lenet needs images of at least 16x16, the data gives {height}x{width}; "
                "use backbone=mlp for small images"
            )
        if len(channels) != 2:
            raise ValueError(f"backbone.channels must list two conv widths, got {list(channels)}")
        first, second = (int(c) for c in channels)
        image_stages = [
            ConvolutionStage(
                nn.Conv2d(in_channels, first, kernel_size=5), nn.ReLU(), channels_last=channels_last
            ),
            ConvolutionStage(nn.MaxPool2d(2), channels_last=channels_last),
            ConvolutionStage(
                nn.Conv2d(first, second, kernel_size=5), nn.ReLU(), channels_last=channels_last
            ),
            ConvolutionStage(nn.MaxPool2d(2), channels_last=channels_last),
        ]
        with torch.no_grad():
            pooled = nn.Sequential(*image_stages)(torch.zeros(1, in_channels, height, width))
        dense: list[nn.Module] = [
            nn.Flatten(),
            nn.Linear(pooled[0].numel(), embedding_dim),
            nn.ReLU(),
        ]
        if dropout > 0:
            dense.append(nn.Dropout(dropout))
        super().__init__([*image_stages, nn.Sequential(*dense)], embedding_dim, num_outputs)

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Runs before the stages load their own keys, so old checkpoints load as they are."""
        rename_two_stage_lenet_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
