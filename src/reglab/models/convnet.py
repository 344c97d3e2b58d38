"""Study 3's AutoL2 ConvNet / ConvNetBN (§3.3).

conv 3→300 (3×3, no padding) → act → max-pool → conv 300→300 → act → max-pool → flatten
(300·6·6 = 10 800 on CIFAR) → FC 500 → act → FC num_outputs; ≈ 6.22 M parameters for 10
classes. `batch_norm` gives ConvNetBN (BatchNorm2d after each conv, before the activation).
`bias` switches every bias. Study 3's init is `init: he_normal_conv` (set by its preset).
"""

from __future__ import annotations

from .conv_stack import ConvStack

autol2_convnet = ConvStack("autol2_convnet", plan=(300, "M", 300, "M"), hidden=(500,), padding=0, batch_norm="conv")
