"""The convolutional networks semi-supervised papers use on 28x28 and 32x32 images.

`ConvSmall` is the Ladder network's Conv-Small for MNIST and `ConvLarge` the Π-model's
network (called Conv-Large by the papers that reuse it), written as project `Backbone`s: every
convolution and pooling layer is a level of `forward_with_features` (see `weaksup.nn.backbones`).

BatchNorm and the inversion. The multiscale inversion (Balestriero et al. 2018) reads the
class templates of a piecewise-affine network, `logits = A[x]·x + b[x]`, and reconstructs each
level as `ẑ_l = ∂⟨logits, sg(ŷ)⟩/∂z_l`. ReLU, leaky ReLU, max- and mean-pooling and affine
layers keep the network piecewise affine *per example*; BatchNorm does so only where it
normalises with fixed statistics:

* `module.eval()`, or training under `running_batch_norm(module)`: BatchNorm is the fixed
  affine map `γ (z − μ_running) / sqrt(σ²_running + ε) + β`, the network is exactly piecewise
  affine per example and `ẑ_l` is the template of each example's own region (tested);
* training mode (the default while training): BatchNorm uses the batch mean and variance, so
  an example's logits depend on the whole batch, they are not affine in the example (the
  division by the batch deviation is not), and the autograd reconstruction also differentiates
  through the batch statistics: `ẑ_l` of one example gets terms from the other examples of
  the batch. That is the plain gradient of a loss on a BatchNorm network in training; it is
  not the per-example template.
* `batch_norm=False`: no BatchNorm at all (a bias in each convolution instead).

`running_batch_norm` freezes the statistics without touching dropout: use it for an inversion
pass that must see per-example templates while the rest of the step trains as usual. Its
running statistics then only move in passes outside the block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from weaksup.nn.backbones import Backbone, ConvolutionStage, image_shape

LARGEST_CHECKED_SIZE = 1024  # image side up to which the smallest accepted size is searched


@contextmanager
def running_batch_norm(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every BatchNorm of `module` uses (and keeps) its running statistics.

    The per-example piecewise-affine view the inversion needs (module docstring); other layers,
    dropout included, keep their mode. The previous modes are restored on exit.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [norm.training for norm in norms]
    try:
        for norm in norms:
            norm.eval()
        yield module
    finally:
        for norm, mode in zip(norms, modes, strict=True):
            norm.train(mode)


def _convolution_stage(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    padding: int,
    activation: nn.Module,
    batch_norm: bool,
    channels_last: bool,
) -> ConvolutionStage:
    """Conv [BatchNorm] activation: one level (the bias is BatchNorm's β when there is one)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(activation)
    return ConvolutionStage(*layers, channels_last=channels_last)


def _pooling_stage(dropout: float, channels_last: bool) -> ConvolutionStage:
    """MaxPool 2x2 [dropout]: one level."""
    layers: list[nn.Module] = [nn.MaxPool2d(2)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return ConvolutionStage(*layers, channels_last=channels_last)


def _first(value: int | tuple[int, ...] | str) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


def _output_side(stages: Sequence[nn.Module], side: int) -> int:
    """Spatial side after every convolution and max-pooling of `stages` (square kernels).

    Computed, not probed with a forward pass: BatchNorm in training mode rejects the one-pixel
    maps a probe of a too-small image would make, before the size could be reported.
    """
    for module in (layer for stage in stages for layer in stage.modules()):
        if not isinstance(module, nn.Conv2d | nn.MaxPool2d):
            continue
        kernel, padding = _first(module.kernel_size), _first(module.padding)
        stride, dilation = _first(module.stride), _first(module.dilation)
        side = (side + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return side


def check_image_size(stages: Sequence[nn.Module], height: int, width: int, option: str) -> None:
    """ValueError naming `backbone=<option>` and the smallest size it takes, if too small."""
    if min(_output_side(stages, height), _output_side(stages, width)) >= 1:
        return
    smallest = next(
        side for side in range(1, LARGEST_CHECKED_SIZE) if _output_side(stages, side) >= 1
    )
    raise ValueError(
        f"backbone={option} needs images of at least {smallest}x{smallest}, "
        f"the data gives {height}x{width}; use backbone=mlp for small images"
    )


def _check_arguments(channels: Sequence[int], dropout: float, option: str) -> list[int]:
    widths = [int(width) for width in channels]
    if len(widths) != 5 or any(width <= 0 for width in widths):
        raise ValueError(
            f"backbone.channels of backbone={option} must list five positive widths, "
            f"got {list(channels)}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"backbone.dropout must be in [0, 1), got {dropout}")
    return widths


class GlobalMeanPool(nn.Sequential):
    """Mean over the spatial positions, flattened: `[N, C, H, W] -> [N, C]` (one level)."""

    def __init__(self) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class ConvSmall(Backbone):
    """Conv-Small of the Ladder networks for MNIST (Rasmus et al. 2015).

    Rasmus et al. 2015, Sec. 4.2 and the specification of the convolutional models in the
    appendix; layer by layer as in the authors' `--encoder-layers` string for "Conv-Small"
    (CuriousAI/ladder README: `convf:32:5-maxpool:2:2-convv:64:3-convf:64:3-maxpool:2:2-
    convv:128:3-convv:10:1-globalmeanpool:6:6-fc:10`): a "full" convolution pads by
    kernel − 1, a "valid" one not at all. On 28x28 inputs:

        conv 5x5 32 full (32x32) BN ReLU -> maxpool 2 (16x16)
        -> conv 3x3 64 valid (14x14) BN ReLU -> conv 3x3 64 full (16x16) BN ReLU -> maxpool 2
        -> conv 3x3 128 valid (6x6) BN ReLU -> conv 1x1 10 (6x6) BN ReLU
        -> global mean pool (10) -> linear head

    Eight levels: `features` = `[x, conv1 out, pool1 out, conv2 out, conv3 out, pool2 out,
    conv4 out, conv5 out, embedding]`. Left out: the Ladder's noise and decoder (a method's
    business), BatchNorm after the pooling layers and on the head (here BatchNorm follows the
    convolutions only). The last width is the embedding; the paper's 10 is the class count.

    Args:
        input_shape: `[channels, height, width]` of one image (given by the data); 8x8 or more.
        num_outputs: size of the linear head; `None` for an embedding-only network.
        channels: the five convolution widths.
        batch_norm: BatchNorm after each convolution (see the module docstring for the
            inversion); without it each convolution has a bias.
        dropout: dropout probability after each max-pooling (the paper has none).
        channels_last: keep the convolutions in NHWC memory (same function, see `LeNet`).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int | None = None,
        channels: Sequence[int] = (32, 64, 64, 128, 10),
        batch_norm: bool = True,
        dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        in_channels, height, width = image_shape(input_shape, "conv_small")
        first, second, third, fourth, fifth = _check_arguments(channels, dropout, "conv_small")

        def convolution(inputs: int, outputs: int, kernel: int, padding: int) -> nn.Module:
            return _convolution_stage(
                inputs, outputs, kernel, padding, nn.ReLU(), batch_norm, channels_last
            )

        stages = [
            convolution(in_channels, first, 5, padding=4),
            _pooling_stage(dropout, channels_last),
            convolution(first, second, 3, padding=0),
            convolution(second, third, 3, padding=2),
            _pooling_stage(dropout, channels_last),
            convolution(third, fourth, 3, padding=0),
            convolution(fourth, fifth, 1, padding=0),
            GlobalMeanPool(),
        ]
        check_image_size(stages, height, width, "conv_small")
        super().__init__(stages, embedding_dim=fifth, num_outputs=num_outputs)


class ConvLarge(Backbone):
    """The Π-model / temporal-ensembling network (Laine & Aila 2017), "Conv-Large".

    Laine & Aila 2017, Appendix A, Table 5 (the network of all their tests); the same network
    is the Conv-Large of Miyato et al.'s VAT and of Mean Teacher (whose reference code,
    CuriousAI/mean-teacher `mean_teacher/model.py` `tower()`, spells it out). With 'same'
    padding:

        3 x [conv 3x3 128 BN LReLU(0.1)] -> maxpool 2 -> dropout 0.5
        -> 3 x [conv 3x3 256 BN LReLU] -> maxpool 2 -> dropout 0.5
        -> conv 3x3 512 valid BN LReLU -> conv 1x1 256 BN LReLU -> conv 1x1 128 BN LReLU
        -> global mean pool (128) -> linear head

    On 32x32 inputs the valid convolution gives 6x6 (as in the paper), on 28x28 5x5. Twelve
    levels: `features` = `[x, conv1 out, conv2 out, conv3 out, pool1 out, conv4 out, conv5 out,
    conv6 out, pool2 out, conv7 out, conv8 out, conv9 out, embedding]`. Differences from the paper:
    standard BatchNorm (PyTorch momentum) where it uses weight normalisation with mean-only
    BatchNorm (momentum 0.999); its input augmentation (translations, flips, Gaussian noise
    σ = 0.15) belongs to the data or the method, not here. `channels=[96, 192, 192, 192, 10]`
    gives the widths of the Ladder's Conv-Large for CIFAR-10 (Rasmus et al. 2015, which mixes
    valid and full convolutions where this uses 'same').

    Args:
        input_shape: `[channels, height, width]` of one image (given by the data); 12x12 or more.
        num_outputs: size of the linear head; `None` for an embedding-only network.
        channels: widths of the first block, the second block, the 3x3 valid convolution and
            the two 1x1 convolutions.
        batch_norm: BatchNorm after each convolution (see the module docstring for the
            inversion); without it each convolution has a bias.
        dropout: dropout probability after each max-pooling.
        negative_slope: slope of the leaky ReLU for negative inputs.
        channels_last: keep the convolutions in NHWC memory (same function, see `LeNet`).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int | None = None,
        channels: Sequence[int] = (128, 256, 512, 256, 128),
        batch_norm: bool = True,
        dropout: float = 0.5,
        negative_slope: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        in_channels, height, width = image_shape(input_shape, "conv_large")
        first, second, third, fourth, fifth = _check_arguments(channels, dropout, "conv_large")
        if negative_slope < 0:
            raise ValueError(f"backbone.negative_slope must be >= 0, got {negative_slope}")

        def convolution(inputs: int, outputs: int, kernel: int, padding: int) -> nn.Module:
            activation = nn.LeakyReLU(negative_slope)
            return _convolution_stage(
                inputs, outputs, kernel, padding, activation, batch_norm, channels_last
            )

        stages = [
            convolution(in_channels, first, 3, padding=1),
            convolution(first, first, 3, padding=1),
            convolution(first, first, 3, padding=1),
            _pooling_stage(dropout, channels_last),
            convolution(first, second, 3, padding=1),
            convolution(second, second, 3, padding=1),
            convolution(second, second, 3, padding=1),
            _pooling_stage(dropout, channels_last),
            convolution(second, third, 3, padding=0),
            convolution(third, fourth, 1, padding=0),
            convolution(fourth, fifth, 1, padding=0),
            GlobalMeanPool(),
        ]
        check_image_size(stages, height, width, "conv_large")
        super().__init__(stages, embedding_dim=fifth, num_outputs=num_outputs)
