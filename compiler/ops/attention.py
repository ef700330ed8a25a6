"""Multi-head ``attention`` (``nn.MultiheadAttention``, batch first)."""

from __future__ import annotations

from dlc.compiler.cost import Poly, shape
from dlc.compiler.ops.kernel import Attention
from dlc.compiler.ops.pytorch import OMIT, CallSite, Filled, Form, Torch, Var, assign, variables
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register, set_costs
from dlc.compiler.ops.shapes import known, tensor, want_float
from dlc.compiler.types import shape_str


def _qkv(attrs, ins: list) -> list:
    """The query, key and value inputs (the masks given follow them)."""
    return list(ins[:len(ins) - len(attrs.get("keyword_inputs", ()))])


def _masks(attrs, ins: list) -> dict:
    """The masks given, by name."""
    given = attrs.get("keyword_inputs", ())
    return dict(zip(given, ins[len(ins) - len(given):]))


def _check_mask(name: str, m, want: tuple, what: str) -> None:
    """A mask's dtype and its shape ``want`` (batch-less), as nn.MultiheadAttention reads them."""
    m = tensor(m, name)
    floats = name == "attn_mask" and m.dtype in ("float32", "float64", "float16", "bfloat16")
    if m.dtype != "bool" and not floats:
        kinds = "a bool tensor (true = masked) or a float tensor (added to the scores)" if name == "attn_mask" \
            else "a bool tensor (true = padding, ignored)"
        raise ShapeError(f"`attention`: `{name}` must be {kinds}, got {m.dtype}", attr=name, code="type-mismatch",
                         hint="compare token ids to build one: `tokens == pad`" if name == "key_padding_mask"
                         else None)
    if tuple(m.shape) != want:
        raise ShapeError(f"`attention`: `{name}` must be {shape_str(want)} ({what}), got {shape_str(m.shape)}",
                         attr=name)


def _attention(attrs, ins):
    qkv = _qkv(attrs, ins)
    q = tensor(qkv[0], "query")
    k = tensor(qkv[1] if len(qkv) > 1 else qkv[0], "key")
    v = tensor(qkv[2] if len(qkv) > 2 else k, "value")
    for t, what in ((q, "query"), (k, "key"), (v, "value")):
        if t.rank != 2:
            raise ShapeError(f"`attention` expects {what} as a sequence [T, E], got {shape_str(t.shape)}")
        want_float(t, "attention")
        known(t.shape[1], "attention", f"{what} feature size")
    if k.shape[0] != v.shape[0]:
        raise ShapeError(f"`attention`: key and value need the same length, got {shape_str(k.shape)} and "
                         f"{shape_str(v.shape)}")
    e, heads = q.shape[1], attrs["heads"]
    if e % heads:
        raise ShapeError(f"`attention`: heads={heads} must divide the query features ({e})", attr="heads",
                         code="bad-argument")
    masks = _masks(attrs, ins)
    if "key_padding_mask" in masks:
        _check_mask("key_padding_mask", masks["key_padding_mask"], (k.shape[0],), "one flag per key position")
    if "attn_mask" in masks:
        _check_mask("attn_mask", masks["attn_mask"], (q.shape[0], k.shape[0]), "query length x key length")
    return (q,)


def _attention_params(a, ins):
    ins = _qkv(a, ins)
    e = ins[0].shape[1]
    kd = ins[1].shape[1] if len(ins) > 1 else e
    vd = ins[2].shape[1] if len(ins) > 2 else kd
    b = 1 if a["bias"] else 0
    return e * e + e * kd + e * vd + 3 * e * b + e * e + e * b


def _module(a, ins, outs) -> dict:
    ins = _qkv(a, ins)
    e = ins[0].shape[-1]
    kd = ins[1].shape[-1] if len(ins) > 1 else e
    vd = ins[2].shape[-1] if len(ins) > 2 else kd
    # kdim and vdim default to embed_dim
    return {"embed_dim": e, "num_heads": a["heads"], "dropout": a["dropout"], "bias": a["bias"],
            "kdim": OMIT if kd == e else kd, "vdim": OMIT if vd == e else vd, "batch_first": True,
            "causal": a["causal"]}


_KEYWORDS = "{,dropout}{,bias}{,kdim}{,vdim}{,batch_first}"
_DEFAULTS = {"dropout": 0.0, "bias": True, "batch_first": None, "causal": False}


def _call(site: CallSite) -> list[Filled]:
    given = site.attrs.get("keyword_inputs", ())
    args = site.args[:len(site.args) - len(given)]
    masks = dict(zip(given, site.args[len(args):]))
    q = args[0]
    k = args[1] if len(args) > 1 else q
    v = args[2] if len(args) > 2 else k
    lines = []
    mask: object = OMIT
    if "attn_mask" in masks:
        # one [Tq, S] mask per batch element: nn.MultiheadAttention wants one per batch element and head
        mask = Var(site.ctx.fresh("attn_mask"))
        lines.append(assign([mask], Filled("{m}.repeat_interleave({heads}, dim=0)",
                                           {"m": Var(masks["attn_mask"]), "heads": site.attrs["heads"]})))
    if site.attrs["causal"]:
        causal = Var(site.ctx.fresh("causal_mask"))
        lines.append(assign([causal], Filled("torch.ones({q}.shape[1], {k}.shape[1], dtype=torch.bool, "
                                             "device={q}.device).triu(1)", {"q": Var(q), "k": Var(k)})))
        if mask is not OMIT:  # both: a bool mask gains the future positions, a float mask -inf there
            combined = "{m} | {c}" if site.ins[-1].dtype == "bool" else "{m}.masked_fill({c}, float(\"-inf\"))"
            lines.append(assign([mask], Filled(combined, {"m": mask, "c": causal})))
        else:
            mask = causal
    padding = Var(masks["key_padding_mask"]) if "key_padding_mask" in masks else OMIT
    call = Filled("{mod}({*qkv}{,key_padding_mask}, need_weights=False{,attn_mask})",
                  {"mod": Var(site.mod), "qkv": variables([q, k, v]), "key_padding_mask": padding,
                   "attn_mask": mask})
    lines.append(assign([site.outs[0], "_"], call))
    return lines


register(OpDef(
    "attention", (A("heads", "int", 1, min=1), A("causal", "bool", False), A("dropout", "probability", 0.0),
                  A("bias", "bool", True)),
    _attention, count_params=_attention_params,
    inputs=("query", "key", "value"), optional_inputs=frozenset({"key", "value"}),
    keyword_inputs=("key_padding_mask", "attn_mask"), stateful=True,
    torch=Torch(module=Form("nn.MultiheadAttention({embed_dim}, {num_heads}" + _KEYWORDS + ")", _module, _DEFAULTS),
                # inside nn.Sequential: self-attention returning the attended values only (helpers' SelfAttention)
                sequential=Form("SelfAttention({embed_dim}, {num_heads}" + _KEYWORDS + "{,causal})", _module,
                                _DEFAULTS),
                call=_call),
    kernel=Attention(), family="attention",
    label=lambda a: (f"attention, {a['heads']} head{'s' if a['heads'] > 1 else ''}"
                     + (", causal" if a["causal"] else "")),
    doc="Multi-head attention: `attention(query=q, key=k, value=v, heads=1, causal=false)`; "
        "piped alone it is self-attention; masks `key_padding_mask=` (bool [S]) and `attn_mask=` ([Tq, S])."))


def attention_core(a, ins) -> Poly:
    """The MACs of the scores (q @ k^T) and of their product with the values: Tq*S*E each, whatever the heads."""
    qkv = [shape(t) for t in _qkv(a, ins)]
    q, k = qkv[0], qkv[1] if len(qkv) > 1 else qkv[0]
    return 2 * Poly.dim(q[0]) * Poly.dim(k[0]) * q[1]


def _attention_cost(a, ins, outs) -> Poly:
    # the projections of query, key and value to E features and of the result (nn.MultiheadAttention's linears),
    # and the attention itself
    qkv = [shape(t) for t in _qkv(a, ins)]
    q = qkv[0]
    k = qkv[1] if len(qkv) > 1 else q
    v = qkv[2] if len(qkv) > 2 else k
    e = q[1]
    projections = (2 * Poly.dim(q[0]) * e + Poly.dim(k[0]) * k[1] + Poly.dim(v[0]) * v[1]) * e
    return projections + attention_core(a, ins)


set_costs({"attention": _attention_cost})
