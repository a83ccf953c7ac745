"""The backbones in flax.linen: ResNet-18/50 (and the fork's multi-channel ResNet-50), IR-50.

`BACKBONES` maps each `config.model.backbone` name to its constructor and its feature size D;
`ldl_jax.models` puts the classifier head and AdaptiveSimNet on top (docs/METHOD.md §2).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# BatchNorm of the backbones follows PyTorch (momentum 0.1 there = 0.9 here, eps 1e-5): the
# pretrained face networks the reference starts from are converted PyTorch models.
BACKBONE_BN_MOMENTUM = 0.9
BACKBONE_BN_EPSILON = 1e-5
# The fork's multi-channel head is a Keras model: Keras BatchNormalization defaults.
HEAD_BN_MOMENTUM = 0.99
HEAD_BN_EPSILON = 1e-3


def _pad(kernel_size):
    """Explicit symmetric padding as PyTorch's `padding=k // 2` (SAME pads asymmetrically)."""
    return [(kernel_size // 2, kernel_size // 2)] * 2


def _backbone_layers(dtype, bn_axis_name, train: bool):
    """The bias-free convolution and the PyTorch-style BatchNorm every backbone is built of."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype)
    norm = functools.partial(
        nn.BatchNorm,
        axis_name=bn_axis_name,
        use_running_average=not train,
        momentum=BACKBONE_BN_MOMENTUM,
        epsilon=BACKBONE_BN_EPSILON,
        dtype=dtype,
    )
    return conv, norm


# --------------------------------------------------------------------------------------------
# ResNet v1 (standard, ImageNet layout), global average pooling.


class ResNetBlock(nn.Module):
    """Basic block of ResNet-18/34."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), self.strides, padding=_pad(3))(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3), padding=_pad(3))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class BottleneckResNetBlock(nn.Module):
    """Bottleneck block of ResNet-50/101 (stride on the 3x3 convolution, as torchvision)."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        residual = x
        y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
        y = self.conv(self.filters, (3, 3), self.strides, padding=_pad(3))(y)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
            residual = self.norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet v1 trunk. Returns the last feature map (B, h, w, D) before pooling."""

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_filters: int = 64
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv, norm = _backbone_layers(self.dtype, self.bn_axis_name, train)
        x = conv(self.num_filters, (7, 7), (2, 2), padding=_pad(7), name="conv_init")(x)
        x = nn.relu(norm(name="bn_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block_cls(self.num_filters * 2**i, conv=conv, norm=norm, strides=strides)(
                    x
                )
        return x


# --------------------------------------------------------------------------------------------
# IR-50 (face.evoLVe's bottleneck_IR network, input 112, 512-d embedding).


class PReLU(nn.Module):
    """Per-channel PReLU, initialised at 0.25 as PyTorch."""

    @nn.compact
    def __call__(self, x):
        slope = self.param("slope", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class BottleneckIR(nn.Module):
    """bottleneck_IR: BN, Conv3x3, PReLU, Conv3x3(stride), BN plus a (projected) shortcut."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        if x.shape[-1] == self.filters:
            shortcut = x[:, :: self.strides, :: self.strides, :]  # MaxPool2d(1, stride)
        else:
            shortcut = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(x)
            shortcut = self.norm(name="norm_proj")(shortcut)
        y = self.norm()(x)
        y = self.conv(self.filters, (3, 3), padding=_pad(3))(y)
        y = PReLU()(y)
        y = self.conv(self.filters, (3, 3), self.strides, padding=_pad(3))(y)
        y = self.norm()(y)
        return shortcut + y


class IResNet(nn.Module):
    """face.evoLVe IR network. Returns the (B, D) embedding after the output BN1d.

    `embedding_size` is D; the output Linear maps the flattened last map (h*w*C) to it, so the
    input size fixes the parameter count (7x7 at 112, as IR-50).
    """

    stage_sizes: Sequence[int]
    stage_filters: Sequence[int] = (64, 128, 256, 512)
    embedding_size: int = 512
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv, norm = _backbone_layers(self.dtype, self.bn_axis_name, train)
        x = conv(self.stage_filters[0], (3, 3), padding=_pad(3), name="conv_init")(x)
        x = PReLU()(norm(name="bn_init")(x))
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = 2 if j == 0 else 1
                x = BottleneckIR(self.stage_filters[i], conv=conv, norm=norm, strides=strides)(x)
        x = norm(name="bn_output")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        # Flatten in PyTorch's channels-first order so that converted weights line up.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = nn.Dense(self.embedding_size, dtype=self.dtype, name="embedding")(x)
        return norm(name="bn_embedding")(x)


# --------------------------------------------------------------------------------------------
# The fork's multi-channel head on ResNet-50's last map.


class MultiChannelHead(nn.Module):
    """The fork's multi-channel head on ResNet-50's last map (B, h, w, C) -> (B, h, w, C).

    Four Conv+BN+ReLU branches f1..f4 (1x1; 3x3 dilated 3, 5, 7); fb1 = f1 + f2, fb2 = f3 + f4;
    each gated as fb * sigmoid(fb) feeds an attention branch (two 3x3 convs dilated 7 with
    BN+ReLU between) whose softmax over channels p1, p2 reweights fb1 and fb2; a biased 1x1 conv
    fuses fb1 * p1 + fb2 * p2. At C = 2048 it holds about 273M parameters, as the fork's.
    """

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis
    train: bool = True

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        conv = functools.partial(
            nn.Conv, channels, padding="SAME", use_bias=False, dtype=self.dtype
        )
        norm = functools.partial(
            nn.BatchNorm,
            axis_name=self.bn_axis_name,
            use_running_average=not self.train,
            momentum=HEAD_BN_MOMENTUM,
            epsilon=HEAD_BN_EPSILON,
            dtype=self.dtype,
        )

        def conv_bn_relu(y, kernel, dilation):
            return nn.relu(norm()(conv((kernel, kernel), kernel_dilation=dilation)(y)))

        f1, f2, f3, f4 = (
            conv_bn_relu(x, kernel, dilation)
            for kernel, dilation in ((1, 1), (3, 3), (3, 5), (3, 7))
        )
        fused = 0.0
        for branch in (f1 + f2, f3 + f4):
            gated = branch * nn.sigmoid(branch)
            attention = conv((3, 3), kernel_dilation=7)(conv_bn_relu(gated, 3, 7))
            fused = fused + branch * nn.softmax(attention, axis=-1)
        return nn.Conv(channels, (1, 1), dtype=self.dtype, name="fuse")(fused)


class PooledResNet(nn.Module):
    """ResNet trunk, optionally the multi-channel head, then global average pooling -> (B, D)."""

    trunk: ModuleDef
    multi_channel_head: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis

    @nn.compact
    def __call__(self, x, train: bool = True):
        feature_map = self.trunk(dtype=self.dtype, bn_axis_name=self.bn_axis_name)(x, train=train)
        if self.multi_channel_head:
            feature_map = MultiChannelHead(
                dtype=self.dtype, bn_axis_name=self.bn_axis_name, train=train
            )(feature_map)
        return feature_map.mean(axis=(1, 2))


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=ResNetBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BottleneckResNetBlock)
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1), block_cls=ResNetBlock, num_filters=8)
ResNetSmall = functools.partial(
    ResNet, stage_sizes=(1, 1, 1), block_cls=ResNetBlock, num_filters=16
)
IR50 = functools.partial(IResNet, stage_sizes=(3, 4, 14, 3))
IRTiny = functools.partial(
    IResNet, stage_sizes=(1, 1), stage_filters=(8, 16), embedding_size=32, dropout_rate=0.0
)

# name -> (constructor taking dtype, feature size D). D is derived here, never configured.
BACKBONES: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "ir50": (IR50, 512),
    "ir_tiny": (IRTiny, 32),
    "resnet18": (functools.partial(PooledResNet, trunk=ResNet18), 512),
    "resnet50": (functools.partial(PooledResNet, trunk=ResNet50), 2048),
    "resnet50_multichannel": (
        functools.partial(PooledResNet, trunk=ResNet50, multi_channel_head=True),
        2048,
    ),
    "resnet_small": (functools.partial(PooledResNet, trunk=ResNetSmall), 64),
    "resnet_tiny": (functools.partial(PooledResNet, trunk=ResNetTiny), 16),
}
BACKBONE_FEATURE_DIMS = {name: dim for name, (_, dim) in BACKBONES.items()}
