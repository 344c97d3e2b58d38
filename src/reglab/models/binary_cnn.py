"""Study 1's binary CIFAR CNNs (§1.5) and the SKS HarderNet (§1.12).

All use 3×3 convs with padding 1 and one activation per conv; `bias` switches the conv biases
only (Linear biases always on, as in the used UnderparameterizedCNN_LinearBias — and not
inverted, fixing study 1's bug 3). Batch norm exists where the study had it: after every conv,
and for the overparameterized net also after fc1. With num_outputs=1 they output shape (batch,).
"""

from __future__ import annotations

from .conv_stack import ConvStack, PlanToken

_UNDER_MAX: tuple[PlanToken, ...] = (16, "M", 32, "M", 64, "M", 128, "G")
_UNDER_AVG: tuple[PlanToken, ...] = (16, "A", 32, "A", 64, "A", 128, "G")

overparameterized_cnn = ConvStack(
    "overparameterized_cnn",
    plan=(64, "M", 128, "M", 256, "M", 512, "G"),
    hidden=(2048,),
    batch_norm="conv_and_fc",
    fc_bias_always=True,
)
underparameterized_cnn = ConvStack(
    "underparameterized_cnn", plan=_UNDER_MAX, hidden=(512,), batch_norm="conv", fc_bias_always=True
)
underparameterized_cnn_avgpool = ConvStack(
    "underparameterized_cnn_avgpool", plan=_UNDER_AVG, hidden=(512,), batch_norm="conv", fc_bias_always=True
)
# The model study 1 actually ran (hard-coded there): 32 -> 16 -> 8 -> 4 -> global pool, no BN.
underparameterized_cnn_linearbias = ConvStack(
    "underparameterized_cnn_linearbias", plan=_UNDER_AVG, hidden=(512,), fc_bias_always=True
)
superunderparameterized_cnn = ConvStack(
    "superunderparameterized_cnn", plan=(4, "M", 8, "G"), hidden=(16,), batch_norm="conv", fc_bias_always=True
)
# SKS CIFAR10CNN: avg-pool after every conv (32 -> 16 -> 8 -> 4 -> 2), flatten 128·2·2 = 512.
hardernet = ConvStack("hardernet", plan=(16, "A", 32, "A", 64, "A", 128, "A"), hidden=(256,), fc_bias_always=True)
