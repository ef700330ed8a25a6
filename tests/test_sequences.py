"""Sequences: attention masks, position ids and the sinusoidal encoding, sequence lengths of recurrent layers,
`bidirectional(merge=none)` and the Transformer spec, each against torch.nn (or the formula written here)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import dlc
from conftest import cli_rejects, write_spec

ROOT = Path(__file__).resolve().parent.parent


def _load(tmp_path: Path, text: str, **params) -> nn.Module:
    torch.manual_seed(0)
    return dlc.load(write_spec(tmp_path, text), **params).eval()


# ---- attention masks --------------------------------------------------------------------------------------

TAGGER = """
network Tagger(vocab: int = 30, d: int = 16, tags: int = 5) {
    input tokens: [S] int64
    input padding: [S] bool
    e = tokens -> embed: embedding(vocab, d)
    h = e -> attn: attention(heads=4, key_padding_mask=padding)
    output scores = h -> out: linear(tags)
}
"""


def test_appending_pad_tokens_does_not_change_the_real_tokens_scores(tmp_path):
    model = _load(tmp_path, TAGGER)
    tokens = torch.randint(1, 30, (3, 6))
    lengths = torch.tensor([6, 4, 2])
    padding = torch.arange(6)[None, :] >= lengths[:, None]
    tokens = tokens.masked_fill(padding, 0)
    with torch.no_grad():
        short = model(tokens, padding)
        longer = model(torch.cat([tokens, torch.zeros(3, 5, dtype=torch.long)], 1),
                       torch.cat([padding, torch.ones(3, 5, dtype=torch.bool)], 1))
        unmasked = model(torch.cat([tokens, torch.zeros(3, 5, dtype=torch.long)], 1),
                         torch.zeros(3, 11, dtype=torch.bool))
    real = ~padding
    torch.testing.assert_close(longer[:, :6][real], short[real])
    assert not torch.allclose(unmasked[:, :6][real], short[real], atol=1e-4)  # without the mask they would change


def test_masked_attention_matches_multihead_attention(tmp_path):
    model = _load(tmp_path, """
network Masks {
    input q: [T, 8]
    input memory: [S, 8]
    input padding: [S] bool
    input allowed: [T, S] bool
    input bias: [T, T]
    a = q -> cross: attention(key=memory, value=memory, heads=2, key_padding_mask=padding, attn_mask=allowed)
    output y = a -> self_attn: attention(heads=2, causal=true, attn_mask=bias)
}
""")
    q, memory, bias = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 5, 5)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, 5:] = True
    allowed = torch.rand(2, 5, 7) > 0.7
    allowed[..., 0] = False  # every query keeps a key
    with torch.no_grad():
        got = model(q, memory, padding, allowed, bias)
        a, _ = model.cross(q, memory, memory, key_padding_mask=padding, attn_mask=allowed.repeat_interleave(2, 0))
        causal = nn.Transformer.generate_square_subsequent_mask(5)  # -inf above the diagonal
        want, _ = model.self_attn(a, a, a, attn_mask=bias.repeat_interleave(2, 0) + causal)
    torch.testing.assert_close(got, want)


def test_mask_of_the_wrong_dtype_is_an_error_at_the_argument(tmp_path):
    cli_rejects(tmp_path, """network Bad {
    input x: [S, 16]
    input ids: [S] int64
    output y = x -> attention(heads=2, key_padding_mask=ids)
}
""", "type-mismatch", "4:57", "`key_padding_mask` must be a bool tensor (true = padding, ignored), got int64")


def test_mask_of_the_wrong_length_is_an_error_at_the_argument(tmp_path):
    cli_rejects(tmp_path, """network Bad {
    input q: [T, 16]
    input memory: [S, 16]
    input padding: [T] bool
    input allowed: [T, T] bool
    a = q -> attention(key=memory, value=memory, attn_mask=allowed)
    output y = q -> attention(key=memory, value=memory, key_padding_mask=padding)
}
""", "shape-mismatch", "6:60", "`attn_mask` must be [T, S] (query length x key length), got [T, T]")
    cli_rejects(tmp_path, """network Bad {
    input q: [T, 16]
    input memory: [10, 16]
    input padding: [12] bool
    output y = q -> attention(key=memory, value=memory, key_padding_mask=padding)
}
""", "shape-mismatch", "5:74", "`key_padding_mask` must be [10] (one flag per key position), got [12]")


def test_a_mask_is_a_tensor_input_only_by_keyword(tmp_path):
    cli_rejects(tmp_path, """network Bad {
    input x: [S, 16]
    output y = x -> attention(heads=2, key_padding_mask=true)
}
""", "unknown-argument", "3:40", "`attention` has no argument `key_padding_mask`")


# ---- positions -----------------------------------------------------------------------------------------------

def _tutorial_encoding(length: int, d: int) -> torch.Tensor:
    """The PyTorch tutorial's PositionalEncoding table ("Language modeling with nn.Transformer"), [length, d]."""
    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def test_positions_are_arange_over_a_symbolic_length_for_a_position_embedding(tmp_path):
    model = _load(tmp_path, """
network GPTEmbed(vocab: int = 50, d: int = 8) {
    input tokens: [T] int64
    ids = tokens -> positions
    tok = tokens -> wte: embedding(vocab, d)
    pos = ids -> wpe: embedding(32, d)
    output h = tok + pos
    output ids
}
""")
    tokens = torch.randint(0, 50, (3, 11))
    with torch.no_grad():
        h, ids = model(tokens)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, torch.arange(11).expand(3, 11))
    torch.testing.assert_close(h, model.wte(tokens) + model.wpe(torch.arange(11))[None])


@pytest.mark.parametrize("d", [16, 512])
def test_positional_encoding_is_the_tutorials_formula(tmp_path, d):
    model = _load(tmp_path, """
network PE(d: int = 16) {
    input x: [T, d]
    output y = x -> positional_encoding
    output z = x -> labelled: positional_encoding
}
""", d=d)
    x = torch.randn(2, 40, d)
    with torch.no_grad():
        y, z = model(x)
    torch.testing.assert_close(y, x + _tutorial_encoding(40, d)[None])
    torch.testing.assert_close(z, y)
    assert not list(model.state_dict())  # nothing stored: any length works


def test_positional_encoding_needs_a_sequence(tmp_path):
    cli_rejects(tmp_path, """network Bad {
    input x: [T, 4, 4]
    output y = x -> positional_encoding
}
""", "shape-mismatch", "3:21", "`positional_encoding` expects a sequence [T, d] (batch not counted), got [T, 4, 4]")
    cli_rejects(tmp_path, """network Bad {
    input x: [T, 4]
    output y = x -> positions(dim=2)
}
""", "bad-argument", "3:35", "`positions`: axis 2 is out of range for a rank-2 tensor")


# ---- the Transformer -----------------------------------------------------------------------------------------

def test_transformer_spec_is_torch_nn_transformer(tmp_path):
    compiled = dlc.compile(ROOT / "specs" / "transformer.dln")
    assert "44,140,544" in compiled.source
    torch.manual_seed(0)
    ours = compiled.instantiate().eval()
    # nn.Transformer() with its defaults; batch_first=True changes no parameter, only the axis order
    ref = nn.Transformer(batch_first=True).eval()
    assert sum(p.numel() for p in ref.parameters()) == 44_140_544
    ours.load_state_dict(ref.state_dict(), strict=True)  # the same module names
    src, tgt = torch.randn(2, 7, 512), torch.randn(2, 5, 512)
    src_pad = torch.zeros(2, 7, dtype=torch.bool)
    src_pad[1, 4:] = True
    tgt_pad = torch.zeros(2, 5, dtype=torch.bool)
    tgt_pad[1, 3:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    none_s, none_t = torch.zeros_like(src_pad), torch.zeros_like(tgt_pad)
    with torch.no_grad():
        want = ref(src, tgt, tgt_mask=causal)
        got = ours(src, tgt, none_s, none_t)
        want_padded = ref(src, tgt, tgt_mask=causal, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                          memory_key_padding_mask=src_pad)
        got_padded = ours(src, tgt, src_pad, tgt_pad)
    # torch's eval fast path (fused encoder layers, nested tensors for padding) rounds differently
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_padded, want_padded, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got_padded, got, atol=1e-3)  # the masks matter


def test_a_labelled_repeat_passes_the_same_extra_inputs_to_every_block(tmp_path):
    model = _load(tmp_path, """
block Layer(d: int) {
    input x
    input memory
    return x + (x -> attn: attention(key=memory, value=memory)) -> norm: layernorm
}
network Stack {
    input x: [T, 8]
    input memory: [S, 8]
    output y = x -> layers: Layer(8, memory=memory) * 3
}
""")
    assert type(model.layers).__name__ == "LayerStack" and isinstance(model.layers, nn.Sequential)
    x, memory = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    want = x
    with torch.no_grad():
        for layer in model.layers:
            want = layer.norm(want + layer.attn(want, memory, memory)[0])
        torch.testing.assert_close(model(x, memory), want)


def test_a_labelled_group_with_extra_inputs_holds_blocks_receiving_the_same_ones(tmp_path):
    block = """
block Layer(d: int) {
    input x
    input memory
    return x + (x -> attention(key=memory, value=memory))
}
"""
    cli_rejects(tmp_path, block + """network Bad {
    input x: [T, 8]
    input memory: [S, 8]
    output y = x -> layers: (Layer(8, memory=memory) -> linear(8))
}
""", "bad-group", "10:57", "`linear` cannot join a labelled group of blocks that take extra inputs")
    cli_rejects(tmp_path, block + """network Bad {
    input x: [T, 8]
    input memory: [S, 8]
    output y = x -> layers: (Layer(8, memory=memory) -> Layer(8, memory=x))
}
""", "bad-group", "10:57", "block `Layer` must receive the same extra inputs as the blocks before it")


# ---- sequence lengths ------------------------------------------------------------------------------------------

LENGTHS = """
network Packed(cell: str = "lstm") {
    input x: [T, 6]
    input lengths: [] int64
    seq, state = x -> rnn: lstm(8, layers=2, lengths=lengths, return_state=true)
    last = x -> g: gru(5, lengths=lengths, return_sequences=false)
    output seq
    output last
    output h = state
}
"""


def _batch(lengths: list[int], features: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(len(lengths), max(lengths), features)
    for b, n in enumerate(lengths):
        x[b, n:] = 99.0  # garbage past each length: it must not matter
    return x, torch.tensor(lengths)


def test_lengths_run_each_sequence_as_if_alone(tmp_path):
    compiled = dlc.compile(write_spec(tmp_path, LENGTHS.replace("output h = state\n", "")))
    assert "pack_padded_sequence" in compiled.source and "enforce_sorted=False" in compiled.source
    torch.manual_seed(0)
    model = compiled.instantiate().eval()
    x, lengths = _batch([3, 7, 1, 5])
    with torch.no_grad():
        seq, last = model(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone, (h, c) = model.rnn(x[b:b + 1, :n])  # nn.LSTM on the unpadded sequence
            torch.testing.assert_close(seq[b:b + 1, :n], alone)
            assert torch.equal(seq[b, n:], torch.zeros_like(seq[b, n:]))  # zero past the length
            g_alone, g_h = model.g(x[b:b + 1, :n])
            torch.testing.assert_close(last[b], g_alone[0, -1])  # the last valid step, not the last padded one
            torch.testing.assert_close(last[b], g_h[-1, 0])


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", ["true", "false"])
def test_bidirectional_lengths_keep_the_keras_merges_exact(tmp_path, merge, return_sequences):
    model = _load(tmp_path, f"""
network Bi {{
    input x: [T, 6]
    input lengths: [] int64
    output y = x -> bi: bidirectional(lstm(4, return_sequences={return_sequences}), merge={merge}, lengths=lengths)
}}
""")
    merges = {"concat": lambda f, b: torch.cat([f, b], -1), "sum": torch.add, "mul": torch.mul,
              "ave": lambda f, b: (f + b) / 2}
    x, lengths = _batch([2, 6, 4])
    with torch.no_grad():
        y = model(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone, _ = model.bi(x[b:b + 1, :n])  # the backward direction starts at the sequence's own end
            fwd, bwd = alone[0, :, :4], alone[0, :, 4:]
            if return_sequences == "true":
                torch.testing.assert_close(y[b, :n], merges[merge](fwd, bwd))
                assert torch.equal(y[b, n:], torch.zeros_like(y[b, n:]))
            else:
                torch.testing.assert_close(y[b], merges[merge](fwd[-1], bwd[0]))


def test_lengths_with_an_initial_state_and_the_state_returned(tmp_path):
    model = _load(tmp_path, """
network Handover {
    input src: [S, 6]
    input src_lengths: [] int64
    input tgt: [T, 6]
    input tgt_lengths: [] int64
    _, state = src -> enc: gru(8, lengths=src_lengths, return_state=true)
    output y = tgt -> dec: gru(8, initial_state=state, lengths=tgt_lengths)
}
""")
    src, src_lengths = _batch([4, 2])
    tgt, tgt_lengths = _batch([1, 3])
    with torch.no_grad():
        y = model(src, src_lengths, tgt, tgt_lengths)
        for b in range(2):
            _, h = model.enc(src[b:b + 1, :src_lengths[b]])
            alone, _ = model.dec(tgt[b:b + 1, :tgt_lengths[b]], h)
            torch.testing.assert_close(y[b:b + 1, :tgt_lengths[b]], alone)


def test_lengths_must_be_one_integer_per_sequence(tmp_path):
    cli_rejects(tmp_path, """network Bad {
    input x: [T, 6]
    input lengths: [T] int64
    output y = x -> lstm(8, lengths=lengths)
}
""", "shape-mismatch", "4:37", "`lstm`: `lengths` must be one integer per sequence (int64 [], batch not counted), "
       "got int64 [T]")
    cli_rejects(tmp_path, """network Bad {
    input x: [T, 6]
    input lengths: [] float32
    output y = x -> bidirectional(gru(8), lengths=lengths)
}
""", "type-mismatch", "4:51", "`bidirectional`: `lengths` must be one integer per sequence")
    cli_rejects(tmp_path, """network Bad {
    input x: [T, 6]
    input lengths: [] int64
    output y = x -> seq: (lstm(8, lengths=lengths) -> linear(4))
}
""", "bad-group", "4:27", "`lstm` with several inputs cannot be part of a labelled group")


# ---- bidirectional(merge=none) ---------------------------------------------------------------------------------

def test_merge_none_returns_both_directions(tmp_path):
    model = _load(tmp_path, """
network Both {
    input x: [T, 6]
    input lengths: [] int64
    fwd, bwd = x -> bi: bidirectional(lstm(4), merge=none)
    f, b, state = x -> last: bidirectional(gru(3, return_sequences=false, return_state=true), merge=none,
                                          lengths=lengths)
    output fwd
    output bwd
    output f
    output b
}
""")
    x, lengths = _batch([5, 2, 4])
    with torch.no_grad():
        fwd, bwd, f, b = model(x, lengths)
        y, _ = model.bi(x)  # nn.LSTM(bidirectional=True): [forward, backward] on the last axis
        torch.testing.assert_close(fwd, y[..., :4])
        torch.testing.assert_close(bwd, y[..., 4:])
        for i, n in enumerate(lengths.tolist()):
            alone, _ = model.last(x[i:i + 1, :n])
            torch.testing.assert_close(f[i], alone[0, -1, :3])  # the forward direction's last valid step
            torch.testing.assert_close(b[i], alone[0, 0, 3:])   # the backward direction ends at step 0


def test_merge_none_gives_two_results(tmp_path):
    cli_rejects(tmp_path, """network Bad {
    input x: [T, 6]
    y = x -> bidirectional(lstm(4), merge=none)
    output z = y -> linear(2)
}
""", "wrong-inputs", "4:21", "`linear` takes 1 tensor input(s), got 2")  # a tuple piped on spreads over inputs
