"""Fold the size-dependent padding of TF-"same" convolutions into constants for the card's fixed tile size.

timm's `tf_*` models pad stride-2 convolutions by an amount computed from the input's height and width (Shape,
Gather, Ceil, ... then Pad). Exported as is, every stride-2 convolution runs as a separate Pad, which ONNX Runtime's
CPU provider cannot fuse (its pads are not constants) and which breaks its blocked-layout convolution chain into
reorders both sides: 31% of the scan's model time on 2 cores (docs/RESULTS.md, "CPU speed"). Tiles always have the
card's crop size, so the pads are constants; once they are initializers, ONNX Runtime's pad fusion moves them into
the convolutions. Same weights, same function: the export's parity check still holds it to 1e-4.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError


def fold_dynamic_pads(proto: onnx.ModelProto, crop: int) -> tuple[onnx.ModelProto, int]:
    """A copy of `proto` whose Pad nodes take constant pads (those of a crop x crop input), the shape arithmetic
    that computed them removed; and how many pads were folded."""
    constant = {i.name for i in proto.graph.initializer}
    targets = [n.input[1] for n in proto.graph.node if n.op_type == "Pad" and n.input[1] not in constant]
    if not targets:
        return proto, 0
    values = _evaluate(proto, targets, crop)
    folded = onnx.ModelProto()
    folded.CopyFrom(proto)
    for name, value in values.items():
        folded.graph.initializer.append(numpy_helper.from_array(value, f"{name}__static"))
    for node in folded.graph.node:
        if node.op_type == "Pad" and node.input[1] in values:
            node.input[1] = f"{node.input[1]}__static"
    _drop_unused_nodes(folded.graph)
    return folded, len(values)


def _evaluate(proto: onnx.ModelProto, names: list[str], crop: int) -> dict[str, np.ndarray]:
    """The tensors `names` for a crop x crop input, checked to be the same for every batch size."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    one, three = (session.run(names, {"input": np.zeros((b, 3, crop, crop), np.float32)}) for b in (1, 3))
    if any(not np.array_equal(a, b) for a, b in zip(one, three)):
        raise ModelError("a Pad's amount depends on the batch size: it cannot be folded into a constant")
    return dict(zip(names, one))


def _drop_unused_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes none of whose outputs reach a graph output (walked from the outputs back)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    kept = list(reversed(keep))
    del graph.node[:]
    graph.node.extend(kept)
    used = needed
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
