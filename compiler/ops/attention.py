"""Multi-head ``attention`` (``nn.MultiheadAttention``, batch first)."""

from __future__ import annotations

from dlc.compiler.ops.kernel import Attention
from dlc.compiler.ops.pytorch import OMIT, CallSite, Filled, Form, Torch, Var, assign, variables
from dlc.compiler.ops.registry import Attr as A, OpDef, ShapeError, register
from dlc.compiler.ops.shapes import known, tensor, want_float
from dlc.compiler.types import shape_str


def _attention(attrs, ins):
    q = tensor(ins[0], "query")
    k = tensor(ins[1] if len(ins) > 1 else ins[0], "key")
    v = tensor(ins[2] if len(ins) > 2 else k, "value")
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
    return (q,)


def _attention_params(a, ins):
    e = ins[0].shape[1]
    kd = ins[1].shape[1] if len(ins) > 1 else e
    vd = ins[2].shape[1] if len(ins) > 2 else kd
    b = 1 if a["bias"] else 0
    return e * e + e * kd + e * vd + 3 * e * b + e * e + e * b


def _module(a, ins, outs) -> dict:
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
    q = site.args[0]
    k = site.args[1] if len(site.args) > 1 else q
    v = site.args[2] if len(site.args) > 2 else k
    lines = []
    mask: object = OMIT
    if site.attrs["causal"]:
        mask = Var(site.ctx.fresh("causal_mask"))
        lines.append(assign([mask], Filled("torch.ones({q}.shape[1], {k}.shape[1], dtype=torch.bool, device={q}.device)"
                                           ".triu(1)", {"q": Var(q), "k": Var(k)})))
    call = Filled("{mod}({*qkv}, need_weights=False{,attn_mask})",
                  {"mod": Var(site.mod), "qkv": variables([q, k, v]), "attn_mask": mask})
    lines.append(assign([site.outs[0], "_"], call))
    return lines


register(OpDef(
    "attention", (A("heads", "int", 1, min=1), A("causal", "bool", False), A("dropout", "probability", 0.0),
                  A("bias", "bool", True)),
    _attention, count_params=_attention_params,
    inputs=("query", "key", "value"), optional_inputs=frozenset({"key", "value"}), stateful=True,
    torch=Torch(module=Form("nn.MultiheadAttention({embed_dim}, {num_heads}" + _KEYWORDS + ")", _module, _DEFAULTS),
                # inside nn.Sequential: self-attention returning the attended values only (helpers' SelfAttention)
                sequential=Form("SelfAttention({embed_dim}, {num_heads}" + _KEYWORDS + "{,causal})", _module,
                                _DEFAULTS),
                call=_call),
    kernel=Attention(), family="attention",
    label=lambda a: (f"attention, {a['heads']} head{'s' if a['heads'] > 1 else ''}"
                     + (", causal" if a["causal"] else "")),
    doc="Multi-head attention: `attention(query=q, key=k, value=v, heads=1, causal=false)`; "
        "piped alone it is self-attention."))
