"""Folding TF-"same" padding into constants: the same function as the exported graph, fewer nodes, no Pad left
whose amount is computed at run time."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from timm.layers import Conv2dSame

from forensics.errors import ModelError
from forensics.training.static_pads import fold_dynamic_pads


def _export(module: torch.nn.Module, crop: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices, as in export.py
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(2, 3, crop, crop),), buf, input_names=["input"],
                          output_names=["out"], dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]


def test_same_padding_is_folded_and_the_outputs_are_unchanged():
    torch.manual_seed(0)
    net = torch.nn.Sequential(Conv2dSame(3, 8, 3, stride=2), torch.nn.ReLU(), Conv2dSame(8, 4, 5, stride=2))
    proto = _export(net, 37)  # odd size: the TF pads are asymmetric
    folded, count = fold_dynamic_pads(proto, 37)
    assert count == 2 and len(folded.graph.node) < len(proto.graph.node) // 2
    constants = {i.name for i in folded.graph.initializer}
    assert all(n.input[1] in constants for n in folded.graph.node if n.op_type == "Pad")
    assert not any(n.op_type == "Shape" for n in folded.graph.node)
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 37, 37)).astype(np.float32)
        assert np.array_equal(_run(proto, x), _run(folded, x))
    with torch.inference_mode():
        assert np.allclose(_run(folded, x), net(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_a_graph_without_dynamic_pads_is_left_alone():
    proto = _export(torch.nn.Conv2d(3, 4, 3, padding=1), 16)
    folded, count = fold_dynamic_pads(proto, 16)
    assert count == 0 and folded is proto


def test_pads_that_depend_on_the_batch_are_refused():
    class BatchPad(torch.nn.Module):
        def forward(self, x):
            n = x.shape[0]
            return torch.nn.functional.pad(x, [0, n, 0, 0])

    with pytest.raises(ModelError, match="batch size"):
        fold_dynamic_pads(_export(BatchPad(), 8), 8)
