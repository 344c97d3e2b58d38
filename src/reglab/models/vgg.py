"""VGG11/16/19 for 32×32 images with PathProx's head (§4.5).

Standard conv configurations (3×3, padding 1, activation after every conv, 2×2 max-pool at M),
except that the last max-pool is a 2×2 average pool, as in PathProx's VGG19 (2×2 → 1×1 on
CIFAR); then flatten (512) and one FC layer to num_outputs. `batch_norm` puts BatchNorm2d after
every conv. Unit groups: consecutive conv pairs inside a block, greedily; vgg19 gets PathProx's
8 groups (2 752 units); left-over convs and the FC are other layers.
"""

from __future__ import annotations

from .conv_stack import ConvStack

_BLOCKS = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def vgg_plan(blocks: tuple[tuple[int, ...], ...]) -> tuple:
    plan: list = []
    for i, block in enumerate(blocks):
        plan += [*block, "A" if i == len(blocks) - 1 else "M"]
    return tuple(plan)


def _vgg(name: str) -> ConvStack:
    return ConvStack(name, plan=vgg_plan(_BLOCKS[name]), batch_norm="conv", pair_across_pooling=False)


vgg11 = _vgg("vgg11")
vgg16 = _vgg("vgg16")
vgg19 = _vgg("vgg19")
