"""Small nets written the way published code writes them, for the tests and the benchmarks (not in the zoo registry).

- :mod:`etc.zoo.published.ecbsr`: the ECB block as ECBSR/BasicSR publish it (bias written into border strips).
- :mod:`etc.zoo.published.reparam`: timm's MobileOne and SPAN's Conv3XC training-time blocks, with their fusions.
- :mod:`etc.zoo.published.vit`: timm's RepViT and FastViT blocks (GELU MLPs, RepMixer, BatchNorm1d + Linear and
  distillation heads), with their deploy forms.
- :mod:`etc.zoo.published.cost`: SR nets in the shapes that made exact rewrites expensive (``MODELS``).
"""
