"""Fused LSTM and GRU layers: one Triton kernel per time step for the gate math, forward and backward.

``recurrent_forward(module, x, hx, merge, return_sequences)`` runs an ``nn.LSTM`` or ``nn.GRU``
(``batch_first=True``) on its own parameters and returns ``(output, state)`` as the module does, with
the output shaped the Keras way (bidirectional merge, last time step only).

On the fused path each layer is one ``torch.autograd.Function`` (both directions):

- the input projection of all time steps of a direction is one matmul, made outside the Function
  (``x @ W_ih^T + b_ih``, plus ``b_hh`` for the LSTM), so autograd carries its gradients to ``x``,
  ``W_ih`` and the biases;
- each time step is a torch matmul ``h_prev @ W_hh^T`` (``+ b_hh`` for the GRU, whose ``b_hn`` sits
  inside ``r * (...)``) and one step kernel for the gate math, which writes ``h`` straight into its
  place in the layer output. On the last layer of a bidirectional module whose directions are merged
  by ``sum``, ``mul`` or ``ave`` (with ``return_sequences``), the backward direction's step kernel
  reads the forward direction's ``h`` at that time step and writes the merged value instead;
- the backward pass runs back through time with a step-backward kernel for the gate math and torch
  matmuls for ``dh_prev`` and the weight gradients.

Gate math is computed in float32 (float64 for float64 inputs); gate activations and the LSTM cell
state are kept in that precision for the backward pass, ``h`` in the input dtype.

The Keras merge of the two directions is :func:`dlc.backends.torch.runtime.recurrent.merge_directions`,
which generated modules embed with the helpers.

Anything else (``use_triton`` false, ``nn.RNN``, LSTM projections, unbatched input) calls the module
itself and shapes its output the same way.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dlc.backends.torch.runtime.recurrent import merge_directions
from dlc.backends.triton.runtime.common import LAUNCHES, dlc_tanh, jit, launch, tl, triton, use_triton  # noqa: F401

# ---- embedded below ----
# Largest block (batch rows x hidden units) of one step-kernel program; both are powers of two.
_RNN_BLOCK_B = 16
_RNN_BLOCK_H = 64
# How a step kernel writes the layer output / reads its gradient.
_RNN_OWN = 0  # this direction's own h
_RNN_SUM = 1  # fwd + bwd
_RNN_MUL = 2  # fwd * bwd
_RNN_AVE = 3  # (fwd + bwd) / 2
_RNN_SKIP = 4  # nothing (the forward direction of a merged output: the backward one writes the merge)
_RNN_MERGES = {"sum": _RNN_SUM, "mul": _RNN_MUL, "ave": _RNN_AVE}


@jit
def _rnn_put(out_ptrs, oth_ptrs, h, mask, MERGE: tl.constexpr, CDT: tl.constexpr):
    """Write h (MERGE=0) or its merge with the other direction's h into the output."""
    if MERGE != 4:
        v = h
        if MERGE == 1:
            v = h + tl.load(oth_ptrs, mask=mask, other=0.0).to(CDT)
        if MERGE == 2:
            v = h * tl.load(oth_ptrs, mask=mask, other=0.0).to(CDT)
        if MERGE == 3:
            v = (h + tl.load(oth_ptrs, mask=mask, other=0.0).to(CDT)) * 0.5
        tl.store(out_ptrs, v.to(out_ptrs.dtype.element_ty), mask=mask)


@jit
def _rnn_dout(dout_ptrs, oth_ptrs, mask, MERGE: tl.constexpr, CDT: tl.constexpr):
    """This direction's share of the output gradient at one time step."""
    d = tl.load(dout_ptrs, mask=mask, other=0.0).to(CDT)
    if MERGE == 2:
        d = d * tl.load(oth_ptrs, mask=mask, other=0.0).to(CDT)
    if MERGE == 3:
        d = d * 0.5
    return d


@jit
def _rnn_lstm_fwd_kernel(
    xp_ptr,
    sxb,
    hp_ptr,
    c_prev_ptr,
    c_ptr,
    gate_ptr,
    h_ptr,
    out_ptr,
    sob,
    oth_ptr,
    B,
    H,
    MERGE: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One LSTM step: gates i, f, g, o from xp (x W_ih^T + biases) + hp (h_prev W_hh^T); c and h."""
    rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    rh = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H))[None, :]
    mask = (rb < B) & (rh < H)
    xp = xp_ptr + rb * sxb + rh
    hp = hp_ptr + rb * (4 * H) + rh
    pre = tl.load(xp, mask=mask, other=0.0).to(CDT) + tl.load(hp, mask=mask, other=0.0).to(CDT)
    gi = tl.sigmoid(pre)
    pre = tl.load(xp + H, mask=mask, other=0.0).to(CDT) + tl.load(hp + H, mask=mask, other=0.0).to(CDT)
    gf = tl.sigmoid(pre)
    pre = tl.load(xp + 2 * H, mask=mask, other=0.0).to(CDT) + tl.load(hp + 2 * H, mask=mask, other=0.0).to(CDT)
    gg = dlc_tanh(pre)
    pre = tl.load(xp + 3 * H, mask=mask, other=0.0).to(CDT) + tl.load(hp + 3 * H, mask=mask, other=0.0).to(CDT)
    go = tl.sigmoid(pre)
    st = rb * H + rh
    c = gf * tl.load(c_prev_ptr + st, mask=mask, other=0.0).to(CDT) + gi * gg
    h = (go * dlc_tanh(c)).to(h_ptr.dtype.element_ty)
    tl.store(c_ptr + st, c.to(c_ptr.dtype.element_ty), mask=mask)
    gp = gate_ptr + rb * (4 * H) + rh
    tl.store(gp, gi.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(gp + H, gf.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(gp + 2 * H, gg.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(gp + 3 * H, go.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(h_ptr + st, h, mask=mask)
    _rnn_put(out_ptr + rb * sob + rh, oth_ptr + st, h.to(CDT), mask, MERGE, CDT)


@jit
def _rnn_lstm_bwd_kernel(
    dout_ptr,
    sdb,
    oth_ptr,
    dh_ptr,
    dc_ptr,
    gate_ptr,
    c_prev_ptr,
    c_ptr,
    dg_ptr,
    B,
    H,
    MERGE: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One LSTM step backwards: dgates (pre-activation) from dh = dout + dh_next and dc_next; dc -> dc_prev."""
    rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    rh = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H))[None, :]
    mask = (rb < B) & (rh < H)
    st = rb * H + rh
    dh = tl.load(dh_ptr + st, mask=mask, other=0.0).to(CDT)
    dh += _rnn_dout(dout_ptr + rb * sdb + rh, oth_ptr + st, mask, MERGE, CDT)
    gp = gate_ptr + rb * (4 * H) + rh
    gi = tl.load(gp, mask=mask, other=0.0).to(CDT)
    gf = tl.load(gp + H, mask=mask, other=0.0).to(CDT)
    gg = tl.load(gp + 2 * H, mask=mask, other=0.0).to(CDT)
    go = tl.load(gp + 3 * H, mask=mask, other=0.0).to(CDT)
    tc = dlc_tanh(tl.load(c_ptr + st, mask=mask, other=0.0).to(CDT))
    dc = tl.load(dc_ptr + st, mask=mask, other=0.0).to(CDT) + dh * go * (1.0 - tc * tc)
    d_i = dc * gg * gi * (1.0 - gi)
    d_f = dc * tl.load(c_prev_ptr + st, mask=mask, other=0.0).to(CDT) * gf * (1.0 - gf)
    d_g = dc * gi * (1.0 - gg * gg)
    d_o = dh * tc * go * (1.0 - go)
    tl.store(dc_ptr + st, (dc * gf).to(dc_ptr.dtype.element_ty), mask=mask)
    dp = dg_ptr + rb * (4 * H) + rh
    tl.store(dp, d_i.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(dp + H, d_f.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(dp + 2 * H, d_g.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(dp + 3 * H, d_o.to(dg_ptr.dtype.element_ty), mask=mask)


@jit
def _rnn_gru_fwd_kernel(
    xp_ptr,
    sxb,
    hp_ptr,
    h_prev_ptr,
    gate_ptr,
    h_ptr,
    out_ptr,
    sob,
    oth_ptr,
    B,
    H,
    MERGE: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One GRU step: r, z from xp + hp; n = tanh(xp_n + r * hp_n) (hp includes b_hh); h = n + z (h_prev - n)."""
    rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    rh = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H))[None, :]
    mask = (rb < B) & (rh < H)
    xp = xp_ptr + rb * sxb + rh
    hp = hp_ptr + rb * (3 * H) + rh
    r = tl.sigmoid(tl.load(xp, mask=mask, other=0.0).to(CDT) + tl.load(hp, mask=mask, other=0.0).to(CDT))
    z = tl.sigmoid(tl.load(xp + H, mask=mask, other=0.0).to(CDT) + tl.load(hp + H, mask=mask, other=0.0).to(CDT))
    hn = tl.load(hp + 2 * H, mask=mask, other=0.0).to(CDT)
    n = dlc_tanh(tl.load(xp + 2 * H, mask=mask, other=0.0).to(CDT) + r * hn)
    st = rb * H + rh
    h_prev = tl.load(h_prev_ptr + st, mask=mask, other=0.0).to(CDT)
    h = (n + z * (h_prev - n)).to(h_ptr.dtype.element_ty)
    gp = gate_ptr + rb * (4 * H) + rh
    tl.store(gp, r.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(gp + H, z.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(gp + 2 * H, n.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(gp + 3 * H, hn.to(gate_ptr.dtype.element_ty), mask=mask)
    tl.store(h_ptr + st, h, mask=mask)
    _rnn_put(out_ptr + rb * sob + rh, oth_ptr + st, h.to(CDT), mask, MERGE, CDT)


@jit
def _rnn_gru_bwd_kernel(
    dout_ptr,
    sdb,
    oth_ptr,
    dh_ptr,
    gate_ptr,
    h_prev_ptr,
    dx_ptr,
    dhp_ptr,
    dhz_ptr,
    B,
    H,
    MERGE: tl.constexpr,
    CDT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One GRU step backwards: pre-activation grads of the input side (dx) and hidden side (dhp, whose n part
    is scaled by r), and dh * z, the part of dh_prev that does not go through W_hh."""
    rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B))[:, None]
    rh = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H))[None, :]
    mask = (rb < B) & (rh < H)
    st = rb * H + rh
    dh = tl.load(dh_ptr + st, mask=mask, other=0.0).to(CDT)
    dh += _rnn_dout(dout_ptr + rb * sdb + rh, oth_ptr + st, mask, MERGE, CDT)
    gp = gate_ptr + rb * (4 * H) + rh
    r = tl.load(gp, mask=mask, other=0.0).to(CDT)
    z = tl.load(gp + H, mask=mask, other=0.0).to(CDT)
    n = tl.load(gp + 2 * H, mask=mask, other=0.0).to(CDT)
    hn = tl.load(gp + 3 * H, mask=mask, other=0.0).to(CDT)
    h_prev = tl.load(h_prev_ptr + st, mask=mask, other=0.0).to(CDT)
    d_n = dh * (1.0 - z) * (1.0 - n * n)
    d_z = dh * (h_prev - n) * z * (1.0 - z)
    d_r = d_n * hn * r * (1.0 - r)
    xq = dx_ptr + rb * (3 * H) + rh
    tl.store(xq, d_r.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(xq + H, d_z.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(xq + 2 * H, d_n.to(dx_ptr.dtype.element_ty), mask=mask)
    hq = dhp_ptr + rb * (3 * H) + rh
    tl.store(hq, d_r.to(dhp_ptr.dtype.element_ty), mask=mask)
    tl.store(hq + H, d_z.to(dhp_ptr.dtype.element_ty), mask=mask)
    tl.store(hq + 2 * H, (d_n * r).to(dhp_ptr.dtype.element_ty), mask=mask)
    tl.store(dhz_ptr + st, (dh * z).to(dhz_ptr.dtype.element_ty), mask=mask)


def _rnn_grid(B, H):
    bb = min(_RNN_BLOCK_B, triton.next_power_of_2(B))
    bh = min(_RNN_BLOCK_H, triton.next_power_of_2(H))
    return (triton.cdiv(B, bb), triton.cdiv(H, bh)), bb, bh


class _RnnLayerFn(torch.autograd.Function):
    """One layer (every direction) of an LSTM or GRU from its input projections.

    Inputs: cell ("lstm" | "gru"), merge (_RNN_OWN, or _RNN_SUM/_MUL/_AVE to merge two directions into
    one [B, T, H] output), h0 / c0 ([dirs, B, H] or None), then per direction xp ([B, T, G*H]), W_hh and
    b_hh (GRU only, else None). Outputs: the layer output, h_n and c_n ([dirs, B, H]; c_n empty for a GRU).
    """

    @staticmethod
    def forward(ctx, cell, merge, h0, c0, *per_dir):
        lstm = cell == "lstm"
        dirs = len(per_dir) // 3
        xp0, w0 = per_dir[0], per_dir[1]
        B, T = xp0.shape[0], xp0.shape[1]
        H = w0.shape[1]
        dtype = xp0.dtype
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        cdt = tl.float64 if dtype == torch.float64 else tl.float32
        grid, bb, bh = _rnn_grid(B, H)
        out = xp0.new_empty(B, T, H if merge != _RNN_OWN else dirs * H)
        hss, css, gss, hn, cn = [], [], [], [], []
        for d in range(dirs):
            xp, w, b = per_dir[3 * d : 3 * d + 3]
            hs = xp.new_empty(T + 1, B, H)
            cs = xp.new_empty(T + 1, B, H, dtype=acc) if lstm else hs
            if h0 is None:
                hs[0].zero_()
            else:
                hs[0].copy_(h0[d])
            if lstm:
                if c0 is None:
                    cs[0].zero_()
                else:
                    cs[0].copy_(c0[d])
            gates = xp.new_empty(T, B, 4 * H, dtype=acc)
            wt = w.t()
            for s in range(T):
                t = s if d == 0 else T - 1 - s
                hp = torch.mm(hs[s], wt) if b is None else torch.addmm(b, hs[s], wt)
                if merge == _RNN_OWN:
                    mode, dst, oth = _RNN_OWN, out[:, t, d * H : (d + 1) * H], hs[s + 1]
                elif d == 0:
                    mode, dst, oth = _RNN_SKIP, out[:, t], hs[s + 1]
                else:
                    mode, dst, oth = merge, out[:, t], hss[0][t + 1]
                if lstm:
                    launch(_rnn_lstm_fwd_kernel, grid)(
                        xp[:, t],
                        xp.stride(0),
                        hp,
                        cs[s],
                        cs[s + 1],
                        gates[s],
                        hs[s + 1],
                        dst,
                        out.stride(0),
                        oth,
                        B,
                        H,
                        MERGE=mode,
                        CDT=cdt,
                        BLOCK_B=bb,
                        BLOCK_H=bh,
                    )
                else:
                    launch(_rnn_gru_fwd_kernel, grid)(
                        xp[:, t],
                        xp.stride(0),
                        hp,
                        hs[s],
                        gates[s],
                        hs[s + 1],
                        dst,
                        out.stride(0),
                        oth,
                        B,
                        H,
                        MERGE=mode,
                        CDT=cdt,
                        BLOCK_B=bb,
                        BLOCK_H=bh,
                    )
            hss.append(hs)
            css.append(cs)
            gss.append(gates)
            hn.append(hs[T])
            if lstm:
                cn.append(cs[T].to(dtype))
        ctx.lstm, ctx.merge, ctx.dirs = lstm, merge, dirs
        ctx.has_h0, ctx.has_c0 = h0 is not None, c0 is not None
        ctx.has_b = [per_dir[3 * d + 2] is not None for d in range(dirs)]
        ctx.save_for_backward(*[per_dir[3 * d + 1] for d in range(dirs)], *hss, *(css if lstm else []), *gss)
        h_n = torch.stack(hn)
        c_n = torch.stack(cn) if lstm else h_n.new_empty(0)
        return out, h_n, c_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_hn, g_cn):
        lstm, merge, dirs = ctx.lstm, ctx.merge, ctx.dirs
        saved = list(ctx.saved_tensors)
        ws, hss = saved[:dirs], saved[dirs : 2 * dirs]
        css = saved[2 * dirs : 3 * dirs] if lstm else None
        gss = saved[3 * dirs :] if lstm else saved[2 * dirs :]
        T, B, H = hss[0].shape[0] - 1, hss[0].shape[1], hss[0].shape[2]
        dtype = hss[0].dtype
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        cdt = tl.float64 if dtype == torch.float64 else tl.float32
        grid, bb, bh = _rnn_grid(B, H)
        g_out = g_out.contiguous()
        dh0, dc0, per_dir = [], [], []
        for d in range(dirs):
            w, hs, gates = ws[d], hss[d], gss[d]
            dh = g_hn[d].to(dtype).contiguous()
            if lstm:
                dc = g_cn[d].to(acc).clone()
                dg = hs.new_empty(T, B, 4 * H)
            else:
                dx = hs.new_empty(T, B, 3 * H)
                dg = hs.new_empty(T, B, 3 * H)
                dhz = hs.new_empty(B, H)
            for s in reversed(range(T)):
                t = s if d == 0 else T - 1 - s
                if merge == _RNN_OWN:
                    dout, oth = g_out[:, t, d * H : (d + 1) * H], hs[s + 1]
                else:
                    dout, oth = g_out[:, t], (hss[1][T - t] if d == 0 else hss[0][t + 1])
                if lstm:
                    launch(_rnn_lstm_bwd_kernel, grid)(
                        dout,
                        g_out.stride(0),
                        oth,
                        dh,
                        dc,
                        gates[s],
                        css[d][s],
                        css[d][s + 1],
                        dg[s],
                        B,
                        H,
                        MERGE=merge,
                        CDT=cdt,
                        BLOCK_B=bb,
                        BLOCK_H=bh,
                    )
                    dh = torch.mm(dg[s], w)
                else:
                    launch(_rnn_gru_bwd_kernel, grid)(
                        dout,
                        g_out.stride(0),
                        oth,
                        dh,
                        gates[s],
                        hs[s],
                        dx[s],
                        dg[s],
                        dhz,
                        B,
                        H,
                        MERGE=merge,
                        CDT=cdt,
                        BLOCK_B=bb,
                        BLOCK_H=bh,
                    )
                    dh = torch.addmm(dhz, dg[s], w)
            dw = dg.reshape(T * B, -1).t() @ hs[:T].reshape(T * B, H)
            db = dg.sum((0, 1)) if ctx.has_b[d] else None
            dxp = dg if lstm else dx
            dxp = (dxp if d == 0 else dxp.flip(0)).transpose(0, 1)
            per_dir += [dxp, dw, db]
            dh0.append(dh)
            if lstm:
                dc0.append(dc)
        g_h0 = torch.stack(dh0) if ctx.has_h0 else None
        g_c0 = torch.stack(dc0).to(dtype) if ctx.has_c0 else None
        return (None, None, g_h0, g_c0, *per_dir)


def _rnn_fused(module, x, hx, merge):
    """The module's output and state, computed with the step kernels.

    merge is _RNN_OWN (output [B, T, dirs*H] as the module's) or, for a bidirectional module, the code of
    the merge that the last layer's backward-direction step kernel writes into a [B, T, H] output.
    """
    lstm = isinstance(module, nn.LSTM)
    dirs = 2 if module.bidirectional else 1
    if hx is None:
        h0 = c0 = None
    elif lstm:
        h0, c0 = hx
    else:
        h0, c0 = hx, None
    inp, hn, cn = x, [], []
    for k in range(module.num_layers):
        if k > 0 and module.dropout > 0 and module.training:
            inp = F.dropout(inp, module.dropout, training=True)
        per_dir = []
        for d in range(dirs):
            sfx = f"l{k}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(module, "weight_ih_" + sfx), getattr(module, "weight_hh_" + sfx)
            b_ih = getattr(module, "bias_ih_" + sfx) if module.bias else None
            b_hh = getattr(module, "bias_hh_" + sfx) if module.bias else None
            if lstm:  # both biases sit outside the gate nonlinearities: fold b_hh into the input projection
                per_dir += [F.linear(inp, w_ih, None if b_ih is None else b_ih + b_hh), w_hh, None]
            else:  # the GRU's b_hn is multiplied by r: b_hh stays with the hidden projection
                per_dir += [F.linear(inp, w_ih, b_ih), w_hh, b_hh]
        rows = slice(k * dirs, (k + 1) * dirs)
        mode = merge if k == module.num_layers - 1 else _RNN_OWN
        inp, h_k, c_k = _RnnLayerFn.apply(
            "lstm" if lstm else "gru",
            mode,
            None if h0 is None else h0[rows],
            None if c0 is None else c0[rows],
            *per_dir,
        )
        hn.append(h_k)
        cn.append(c_k)
    return inp, ((torch.cat(hn), torch.cat(cn)) if lstm else torch.cat(hn))


def _rnn_shape(y, module, merge, return_sequences):
    """The Keras-style output from the module's output y [B, T, dirs*H]."""
    if merge is None or not module.bidirectional:
        return y if return_sequences else y[:, -1]
    return merge_directions(y, merge, return_sequences)


def recurrent_forward(
    module: nn.Module, x: torch.Tensor, hx=None, merge: str | None = None, return_sequences: bool = True
):
    """Run a batch-first ``nn.LSTM`` / ``nn.GRU`` on x [B, T, F] with its own parameters: ``(output, state)``.

    hx and state are as the module takes and returns them (LSTM ``(h, c)``, GRU ``h``; [layers*dirs, B, H]).
    The output is the module's [B, T, dirs*H] when merge is None (the last time step only without
    return_sequences); for a bidirectional module merge ("concat", "sum", "mul", "ave") combines the
    forward and backward directions per time step, or without return_sequences the forward direction's
    last output with the backward direction's output at step 0 (Keras semantics). The Triton kernels run
    when ``use_triton`` allows and the module is an LSTM (without projections) or a GRU on 3-D input;
    otherwise the module itself runs.
    """
    if merge not in (None, "concat", "sum", "mul", "ave"):
        raise ValueError(f"unknown merge mode {merge!r}")
    if not getattr(module, "batch_first", False):
        raise ValueError("recurrent_forward needs a batch_first recurrent module")
    states = () if hx is None else (tuple(hx) if isinstance(hx, (tuple, list)) else (hx,))
    fused = (
        isinstance(module, (nn.LSTM, nn.GRU))
        and getattr(module, "proj_size", 0) == 0
        and x.dim() == 3
        and x.shape[1] > 0
        and use_triton(x, *states)
    )
    if not fused:
        y, state = module(x, hx)
        return _rnn_shape(y, module, merge, return_sequences), state
    if module.bidirectional and return_sequences and merge in _RNN_MERGES:
        y, state = _rnn_fused(module, x, hx, _RNN_MERGES[merge])
        return y, state
    y, state = _rnn_fused(module, x, hx, _RNN_OWN)
    return _rnn_shape(y, module, merge, return_sequences), state
