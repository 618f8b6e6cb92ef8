"""ECBSR (training form): five-branch ECB blocks merge into one conv each; PReLU becomes ReLU on 2x channels.

    python examples/ecbsr.py [--scale 4] [--size 17x19] [--exporter dynamo|legacy]

The deploy weights ECBSR_M4C16 (real, when shared/pretrained is found; seeded random otherwise) are split into
random ECB branches with the same function (zoo "ecbsr_train"), so the rep pass has the real work to undo.
"""

import argparse

import etc
from etc import zoo
from etc.frontends.torch import example_input, export

parser = argparse.ArgumentParser(description="ECBSR -> plain Conv/ReLU/DepthToSpace")
parser.add_argument("--scale", type=int, default=4)
parser.add_argument("--size", default="17x19", help="HxW of the export example and the MACs count")
parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "legacy"])
args = parser.parse_args()
h, w = (int(v) for v in args.size.split("x"))

pretrained = zoo.pretrained_path("ECBSR", f"ECBSR_M4C16_x{args.scale}") is not None
net = zoo.build("ecbsr_train", scale=args.scale, pretrained=pretrained, clamp=True)
model = export(net, example_input(h, w), exporter=args.exporter)
plain, report = etc.optimize(model, passes="fold,rep,et", prelu_to_relu=True, size=(h, w))

print(
    f"ECBSR (ECB training form) x{args.scale} ({'pretrained' if pretrained else 'random'} weights, {args.exporter} export)"
)
for op in sorted(set(report.before.ops) | set(report.after.ops)):
    print(f"  {op:16s} {report.before.ops.get(op, 0):4d} -> {report.after.ops.get(op, 0):4d}")
print(f"  MACs @{h}x{w}: {report.before.macs} -> {report.after.macs}")
print(
    "  verified:", report.verification.equivalent, f"(max abs {report.verification.rows[0]['max_abs']:.2e})"
)
for line in report.remaining:
    print("  not plain:", line)
