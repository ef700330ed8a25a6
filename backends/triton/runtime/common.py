"""What fused modules need besides their generated kernels: the choice between Triton and PyTorch,
launchers, autograd functions and a few small helpers.

A fused module runs its Triton kernels on CUDA tensors, and on CPU tensors too when the Triton
interpreter is on (``TRITON_INTERPRET=1``, set before triton is imported: that is how the tests run
the kernels). Everywhere else, and whenever triton is not installed, each fused call computes the
same function with PyTorch ops.

The embedded part is split into sections (``# ---- section: NAME ----``); a generated file carries
``core`` and only the other sections it uses.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

# ---- embedded below ----
# ---- section: core ----
try:
    import triton
    import triton.language as tl

    jit = triton.jit
except ImportError:  # no triton: every fused call below takes its PyTorch path
    triton = None

    class tl:  # noqa: N801 - stands in for triton.language in kernel signatures, which then never run
        constexpr = int

    def jit(fn):
        return fn


TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Elements per program of the elementwise kernels. Under the interpreter a program is a NumPy step,
# so large blocks keep whole-model runs fast; tests that exercise masks set a small one.
ELEMENTWISE_BLOCK = 65536 if TRITON_INTERPRET else 1024


def use_triton(*tensors):
    """True when the fused kernels can run on these tensors.

    Never while torch.compile or torch.export traces the module: they capture the plain layers' ops in its
    place (and compile their own kernels), as they cannot trace a Triton launch on fake tensors.
    """
    if triton is None or torch.compiler.is_compiling():
        return False
    return all(t.is_cuda or TRITON_INTERPRET for t in tensors if t is not None)


# Kernel launches by kernel name since this module was imported (or the dict cleared). One dict update per
# launch costs nothing next to the launch itself, and it is how a test tells that the Triton path really ran.
LAUNCHES = {}


def launch(kernel, grid):
    """``kernel[grid]``, the launcher of a Triton kernel, with the launch counted in ``LAUNCHES``."""
    LAUNCHES[kernel.__name__] = LAUNCHES.get(kernel.__name__, 0) + 1
    return kernel[grid]


@jit
def dlc_tanh(x):
    """tanh: a rational approximation near 0 (Cephes' coefficients), one exponential elsewhere."""
    z = x * x
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3
    small = x + x * z * (p / q)
    t = tl.exp(-2.0 * tl.abs(x))
    large = (1.0 - t) / (1.0 + t)
    return tl.where(tl.abs(x) < 0.625, small, tl.where(x < 0, -large, large))


@jit
def dlc_softplus(x):
    """log(1 + exp(x)) without overflow; equals x above 20, as torch.nn.functional.softplus."""
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x))))


@jit
def dlc_gelu_grad(x):
    """d/dx of x * Phi(x) (exact GELU)."""
    return 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * tl.exp(-0.5 * x * x)


@jit
def dlc_gelu_tanh(x):
    """GELU with the tanh approximation."""
    return 0.5 * x * (1.0 + dlc_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@jit
def dlc_gelu_tanh_grad(x):
    t = dlc_tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)


@jit
def dlc_mish_grad(x):
    t = dlc_tanh(dlc_softplus(x))
    return t + x * (1.0 - t * t) * tl.sigmoid(x)


@jit
def dlc_dropout_keep(seed, offsets, p, on):
    """Per element 0 (dropped, with probability p) or 1 / (1 - p); 1 everywhere when `on` is 0."""
    kept = tl.rand(seed, offsets) >= p
    return tl.where(on == 0, 1.0, tl.where(kept, 1.0 / (1.0 - p), 0.0))


def dropout_seed(on):
    """A fresh seed for a fused dropout, drawn from torch's generator (so torch.manual_seed repeats it)."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item()) if on else 0


def version_key(*tensors):
    """Identifies the current values of tensors, for caches; None where versions are not tracked, or while
    torch.compile or torch.export traces (fake tensors have no data pointer: the trace computes afresh)."""
    if torch.compiler.is_compiling() or any(t.is_inference() for t in tensors):
        return None
    return tuple((t.data_ptr(), t._version) for t in tensors)


def _reduce_to(grad, shape, dtype):
    """Sum a full-size gradient over the axes an input was broadcast along."""
    extra = grad.dim() - len(shape)
    dims = list(range(extra)) + [extra + i for i, s in enumerate(shape) if s == 1 and grad.shape[extra + i] != 1]
    if dims:
        grad = grad.sum(dims, keepdim=True)
    return grad.reshape(shape).to(dtype)


def _compute_dtype(dtype):
    """The dtype kernels compute in, as Triton names it."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def _compute_torch_dtype(dtype):
    """The same, as torch names it (for gradient and pre-epilogue buffers)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _need_mask(needs):
    """The backward kernels' NEED: bit i set when input i needs a gradient."""
    return sum(1 << i for i, need in enumerate(needs) if need)


def _memory_order(t):
    """The axis order a kernel walks: channels-last 4-d tensors in their memory order, others as they are."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return (0, 2, 3, 1)
    return tuple(range(t.dim()))


def _empty(shape, dtype, device, order):
    """A tensor of ``shape`` laid out in ``order``, and its view in that order (dense, for the kernel)."""
    if order == (0, 2, 3, 1):
        t = torch.empty(shape, dtype=dtype, device=device, memory_format=torch.channels_last)
        return t, t.permute(order)
    t = torch.empty(shape, dtype=dtype, device=device)
    return t, t


def _in_order(inputs, full, shape, order):
    """The inputs as the kernel reads them: full ones dense in ``order``, the others through broadcast strides."""
    return [
        t.permute(order).contiguous() if f else t.expand(shape).permute(order)
        for t, f in zip(inputs, full, strict=True)
    ]


class _Elementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, on, dtype, *inputs):
        shape = torch.broadcast_shapes(*(t.shape for t in inputs))
        order = _memory_order(inputs[0]) if kernel.full[0] else tuple(range(len(shape)))
        ins = _in_order(inputs, kernel.full, shape, order)
        out, walk = _empty(shape, dtype, inputs[0].device, order)
        seed = dropout_seed(on)
        kernel.launch(kernel.forward, [walk], ins, seed, on, walk.shape, dtype)
        ctx.save_for_backward(*inputs)
        ctx.kernel, ctx.on, ctx.seed, ctx.shape, ctx.dtype, ctx.order = kernel, on, seed, shape, dtype, order
        return out

    @staticmethod
    def backward(ctx, grad):
        kernel, shape, order = ctx.kernel, ctx.shape, ctx.order
        inputs = ctx.saved_tensors
        ins = _in_order(inputs, kernel.full, shape, order)
        needs = ctx.needs_input_grad[3:]
        grads = [_empty(shape, _compute_torch_dtype(ctx.dtype), grad.device, order) if need else None for need in needs]
        walk_grad = grad.permute(order).contiguous()
        outs = [g[1] if g is not None else walk_grad for g in grads]  # unneeded ones: never written
        kernel.launch(
            kernel.backward,
            [walk_grad] + outs,
            ins,
            ctx.seed,
            ctx.on,
            walk_grad.shape,
            ctx.dtype,
            NEED=_need_mask(needs),
        )
        result = [
            _reduce_to(g[0], t.shape, t.dtype) if g is not None else None for g, t in zip(grads, inputs, strict=True)
        ]
        return (None, None, None, *result)


class ElementwiseKernel:
    """A generated elementwise kernel pair (forward, backward) with its PyTorch reference.

    Calling it computes the chain on tensors that broadcast together: with the kernels when
    ``use_triton`` says so, otherwise with ``reference``. ``full[i]`` says input i has the output's
    shape (it is read at the element's own offset); the others are read through broadcast strides.
    ``params[i]`` marks inputs made from parameters (bias, batchnorm scale and shift): like
    PyTorch's layers, they do not raise the result's dtype (a bfloat16 activation stays bfloat16).
    """

    def __init__(self, forward, backward, reference, full, params=None, dropout=False):
        self.forward, self.backward, self.reference = forward, backward, reference
        self.full = tuple(full)
        self.params = tuple(params) if params is not None else (False,) * len(self.full)
        self.dropout = dropout

    def out_dtype(self, inputs):
        dtype = None
        for t, param in zip(inputs, self.params, strict=True):
            if not param:
                dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
        return dtype if dtype is not None else inputs[0].dtype

    def __call__(self, *inputs, training=False):
        on = 1 if (self.dropout and training) else 0
        if use_triton(*inputs):
            return _Elementwise.apply(self, on, self.out_dtype(inputs), *inputs)
        return self.reference(*inputs, training=training).to(self.out_dtype(inputs))

    def launch(self, fn, outs, ins, seed, on, shape, dtype, **constexprs):
        n = 1
        for s in shape:
            n *= s
        strides = [st for t, full in zip(ins, self.full, strict=True) if not full for st in t.stride()]
        grid = (triton.cdiv(n, ELEMENTWISE_BLOCK),)
        launch(fn, grid)(
            *outs,
            *ins,
            seed,
            on,
            n,
            *shape,
            *strides,
            BLOCK=ELEMENTWISE_BLOCK,
            COMPUTE=_compute_dtype(dtype),
            **constexprs,
        )


# ---- section: batchnorm ----
def batchnorm_affine(bn, x):
    """A batchnorm as per-channel (scale, shift), shaped to broadcast over x [N, C, ...].

    In training mode the statistics are the batch's (and the running ones are updated as
    nn.BatchNorm does); the scale and shift are then differentiable functions of x, so autograd
    carries their gradient back into x. In eval mode they come from the running statistics, and are
    kept on the module until a statistic or parameter changes (or autograd needs them).
    """
    dims = [0] + list(range(2, x.dim()))
    view = [-1] + [1] * (x.dim() - 2)
    cacheable = not bn.training and bn.running_mean is not None and not torch.is_grad_enabled()
    key = None
    if cacheable:
        sources = [t for t in (bn.running_mean, bn.running_var, bn.weight, bn.bias) if t is not None]
        key = version_key(*sources)
        cached = getattr(bn, "_affine", None)
        if key is not None and cached is not None and cached[0] == (key, bn.eps, x.dim()):
            return cached[1], cached[2]
    if bn.training or bn.running_mean is None:
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)
        if bn.training and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked.add_(1)
                n = x.numel() / x.shape[1]
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
                bn.running_var.lerp_((var * n / max(n - 1, 1)).to(bn.running_var.dtype), momentum)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    scale, shift = scale.view(view), shift.view(view)
    if key is not None:
        bn._affine = ((key, bn.eps, x.dim()), scale, shift)
    return scale, shift


# ---- section: conv ----
def conv_without_bias(conv, x):
    """The convolution of `conv` without its bias (the fused epilogue adds the bias)."""
    if isinstance(conv, nn.ConvTranspose2d):
        return F.conv_transpose2d(
            x, conv.weight, None, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation
        )
    conv_fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
    return conv_fn(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


# ---- section: linear ----
# Tile sizes of the linear kernels (fixed: no autotuning, so runs are repeatable and the interpreter works).
LINEAR_TILES = (32, 128, 128) if TRITON_INTERPRET else (64, 64, 32)


def _epilogue_inputs(extras, full, m, n):
    """A linear kernel's epilogue inputs as [m, n] matrices: full ones dense, vectors through broadcast strides."""
    return [e.reshape(m, n).contiguous() if f else e.expand(m, n) for e, f in zip(extras, full, strict=True)]


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, on, store_z, x, weight, *extras):
        n, k = weight.shape
        a = x.reshape(-1, k)
        m = a.shape[0]
        dtype = torch.promote_types(x.dtype, weight.dtype)
        ins = _epilogue_inputs(extras, kernel.full[1:], m, n)
        out = torch.empty((*x.shape[:-1], n), dtype=dtype, device=x.device)
        z = torch.empty((m, n), dtype=_compute_torch_dtype(dtype), device=x.device) if store_z else out
        seed = dropout_seed(on)
        bm, bn, bk = LINEAR_TILES
        dot = _compute_dtype(dtype) if (TRITON_INTERPRET or dtype != torch.bfloat16) else tl.bfloat16
        precision = None
        if dtype == torch.float64 or (dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"):
            precision = "ieee"
        strides = [st for t in ins for st in t.stride()]
        grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
        launch(kernel.forward, grid)(
            out,
            z,
            a,
            weight,
            *ins,
            seed,
            on,
            m,
            n,
            k,
            *a.stride(),
            *weight.stride(),
            *strides,
            STORE_Z=store_z,
            BM=bm,
            BN=bn,
            BK=bk,
            COMPUTE=_compute_dtype(dtype),
            DOT=dot,
            PRECISION=precision,
        )
        ctx.save_for_backward(a, weight, z, *extras)
        ctx.kernel, ctx.on, ctx.seed, ctx.x_shape, ctx.dtype = kernel, on, seed, x.shape, dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        a, weight, z, *extras = ctx.saved_tensors
        kernel = ctx.kernel
        m, n = z.shape
        g2 = grad.reshape(m, n).contiguous()
        ins = [z] + _epilogue_inputs(extras, kernel.full[1:], m, n)
        needs = [True] + list(ctx.needs_input_grad[5:])
        grads = [torch.empty((m, n), dtype=z.dtype, device=z.device) if need else None for need in needs]
        outs = [g if g is not None else g2 for g in grads]
        kernel.launch(kernel.backward, [g2] + outs, ins, ctx.seed, ctx.on, (m, n), ctx.dtype, NEED=_need_mask(needs))
        gz = grads[0].to(ctx.dtype)
        grad_x = (gz @ weight).reshape(ctx.x_shape) if ctx.needs_input_grad[3] else None
        grad_w = (gz.t() @ a).to(weight.dtype) if ctx.needs_input_grad[4] else None
        rest = []
        for g, e, full in zip(grads[1:], extras, kernel.full[1:], strict=True):
            if g is None:
                rest.append(None)
            else:
                rest.append(g.reshape(e.shape).to(e.dtype) if full else _reduce_to(g, e.shape, e.dtype))
        return (None, None, None, grad_x, grad_w, *rest)


class LinearKernel(ElementwiseKernel):
    """A generated matmul with its elementwise epilogue (bias, activation, residual...) in one kernel.

    ``forward`` is the matmul kernel; ``backward`` the epilogue's elementwise backward, after which
    the gradients of the input and the weight are two matmuls. ``reference(x @ w.T, *extras)`` is
    the epilogue in PyTorch ops. Under autocast the product runs in the autocast dtype, as
    ``F.linear`` does. Float64 runs the reference on a GPU (Triton's float64 dot is not available
    everywhere); the interpreter runs every dtype.
    """

    def __call__(self, x, weight, *extras, training=False):
        on = 1 if (self.dropout and training) else 0
        if torch.is_autocast_enabled(x.device.type):
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
        if use_triton(x, weight, *extras) and (TRITON_INTERPRET or x.dtype != torch.float64):
            store_z = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, *extras))
            return _Linear.apply(self, on, store_z, x, weight, *extras)
        z = F.linear(x, weight)
        return self.reference(z, *extras, training=training).to(z.dtype)


# ---- section: row ----
def _rows(inputs, kernel, n_cols):
    """A row kernel's inputs: full ones as dense [rows, n_cols], those with one value per row as [rows], the
    layernorm's parameters as [n_cols]."""
    rows = inputs[0].numel() // n_cols
    return rows, [
        t.contiguous().reshape(rows, n_cols) if f else t.contiguous().reshape(rows) if r else t.reshape(n_cols)
        for t, f, r in zip(inputs, kernel.full, kernel.per_row, strict=True)
    ]


class _Row(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, on, n_cols, dtype, *inputs):
        rows, ins = _rows(inputs, kernel, n_cols)
        out = torch.empty(kernel.out_shape(inputs[0].shape), dtype=dtype, device=inputs[0].device)
        seed = dropout_seed(on)
        block = triton.next_power_of_2(n_cols)
        launch(kernel.forward, (rows,))(out, *ins, seed, on, n_cols, BLOCK=block, COMPUTE=_compute_dtype(dtype))
        ctx.save_for_backward(*inputs)
        ctx.kernel, ctx.on, ctx.seed, ctx.n_cols, ctx.dtype = kernel, on, seed, n_cols, dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        inputs = ctx.saved_tensors
        kernel, n_cols = ctx.kernel, ctx.n_cols
        rows, ins = _rows(inputs, kernel, n_cols)
        needs = ctx.needs_input_grad[4:]
        grads = [
            torch.empty((rows,) if r else (rows, n_cols), dtype=_compute_torch_dtype(ctx.dtype), device=grad.device)
            if need
            else None
            for need, r in zip(needs, kernel.per_row, strict=True)
        ]
        g = grad.contiguous()
        block = triton.next_power_of_2(n_cols)
        launch(kernel.backward, (rows,))(
            g,
            *[t if t is not None else g for t in grads],
            *ins,
            ctx.seed,
            ctx.on,
            n_cols,
            BLOCK=block,
            COMPUTE=_compute_dtype(ctx.dtype),
            NEED=_need_mask(needs),
        )
        result = []
        for gi, t, full, r in zip(grads, inputs, kernel.full, kernel.per_row, strict=True):
            if gi is None:
                result.append(None)
            else:
                result.append((gi if full or r else gi.sum(0)).reshape(t.shape).to(t.dtype))
        return (None, None, None, None, *result)


# Rows longer than this run the PyTorch reference (a row kernel keeps one row in one program).
ROW_LIMIT = 16384


class RowKernel(ElementwiseKernel):
    """A generated row kernel: softmax, log_softmax or layernorm over the last ``dims`` axes, with the
    elementwise ops before it (residual add...) and after it in the same kernel; or a reduction of
    those axes (``reduce``: "keepdim" keeps them with size 1, "drop" drops them) with the ops before it.

    ``full[i]`` inputs have the row tensor's shape, ``per_row[i]`` ones one value per row (the row axes of
    size 1); the others are the layernorm's weight and bias.
    """

    def __init__(
        self, forward, backward, reference, full, params=None, dropout=False, dims=1, reduce=None, per_row=None
    ):
        super().__init__(forward, backward, reference, full, params, dropout)
        self.dims = dims
        self.reduce = reduce
        self.per_row = tuple(per_row) if per_row is not None else (False,) * len(self.full)

    def out_shape(self, shape):
        """The output's shape for rows of ``shape``."""
        if self.reduce is None:
            return shape
        kept = shape[: len(shape) - self.dims]
        return torch.Size(kept + (1,) * self.dims) if self.reduce == "keepdim" else kept

    def __call__(self, *inputs, training=False):
        on = 1 if (self.dropout and training) else 0
        n_cols = 1
        for size in inputs[0].shape[inputs[0].dim() - self.dims :]:
            n_cols *= size
        dtype = self.out_dtype(inputs)
        if use_triton(*inputs) and n_cols <= ROW_LIMIT:
            return _Row.apply(self, on, n_cols, dtype, *inputs)
        return self.reference(*inputs, training=training).to(dtype)


# ---- section: attention ----
def attention_sdpa(mha, query, key, value, causal=False):
    """nn.MultiheadAttention's computation (batch_first) with its parameters, through
    F.scaled_dot_product_attention (flash / memory-efficient kernels where PyTorch has them)."""
    e, heads = mha.embed_dim, mha.num_heads
    if mha.in_proj_weight is not None:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq, bk, bv = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    b, t, s = query.shape[0], query.shape[1], key.shape[1]
    q = F.linear(query, wq, bq).view(b, t, heads, e // heads).transpose(1, 2)
    k = F.linear(key, wk, bk).view(b, s, heads, e // heads).transpose(1, 2)
    v = F.linear(value, wv, bv).view(b, s, heads, e // heads).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=mha.dropout if mha.training else 0.0, is_causal=causal)
    return mha.out_proj(y.transpose(1, 2).reshape(b, t, e))
