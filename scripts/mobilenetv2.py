#!/usr/bin/env python3
"""Write MobileNetV2 (224x224x3 in, 1000 logits out) as ONNX, weights from a fixed seed.

The architecture is torchvision's mobilenet_v2 (width 1.0): a 3x3 stride-2 stem,
17 inverted residual blocks (1x1 expand, 3x3 depthwise as a grouped Conv,
1x1 linear projection, a residual add where shapes allow), a 1x1 conv to 1280
channels, global average pooling and a 1280x1000 fully connected layer.
BatchNorm is folded into the convolutions' biases; ReLU6 is Clip(0, 6).

No weights are downloaded: they are drawn from numpy's PCG64 with SEED, He-scaled
(std sqrt(2/fan_in) before a ReLU6, sqrt(1/fan_in) before a linear output, the
residual branches' projections scaled down) so activations stay in ReLU6's range
and the logits are neither NaN nor all zero. The output is byte-for-byte
reproducible with the pinned onnx and numpy (scripts/setup.sh): the script
checks the file's SHA-256 against EXPECTED_SHA256 and fails if it differs.

    mobilenetv2.py OUT.onnx
"""

import hashlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261202
EXPECTED_SHA256 = "4ede08d882cc5c2742e6605a29273bd3b06f3df5653548804e461460f4030c98"

# (expansion t, output channels c, repeats n, first stride s), torchvision's table.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class Builder:
    def __init__(self, seed):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def conv(self, x, cin, cout, k, stride, groups, gain, act):
        """Conv (BatchNorm folded into W and b), then Clip(0, 6) if act."""
        fan_in = (cin // groups) * k * k
        std = gain * np.sqrt((2.0 if act else 1.0) / fan_in)
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * std).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.05).astype(np.float32)
        out = self.name("conv")
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const("w", w), self.const("b", b)],
                [out],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=groups,
            )
        )
        if not act:
            return out
        clipped = self.name("relu6")
        self.nodes.append(helper.make_node("Clip", [out, "zero", "six"], [clipped]))
        return clipped

    def block(self, x, cin, cout, stride, t):
        hidden = cin * t
        residual = stride == 1 and cin == cout
        h = x
        if t != 1:
            h = self.conv(h, cin, hidden, 1, 1, 1, 1.0, True)
        h = self.conv(h, hidden, hidden, 3, stride, hidden, 1.0, True)
        # A residual branch adds to its input: scaled down so the sum's variance stays bounded.
        h = self.conv(h, hidden, cout, 1, 1, 1, 0.5 if residual else 1.0, False)
        if not residual:
            return h
        out = self.name("add")
        self.nodes.append(helper.make_node("Add", [x, h], [out]))
        return out


def build():
    b = Builder(SEED)
    b.inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    b.inits.append(numpy_helper.from_array(np.array(6.0, dtype=np.float32), "six"))
    x = b.conv("input", 3, 32, 3, 2, 1, 1.0, True)
    cin = 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            x = b.block(x, cin, c, s if i == 0 else 1, t)
            cin = c
    x = b.conv(x, cin, 1280, 1, 1, 1, 1.0, True)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    b.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    w = (b.rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280) * 4.0).astype(np.float32)
    bias = (b.rng.standard_normal(1000) * 0.05).astype(np.float32)
    b.nodes.append(
        helper.make_node("Gemm", ["features", b.const("fc_w", w), b.const("fc_b", bias)], ["logits"], transB=1)
    )
    graph = helper.make_graph(
        b.nodes,
        "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="trellis-mobilenetv2", producer_version="1"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: mobilenetv2.py OUT.onnx")
    data = build()
    digest = hashlib.sha256(data).hexdigest()
    with open(sys.argv[1], "wb") as f:
        f.write(data)
    print(f"mobilenetv2: {sys.argv[1]} {len(data)} bytes sha256:{digest}")
    if digest != EXPECTED_SHA256:
        sys.exit(f"mobilenetv2: sha256 {digest} differs from the expected {EXPECTED_SHA256} (onnx/numpy versions?)")


if __name__ == "__main__":
    main()
