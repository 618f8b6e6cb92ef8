"""ETDS: the dual-stream training form (backbone + residual streams, cross adds) becomes one plain stream.

    python examples/etds.py [--scale 4] [--size 17x19] [--exporter dynamo|legacy]

Built from the real ETDS_M5C16 plain weights when shared/pretrained is found (seeded random otherwise).
"""

import argparse

import etc
from etc import zoo
from etc.frontends.torch import example_input, export

parser = argparse.ArgumentParser(description="ETDS -> plain Conv/ReLU/DepthToSpace")
parser.add_argument("--scale", type=int, default=4)
parser.add_argument("--size", default="17x19", help="HxW of the export example and the MACs count")
parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "legacy"])
args = parser.parse_args()
h, w = (int(v) for v in args.size.split("x"))

pretrained = zoo.pretrained_path("ETDS", f"ETDS_M5C16_x{args.scale}") is not None
net = zoo.build("etds_dual", scale=args.scale, pretrained=pretrained)
model = export(net, example_input(h, w), exporter=args.exporter)
plain, report = etc.optimize(model, passes="fold,rep,et", size=(h, w))

print(
    f"ETDS (dual stream) x{args.scale} ({'pretrained' if pretrained else 'random'} weights, {args.exporter} export)"
)
for op in sorted(set(report.before.ops) | set(report.after.ops)):
    print(f"  {op:16s} {report.before.ops.get(op, 0):4d} -> {report.after.ops.get(op, 0):4d}")
print(f"  MACs @{h}x{w}: {report.before.macs} -> {report.after.macs}")
print(
    "  verified:", report.verification.equivalent, f"(max abs {report.verification.rows[0]['max_abs']:.2e})"
)
for line in report.remaining:
    print("  not plain:", line)
