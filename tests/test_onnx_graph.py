"""The exported decoder graph's shape for CPU runtimes: what onnxruntime runs per click.

The paper-sized (vit_b-shaped: C = 256, 64 x 64 tokens) decoder is exported here because the
tiny test model is too small to take the CPU paths these tests are about: the fast decoder's
row-blocked upscaling (which, traced, became four ScatterElements) and onnxruntime's
SkipLayerNormalization fusion over 4096 image tokens (slower than the ops it replaces).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript: pip install samkit[onnx]")
ort = pytest.importorskip("onnxruntime", reason="the graph tests run onnxruntime: pip install samkit[onnx]")
onnx = pytest.importorskip("onnx")

from samkit.export import export_decoder  # noqa: E402
from samkit.export.metadata import plain_copy  # noqa: E402
from samkit.export.onnx_decoder import OnnxDecoder  # noqa: E402
from samkit.export.onnx_graph import sums_before_layer_norm  # noqa: E402
from samkit.modeling import build_sam, get_config  # noqa: E402
from samkit.modeling import fast_decoder  # noqa: E402


@pytest.fixture(scope="module")
def vit_b_decoder(tmp_path_factory):
    torch.manual_seed(0)
    model = build_sam(get_config("vit_b"))
    path = export_decoder(model, tmp_path_factory.mktemp("graph") / "decoder.onnx", single_mask=True)
    return model, path


def feeds(num_clicks: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(num_clicks)
    coords = np.concatenate([rng.uniform(0, 1000, (1, num_clicks, 2)), np.zeros((1, 1, 2))], axis=1)
    labels = np.concatenate([np.ones((1, num_clicks)), -np.ones((1, 1))], axis=1)
    return {"image_embeddings": rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
            "point_coords": coords.astype(np.float32), "point_labels": labels.astype(np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.asarray([768, 1024], np.float32)}


def test_vit_b_decoder_graph_has_no_scatters_and_no_add_before_layer_norm(vit_b_decoder):
    _, path = vit_b_decoder
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert not {"ScatterElements", "ScatterND"} & set(ops), "the row-blocked upscaling was traced"
    producers = {out: node for node in graph.node for out in node.output}
    norms = [node for node in graph.node if node.op_type == "LayerNormalization"]
    assert len(norms) >= 9  # the transformer's norms on tokens and image tokens, and the upscaling's
    fed_by = [producers[node.input[0]].op_type for node in norms if node.input[0] in producers]
    assert "Add" not in fed_by
    assert fed_by.count("Sum") >= 9


@pytest.mark.parametrize("num_clicks", [1, 3])
def test_vit_b_decoder_file_equals_the_eager_blocked_path(vit_b_decoder, num_clicks):
    """The file (batched upscaling, Sums) against PyTorch eager, which takes the row-blocked path."""
    model, path = vit_b_decoder
    inputs = feeds(num_clicks)
    eager = OnnxDecoder(plain_copy(model, fast_decoder=True), single_mask=True).eval()
    keys = 4096 * 16 * eager.mask_decoder.output_upscaling[3].out_channels
    assert keys > fast_decoder._BLOCK_VALUES  # eager runs the blocks, so this compares both paths
    with torch.no_grad():
        expected = eager(*(torch.from_numpy(inputs[name]) for name in inputs))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, inputs)
    for name, want, have in zip(("masks", "iou_predictions", "low_res_masks"), expected, got):
        assert have.shape == tuple(want.shape), name
        np.testing.assert_allclose(have, want.numpy(), atol=1e-4, rtol=0, err_msg=name)


def make_graph(second_user: str | None):
    """x + y -> LayerNormalization (and, optionally, the sum also feeding ``second_user``)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["x", "y"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "g", "b"], ["n"], axis=-1)]
    outputs = [helper.make_tensor_value_info("n", TensorProto.FLOAT, [2, 4])]
    if second_user:
        nodes.append(helper.make_node(second_user, ["s", "s"], ["m"]))
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 4]))
    inits = [helper.make_tensor("g", TensorProto.FLOAT, [4], [1.0, 2.0, 0.5, 1.0]),
             helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0, 0.1, 0.2, 0.3])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
              helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]  # broadcast, as Add does
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                             opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize("second_user, rewritten", [(None, 1), ("Mul", 0)])
def test_sums_before_layer_norm_rewrites_only_adds_that_feed_norms_alone(tmp_path, second_user, rewritten):
    import onnx_ir

    original = make_graph(second_user)
    model = onnx_ir.from_proto(original)
    assert sums_before_layer_norm(model) == rewritten
    proto = onnx_ir.to_proto(model)
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node][0] == ("Sum" if rewritten else "Add")
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 4)).astype(np.float32), "y": rng.standard_normal((1, 4)).astype(np.float32)}
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
            for m in (original, proto)]
    for before, after in zip(*runs):
        np.testing.assert_array_equal(before, after)
