"""Tracing a model with ``torch.fx`` and running it once on the clean input, keeping every node's value.

Also the small questions the other parts ask of a traced node: its node arguments (:func:`flat_nodes`), which
argument an in-place operation overwrites (:func:`mutated_argument`), whether it only asks for a shape
(:func:`is_shape_query`), and how to run it on given arguments (:func:`call`).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

IN_PLACE_FUNCTIONS = {torch.relu_, F.relu_, operator.iadd, operator.isub, operator.imul, operator.itruediv}
INPLACE_LAST = {F.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, F.mish, F.elu, F.leaky_relu, F.hardtanh,
                F.dropout}  # functions whose last positional parameter is `inplace`
SHAPE_QUERIES = {"size", "dim", "shape", "ndim", "ndimension"}
VIEWS = {"view", "reshape", "flatten", "permute", "transpose", "narrow", "split", "chunk", "expand", "unsqueeze",
         "squeeze", "unflatten", "view_as", "t", "unbind", "select", "as_strided"}


@dataclass
class Graph:
    """A traced model, its clean run (every node's value), and which nodes depend on the input."""
    gm: fx.GraphModule
    nodes: list
    value: dict
    depends: set
    mutated: dict = field(default_factory=dict)  # in-place node -> the argument it overwrites

    @property
    def input(self) -> fx.Node:
        return self.nodes[0]


class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer, keeping every convolution a leaf (timm's ``Conv2dSame`` computes its padding
    from the input size, which symbolic tracing cannot follow)."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualified_name)


def has_hooks(model: nn.Module) -> bool:
    """Forward hooks on ``model``'s modules, or global ones: the trace would not see what they do."""
    from torch.nn.modules import module as M

    global_hooks = (getattr(M, "_global_forward_hooks", {}), getattr(M, "_global_forward_pre_hooks", {}))
    return any(global_hooks) or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def trace(model: nn.Module, x: Tensor) -> Graph | None:
    """Trace ``model`` and run it once on ``x``, keeping every node's value; None when it cannot be done."""
    try:
        graph = _Tracer().trace(model)
    except Exception:  # untraceable (data-dependent control flow, ...): the batched path
        return None
    gm = fx.GraphModule(model, graph)
    nodes = list(graph.nodes)
    if len([n for n in nodes if n.op == "placeholder"]) != 1:
        return None
    g = Graph(gm, nodes, {}, {nodes[0]})
    order = {n: i for i, n in enumerate(nodes)}
    for node in nodes:
        if node.op == "placeholder":
            g.value[node] = x
        elif node.op == "output":
            g.value[node] = g.value[node.args[0]] if isinstance(node.args[0], fx.Node) else None
        elif not _run_clean(g, node, order):
            return None
    return g


def _run_clean(g: Graph, node: fx.Node, order: dict) -> bool:
    """Compute ``node``'s clean value; False when it overwrites a tensor that is read again later (not
    expressible as a data flow)."""
    if any(a in g.depends for a in flat_nodes((node.args, node.kwargs))):
        g.depends.add(node)
    target = mutated_argument(node, g.gm.get_submodule)
    if target is not None:
        shared = _sharing_storage(target, g.gm)
        if shared is None or any(order[u] > order[node] for t in shared for u in t.users
                                 if u is not node and u not in shared):
            return False
        g.mutated[node] = target
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: g.value[n])
    g.value[node] = call(g.gm, node, clone_first(args) if node in g.mutated else args, kwargs)
    return True


def _sharing_storage(node: fx.Node, gm: fx.GraphModule) -> list | None:
    """``node`` and the nodes it returns unchanged (identity modules, eval-mode dropout, ``contiguous``), whose
    tensor an in-place operation on ``node`` overwrites too; None when a view may share it (not followed)."""
    chain = [node]
    while isinstance(chain[-1], fx.Node):
        n = chain[-1]
        module = gm.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(module, nn.Identity) or (isinstance(module, (nn.Dropout, nn.Dropout2d)) and not module.training) \
                or (n.op == "call_method" and n.target == "contiguous"):
            chain.append(n.args[0])
        elif (n.op == "call_method" and n.target in VIEWS) or (
                n.op == "call_function" and (n.target is operator.getitem
                                             or getattr(n.target, "__name__", "") in VIEWS)):
            return None
        else:
            return chain
    return chain[:-1]


def flat_nodes(args) -> list:
    """The fx nodes among (nested lists, tuples and dicts of) arguments."""
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out.extend(flat_nodes(a))
        elif isinstance(a, dict):
            out.extend(flat_nodes(list(a.values())))
        elif hasattr(a, "op") and hasattr(a, "users"):
            out.append(a)
    return out


def mutated_argument(node, module_of: Callable):
    """The argument an in-place operation overwrites (None when it has none)."""
    first = node.args[0] if node.args else None
    if node.op == "call_module" and getattr(module_of(node.target), "inplace", False):
        return first
    if node.op == "call_function" and (node.target in IN_PLACE_FUNCTIONS or node.kwargs.get("inplace")):
        return first
    if node.op == "call_function" and node.target in INPLACE_LAST and len(node.args) > 1 and node.args[-1] is True:
        return first  # e.g. F.relu(x, True): harmless where the flag meant something else (one more copy)
    if node.op == "call_method" and isinstance(node.target, str) and node.target.endswith("_") and \
            not node.target.startswith("__"):
        return first
    return None


def call(gm, node, args, kwargs):
    """Run one traced node on the given arguments."""
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        value = gm
        for part in node.target.split("."):
            value = getattr(value, part)
        return value
    raise ValueError(f"unexpected node {node.op}")


def clone_first(args):
    """The arguments with the first (an in-place operation's target) copied."""
    first = args[0]
    return (first.clone(), *args[1:]) if isinstance(first, Tensor) else args


def is_shape_query(node) -> bool:
    """``x.size()``, ``x.shape``, ``x.dim()``, ...: answered from a shape, not from values."""
    return (node.op == "call_method" and node.target in SHAPE_QUERIES) or (
        node.op == "call_function" and node.target is getattr and node.args[1] in SHAPE_QUERIES)
