"""Small test nets written the way timm writes two conv/ViT hybrids whose deployed forms onnxruntime fuses well,
each with the library's own deploy-time fusion computed in torch from the same weights (``deploy()``):

- RepViT (``RepViTBlock``): a ``RepVggDw`` token mixer (depthwise kxk conv+BN plus depthwise 1x1 conv+BN plus
  the identity, all under one BN), an optional squeeze-excite, then a residual ``RepVitMlp`` (1x1 conv+BN,
  GELU in its erf form, 1x1 conv+BN). Stem: two 3x3 stride-2 conv+BN with a GELU between. Head: global mean,
  then ``NormLinear`` (BatchNorm1d + Linear), with a distillation twin whose output is averaged in eval.
- FastViT (``RepMixerBlock``): ``x + gamma * (mixer(x) - norm(x))`` where ``mixer`` is a depthwise MobileOne
  block without activation (kxk conv+BN, 1x1 conv+BN, BN identity) and ``norm`` its BN-only twin, then a
  layer-scaled residual ``ConvMlp`` (7x7 depthwise conv+BN, 1x1, GELU, 1x1). Head: global mean, BatchNorm1d
  + Linear (the classifier head of the issue; timm's FastViT head is a bare Linear).

Our own code; only the forward structure (and so the exported ops) and the fusion algebra follow the library.
The deployed forms keep what timm's ``reparameterize_model`` keeps (FastViT's ConvMlp conv+BN and layer scales
stay as they are; the exporters may fold the BN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from etc.zoo.published.reparam import ConvBN, SqueezeExcite, bn_scale_shift


def randomize(net: nn.Module, seed: int) -> nn.Module:
    """Non-trivial eval statistics in every BatchNorm (1-D too) and non-zero layer scales: a trained net."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            elif isinstance(m, LayerScale):
                m.gamma.copy_(0.5 + torch.rand(m.gamma.shape, generator=gen))
    return net.eval()


def fused_conv_bn(block: ConvBN) -> tuple[torch.Tensor, torch.Tensor]:
    scale, shift = bn_scale_shift(block.bn)
    return block.conv.weight * scale[:, None, None, None], shift


def conv_from(weight: torch.Tensor, bias: torch.Tensor, like: nn.Conv2d) -> nn.Conv2d:
    conv = nn.Conv2d(
        like.in_channels, like.out_channels, like.kernel_size, like.stride, like.padding, groups=like.groups
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


def centre_identity(channels: int, kernel: int) -> torch.Tensor:
    """A depthwise kxk kernel that passes each channel through: 1 at the centre tap."""
    weight = torch.zeros(channels, 1, kernel, kernel)
    weight[:, 0, kernel // 2, kernel // 2] = 1.0
    return weight


class RepVggDw(nn.Module):
    """bn(dwconv_kxk_bn(x) + dwconv_1x1_bn(x) + x)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, kernel, 1, dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, dim)
        self.bn = nn.BatchNorm2d(dim)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def deploy(self) -> nn.Conv2d:
        w, b = fused_conv_bn(self.conv)
        w1, b1 = fused_conv_bn(self.conv1)
        pad = self.kernel // 2
        w = w + F.pad(w1, [pad] * 4) + centre_identity(w.shape[0], self.kernel)
        scale, shift = bn_scale_shift(self.bn)
        return conv_from(w * scale[:, None, None, None], (b + b1) * scale + shift, self.conv.conv)


class RepVitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, hidden, 1, 1, 1)
        self.act = nn.GELU()
        self.conv2 = ConvBN(hidden, dim, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))

    @torch.no_grad()
    def deploy(self) -> nn.Sequential:
        return nn.Sequential(
            conv_from(*fused_conv_bn(self.conv1), self.conv1.conv),
            nn.GELU(),
            conv_from(*fused_conv_bn(self.conv2), self.conv2.conv),
        )


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RepViTBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int, kernel: int, se: bool) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim, kernel)
        self.se: nn.Module = SqueezeExcite(dim, max(dim // 4, 8)) if se else nn.Identity()
        self.channel_mixer = RepVitMlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)

    @torch.no_grad()
    def deploy(self) -> nn.Sequential:
        return nn.Sequential(self.token_mixer.deploy(), self.se, Residual(self.channel_mixer.deploy()))


class NormLinear(nn.Module):
    """BatchNorm1d then Linear (timm's ``NormLinear``)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.l = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l(self.bn(x))

    @torch.no_grad()
    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = bn_scale_shift(self.bn)
        return self.l.weight * scale[None, :], self.l.bias + self.l.weight @ shift


class ClassifierHead(nn.Module):
    """Global mean over H, W, then NormLinear; with ``distillation`` a second NormLinear, both averaged."""

    def __init__(self, dim: int, classes: int, distillation: bool) -> None:
        super().__init__()
        self.head = NormLinear(dim, classes)
        self.head_dist = NormLinear(dim, classes) if distillation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        if self.head_dist is None:
            return self.head(x)
        return (self.head(x) + self.head_dist(x)) / 2

    @torch.no_grad()
    def deploy(self) -> nn.Module:
        """timm's ``RepVitClassifier.fuse``: BN folded into each Linear, the two Linears averaged."""
        weight, bias = self.head.fused()
        if self.head_dist is not None:
            weight_d, bias_d = self.head_dist.fused()
            weight, bias = (weight + weight_d) / 2, (bias + bias_d) / 2
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
        return nn.Sequential(MeanHW(), linear)


class MeanHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def conv_stem(dim: int) -> nn.Sequential:
    """The stem both nets share: 3x3 stride-2 conv+BN to dim/2, GELU, 3x3 stride-2 conv+BN to dim."""
    return nn.Sequential(ConvBN(3, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))


def deployed_stem(stem: nn.Sequential) -> list[nn.Module]:
    """The stem with each BatchNorm folded into its conv."""
    first, act, second = stem
    return [conv_from(*fused_conv_bn(first), first.conv), act, conv_from(*fused_conv_bn(second), second.conv)]


class StemBlocksHead(nn.Module):
    """What both nets share: ``stem`` -> ``blocks`` -> ``head``, and the deploy form of each part in turn."""

    stem: nn.Sequential
    blocks: nn.Sequential
    head: ClassifierHead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    @torch.no_grad()
    def deploy(self) -> nn.Sequential:
        blocks = [block.deploy() for block in self.blocks]
        return nn.Sequential(*deployed_stem(self.stem), *blocks, self.head.deploy()).eval()


class RepViTNet(StemBlocksHead):
    """Stem (3x3 s2 conv+BN, GELU, 3x3 s2 conv+BN), ``depth`` RepViT blocks (SE on every other one, as RepViT),
    a classifier head with distillation."""

    def __init__(
        self, dim: int = 16, depth: int = 2, classes: int = 10, distillation: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = conv_stem(dim)
        self.blocks = nn.Sequential(*(RepViTBlock(dim, 2, 3, se=i % 2 == 0) for i in range(depth)))
        self.head = ClassifierHead(dim, classes, distillation)
        randomize(self, seed)


class LayerScale(nn.Module):
    """x * gamma per channel (timm's ``LayerScale2d``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """x + gamma * (mixer(x) - norm(x)); mixer: dw kxk conv+BN + dw 1x1 conv+BN + BN(x); norm: BN(x)."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.mixer_kxk = ConvBN(dim, dim, kernel, 1, dim)
        self.mixer_scale = ConvBN(dim, dim, 1, 1, dim)
        self.mixer_identity = nn.BatchNorm2d(dim)
        self.norm = nn.BatchNorm2d(dim)
        self.layer_scale = LayerScale(dim)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.mixer_scale(x) + self.mixer_kxk(x) + self.mixer_identity(x)
        return x + self.layer_scale(mixed - self.norm(x))

    @torch.no_grad()
    def deploy(self) -> nn.Conv2d:
        """FastViT's ``RepMixer.reparameterize``: identity + gamma * (mixer kernel - norm kernel), one dw conv."""
        dim, k, pad = self.mixer_identity.num_features, self.kernel, self.kernel // 2
        w, b = fused_conv_bn(self.mixer_kxk)
        w1, b1 = fused_conv_bn(self.mixer_scale)
        a_id, c_id = bn_scale_shift(self.mixer_identity)
        a_n, c_n = bn_scale_shift(self.norm)
        identity = centre_identity(dim, k)
        mixer_w = w + F.pad(w1, [pad] * 4) + identity * a_id[:, None, None, None]
        norm_w = identity * a_n[:, None, None, None]
        gamma = self.layer_scale.gamma.reshape(-1)
        weight = identity + gamma[:, None, None, None] * (mixer_w - norm_w)
        bias = gamma * (b + b1 + c_id - c_n)
        return conv_from(weight, bias, self.mixer_kxk.conv)


class ConvMlp(nn.Module):
    """7x7 depthwise conv+BN, 1x1 to ``hidden``, GELU, 1x1 back."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, 1, dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int = 3) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim)
        self.mlp = ConvMlp(dim, dim * mlp_ratio)
        self.layer_scale = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))

    @torch.no_grad()
    def deploy(self) -> nn.Sequential:
        return nn.Sequential(self.token_mixer.deploy(), Residual(nn.Sequential(self.mlp, self.layer_scale)))


class FastViTNet(StemBlocksHead):
    """Stem (3x3 s2 conv+BN, GELU, 3x3 s2 conv+BN), ``depth`` RepMixer blocks, BatchNorm1d + Linear head."""

    def __init__(self, dim: int = 16, depth: int = 2, classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = conv_stem(dim)
        self.blocks = nn.Sequential(*(RepMixerBlock(dim) for _ in range(depth)))
        self.head = ClassifierHead(dim, classes, distillation=False)
        randomize(self, seed)
