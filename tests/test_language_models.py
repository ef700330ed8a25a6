"""specs/gpt.dln and specs/bert.dln against twins written here with torch.nn.

Each twin is the model as a PyTorch user would write it by hand, with the spec's module names, so the twin's
state_dict loads into the spec's module with ``strict=True`` and every difference is one of computation:
- GPT: GPT-2's layout (``wte``, ``wpe``, ``drop``, ``h.{i}`` pre-norm blocks with ``nn.MultiheadAttention`` under
  a causal mask, ``ln_f``) and an ``lm_head`` whose weight *is* ``wte.weight``;
- BERT: HuggingFace BertModel's layout (``embeddings.*``, ``encoder.layer.{i}.attention.self`` as one
  ``nn.MultiheadAttention`` with a key padding mask from ``tokens == pad``, ``...output.LayerNorm``,
  ``pooler.dense``), post-norm, LayerNorm eps 1e-12.

The default sizes (GPT-2 small, BERT-base) are checked by parameter count at compile time; outputs, gradients,
causality and padding are checked at small sizes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlc
from dlc.compiler.passes import total_params

ROOT = Path(__file__).resolve().parent.parent
GPT = ROOT / "specs" / "gpt.dln"
BERT = ROOT / "specs" / "bert.dln"
ATOL = 1e-5
ATOL64 = 1e-10
GPT_SMALL = {"vocab_size": 50, "n_positions": 16, "n_embd": 32, "n_layer": 2, "n_head": 4}
BERT_SMALL = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 16}


# ---- the GPT twin ---------------------------------------------------------------------------------------------

class TwinMLP(nn.Module):
    def __init__(self, d: int, p: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)
        self.dropout = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class TwinGPTBlock(nn.Module):
    def __init__(self, d: int, heads: int, p: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.resid_dropout = nn.Dropout(p)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = TwinMLP(d, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype)  # -inf above the diagonal
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + self.resid_dropout(a)
        return x + self.mlp(self.ln_2(x))


class TwinGPT(nn.Module):
    def __init__(self, vocab_size: int = 50257, n_positions: int = 1024, n_embd: int = 768, n_layer: int = 12,
                 n_head: int = 12, dropout: float = 0.1) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(TwinGPTBlock(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.wte(tokens) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ---- the BERT twin --------------------------------------------------------------------------------------------

class TwinEmbeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, types: int, d: int, p: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(positions, d)
        self.token_type_embeddings = nn.Embedding(types, d)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(p)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        x = self.word_embeddings(tokens) + self.token_type_embeddings(segments) + self.position_embeddings(pos)
        return self.dropout(self.LayerNorm(x))


class TwinSelfOutput(nn.Module):
    """HuggingFace's BertSelfOutput whose dense is the attention's out_proj."""

    def __init__(self, d: int, p: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(h) + residual)


class TwinAttention(nn.Module):
    def __init__(self, d: int, heads: int, p: float) -> None:
        super().__init__()
        self.self = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.output = TwinSelfOutput(d, p)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        a, _ = self.self(x, x, x, key_padding_mask=padding, need_weights=False)
        return self.output(a, x)


class TwinIntermediate(nn.Module):
    def __init__(self, d: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, inner)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(x))


class TwinOutput(nn.Module):
    def __init__(self, d: int, inner: int, p: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, d)
        self.dropout = nn.Dropout(p)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class TwinLayer(nn.Module):
    def __init__(self, d: int, heads: int, inner: int, p: float) -> None:
        super().__init__()
        self.attention = TwinAttention(d, heads, p)
        self.intermediate = TwinIntermediate(d, inner)
        self.output = TwinOutput(d, inner, p)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, padding)
        return self.output(self.intermediate(a), a)


class TwinEncoder(nn.Module):
    def __init__(self, n: int, d: int, heads: int, inner: int, p: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(TwinLayer(d, heads, inner, p) for _ in range(n))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, padding)
        return x


class TwinPooler(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x[:, 0]))


class TwinBERT(nn.Module):
    def __init__(self, vocab_size: int = 30522, hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072, max_position_embeddings: int = 512,
                 type_vocab_size: int = 2, dropout: float = 0.1, pad_token_id: int = 0) -> None:
        super().__init__()
        self.pad_token_id = pad_token_id
        self.embeddings = TwinEmbeddings(vocab_size, max_position_embeddings, type_vocab_size, hidden_size, dropout)
        self.encoder = TwinEncoder(num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, dropout)
        self.pooler = TwinPooler(hidden_size)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(self.embeddings(tokens, segments), tokens == self.pad_token_id)
        return x, self.pooler(x)


# ---- helpers --------------------------------------------------------------------------------------------------

def pair(spec: Path, twin_class: type[nn.Module], **config) -> tuple[nn.Module, nn.Module]:
    """(spec model, twin) with the twin's weights loaded strictly into the spec's."""
    twin = twin_class(**config)
    m = dlc.load(spec, **config)
    m.load_state_dict(twin.state_dict(), strict=True)
    return m, twin


def assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {tuple(got.shape)} != {tuple(want.shape)}"
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= atol * scale, what
    assert want.abs().max().item() > 100 * atol, f"{what}: the reference is ~0, the comparison would be trivial"


def run_dlc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc", *args], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def position(spec: Path, text: str, offset: int = 0) -> str:
    """``line:col`` (1-based) of the first occurrence of ``text`` in ``spec``, ``offset`` columns further."""
    before = spec.read_text().split(text)[0]
    return f"{before.count(chr(10)) + 1}:{len(before.split(chr(10))[-1]) + 1 + offset}"


def gpt_tokens(batch: int, length: int, vocab: int = GPT_SMALL["vocab_size"]) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length))


# ---- GPT ------------------------------------------------------------------------------------------------------

def test_gpt2_small_parameter_count_counts_the_tied_weight_once():
    """GPT-2 small (124,439,808 parameters, as HuggingFace's GPT2LMHeadModel reports) at compile time, and the
    twin's count at the same sizes on the meta device."""
    assert total_params(dlc.compile(GPT).graph) == 124_439_808
    with torch.device("meta"):
        twin = TwinGPT()
    assert sum(p.numel() for p in twin.parameters()) == 124_439_808


def test_gpt_state_dict_is_the_twins_and_the_head_is_the_embedding():
    torch.manual_seed(0)
    m, twin = pair(GPT, TwinGPT, **GPT_SMALL)
    assert list(m.state_dict()) == list(twin.state_dict())
    assert m.lm_head.weight is m.wte.weight
    params = sum(p.numel() for p in m.parameters())
    assert params == sum(p.numel() for p in twin.parameters()) == total_params(dlc.compile(GPT, **GPT_SMALL).graph)
    assert params == 27_584   # 50 * 32 (wte = lm_head) + 16 * 32 + 2 * 12,704 (blocks) + 64 (ln_f)
    source = dlc.compile(GPT).source
    assert "self.lm_head.weight = self.wte.weight" in source
    assert "pos = position_ids(tokens, 1)" in source
    assert "nn.MultiheadAttention(768, 12, dropout=0.1, batch_first=True)" in source
    assert "            " + ", ".join(["Block()"] * 12) + "\n        )  # gpt.dln:32" in source   # h: 12 blocks


@pytest.mark.parametrize("length", [5, 11])
def test_gpt_eval_logits_match_the_twin_at_two_lengths(length):
    """T is symbolic: one module runs any length up to n_positions."""
    torch.manual_seed(1)
    m, twin = pair(GPT, TwinGPT, **GPT_SMALL)
    m.eval(), twin.eval()
    tokens = gpt_tokens(3, length)
    with torch.no_grad():
        got = m(tokens)
        assert got.shape == (3, length, GPT_SMALL["vocab_size"])
        assert_close(got, twin(tokens), ATOL, f"logits at length {length}")


def test_gpt_train_mode_logits_and_gradients_match_the_twin():
    """Training mode without dropout, in float64: equal logits and equal gradients, the tied weight's being the
    sum of its gradients as the embedding and as the head."""
    torch.manual_seed(2)
    config = {**GPT_SMALL, "dropout": 0.0}
    m, twin = pair(GPT, TwinGPT, **config)
    m.double().train(), twin.double().train()
    tokens = gpt_tokens(2, 7)
    got, want = m(tokens), twin(tokens)
    assert_close(got, want, ATOL64, "logits in training")
    (got ** 2).mean().backward()
    (want ** 2).mean().backward()
    theirs = dict(twin.named_parameters())
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().max().item() > 0, name
        assert_close(p.grad, theirs[name].grad, ATOL64, f"gradient of {name}")
    # the same network with the head untied (its own copy of the weight): the tied gradient is the sum of both uses
    untied = TwinGPT(**config).double()
    untied.load_state_dict(twin.state_dict())
    untied.lm_head.weight = nn.Parameter(twin.wte.weight.detach().clone())
    (untied(tokens) ** 2).mean().backward()
    assert_close(m.wte.weight.grad, untied.wte.weight.grad + untied.lm_head.weight.grad, ATOL64, "tied gradient")
    assert untied.wte.weight.grad.abs().max().item() > 0 and untied.lm_head.weight.grad.abs().max().item() > 0


def test_gpt_dropout_draws_match_the_twin():
    """With dropout in training, both draw the same masks in the same order from torch's generator."""
    torch.manual_seed(3)
    m, twin = pair(GPT, TwinGPT, **{**GPT_SMALL, "dropout": 0.2})
    m.train(), twin.train()
    tokens = gpt_tokens(2, 6)
    torch.manual_seed(4)
    want = twin(tokens)
    torch.manual_seed(4)
    got = m(tokens)
    assert_close(got, want, ATOL, "logits with dropout")
    m.eval()
    with torch.no_grad():
        assert not torch.allclose(m(tokens), got), "dropout changed nothing in training"


def test_gpt_is_causal():
    """Changing token t changes no logits before t, and changes those at t."""
    torch.manual_seed(5)
    m = dlc.load(GPT, **GPT_SMALL).eval()
    tokens = gpt_tokens(2, 10)
    for t in (0, 4, 9):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % GPT_SMALL["vocab_size"]
        with torch.no_grad():
            before, after = m(tokens), m(changed)
        assert torch.equal(before[:, :t], after[:, :t]), f"a logit before {t} changed"
        assert (before[:, t] - after[:, t]).abs().max().item() > 1e-3, f"the logits at {t} did not change"


def test_gpt_heads_not_dividing_the_width_is_a_diagnostic():
    r = run_dlc("check", str(GPT), "--set", "n_head=5")
    assert r.returncode == 1, r.stderr
    at = position(GPT, "heads=n_head", offset=len("heads="))
    assert f"gpt.dln:{at}: error[bad-argument]: `attention`: heads=5 must divide the query features (768)" \
        in r.stderr, r.stderr
    assert "= in: GPT > h > h.0 (Block) > attn" in r.stderr
    assert "Traceback" not in r.stderr


def test_gpt_bad_dropout_is_a_diagnostic():
    r = run_dlc("check", str(GPT), "--set", "dropout=1.5")
    assert r.returncode == 1, r.stderr
    at = position(GPT, "drop: dropout(dropout)", offset=len("drop: dropout("))
    assert f"gpt.dln:{at}: error[bad-argument]: `dropout`: p must be in [0, 1), got 1.5" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ---- BERT -----------------------------------------------------------------------------------------------------

def bert_inputs(batch: int, length: int, vocab: int = BERT_SMALL["vocab_size"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids without padding (ids 1..vocab-1; 0 is the pad id) and segments: sentence A, then sentence B."""
    tokens = torch.randint(1, vocab, (batch, length))
    segments = (torch.arange(length) >= length // 2).long().expand(batch, -1)
    return tokens, segments


def with_padding(tokens: torch.Tensor, segments: torch.Tensor, pads: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokens.shape[0]
    return (torch.cat([tokens, torch.zeros(batch, pads, dtype=torch.long)], dim=1),
            torch.cat([segments, torch.zeros(batch, pads, dtype=torch.long)], dim=1))


def test_bert_base_parameter_count():
    """BERT-base: 109,482,240 parameters, as HuggingFace's BertModel (bert-base-uncased) reports."""
    assert total_params(dlc.compile(BERT).graph) == 109_482_240
    with torch.device("meta"):
        twin = TwinBERT()
    assert sum(p.numel() for p in twin.parameters()) == 109_482_240


def test_bert_state_dict_and_modules_are_the_twins():
    with torch.device("meta"):
        twin = TwinBERT(**BERT_SMALL)
        m = dlc.load(BERT, **BERT_SMALL)
    assert list(m.state_dict()) == list(twin.state_dict())
    m.load_state_dict(twin.state_dict(), strict=True)
    ours = dict(m.named_modules())
    for name, mod in twin.named_modules():   # every torch.nn layer (not container) has a twin of its class
        if type(mod).__module__.startswith("torch.nn.modules") and not isinstance(mod, nn.ModuleList):
            assert type(ours[name]) is type(mod), f"{name}: {type(ours[name]).__name__} vs {type(mod).__name__}"
    assert ours["encoder.layer.1.output.LayerNorm"].eps == 1e-12
    source = dlc.compile(BERT).source
    assert "padding = tokens == 0" in source
    assert "self.self(x, x, x, key_padding_mask=padding, need_weights=False)" in source
    assert "pooler_output = last_hidden_state[:, 0]" in source


def test_bert_eval_outputs_match_the_twin_with_padding():
    torch.manual_seed(6)
    m, twin = pair(BERT, TwinBERT, **BERT_SMALL)
    m.eval(), twin.eval()
    tokens, segments = with_padding(*bert_inputs(3, 7), pads=3)
    with torch.no_grad():
        (seq, pooled), (want_seq, want_pooled) = m(tokens, segments), twin(tokens, segments)
    assert seq.shape == (3, 10, 32) and pooled.shape == (3, 32)
    assert_close(seq, want_seq, ATOL, "last_hidden_state")
    assert_close(pooled, want_pooled, ATOL, "pooler_output")


def test_bert_train_mode_outputs_and_gradients_match_the_twin():
    """Training mode without dropout, in float64, with padding: equal outputs and gradients."""
    torch.manual_seed(7)
    m, twin = pair(BERT, TwinBERT, **{**BERT_SMALL, "dropout": 0.0})
    m.double().train(), twin.double().train()
    tokens, segments = with_padding(*bert_inputs(2, 6), pads=2)
    (seq, pooled), (want_seq, want_pooled) = m(tokens, segments), twin(tokens, segments)
    assert_close(seq, want_seq, ATOL64, "last_hidden_state in training")
    assert_close(pooled, want_pooled, ATOL64, "pooler_output in training")
    ((seq ** 2).mean() + pooled.sum()).backward()
    ((want_seq ** 2).mean() + want_pooled.sum()).backward()
    theirs = dict(twin.named_parameters())
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.allclose(p.grad, theirs[name].grad, atol=ATOL64, rtol=0), f"gradient of {name}"


def test_bert_appended_padding_changes_nothing():
    """The point of the padding mask: appending pad tokens leaves the pooled output and the real tokens' outputs
    as they were (to 1e-5); the same weights with another pad id (so nothing is masked) do change them."""
    torch.manual_seed(8)
    m = dlc.load(BERT, **BERT_SMALL).eval()
    tokens, segments = bert_inputs(2, 6)
    padded = with_padding(tokens, segments, pads=4)
    with torch.no_grad():
        seq, pooled = m(tokens, segments)
        seq_p, pooled_p = m(*padded)
    assert seq_p.shape == (2, 10, 32)
    assert (pooled_p - pooled).abs().max().item() <= 1e-5
    assert (seq_p[:, :6] - seq).abs().max().item() <= 1e-5
    unmasked = dlc.load(BERT, **BERT_SMALL, pad_token_id=BERT_SMALL["vocab_size"]).eval()
    unmasked.load_state_dict(m.state_dict())
    with torch.no_grad():
        seq_u, pooled_u = unmasked(*padded)
        assert torch.equal(unmasked(tokens, segments)[1], pooled)   # no padding: the pad id plays no part
    assert (pooled_u - pooled).abs().max().item() > 1e-3
    assert (seq_u[:, :6] - seq).abs().max().item() > 1e-3


def test_bert_heads_not_dividing_the_width_is_a_diagnostic():
    r = run_dlc("check", str(BERT), "--set", "hidden_size=30", "--set", "num_attention_heads=4")
    assert r.returncode == 1, r.stderr
    at = position(BERT, "heads=heads", offset=len("heads="))
    assert f"bert.dln:{at}: error[bad-argument]: `attention`: heads=4 must divide the query features (30)" \
        in r.stderr, r.stderr
    assert "encoder.layer.0.attention (Attention) > self" in r.stderr
    assert "Traceback" not in r.stderr


def test_bert_pad_id_of_the_wrong_type_is_a_diagnostic():
    r = run_dlc("check", str(BERT), "--set", "pad_token_id=0.5")
    assert r.returncode == 1, r.stderr
    at = position(BERT, "pad_token_id: int")
    assert (f"bert.dln:{at}: error[type-mismatch]: parameter `pad_token_id` is int, got the number 0.5 "
            "(from --set/--params)") in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_network_docstring_of_112_columns_wraps_within_120():
    """GPT's docstring text is 112 columns: with its indent and quotes on one line it would be 122, so it is wrapped
    onto two lines (a fix in backends/torch/emit.py found by this spec)."""
    source = dlc.compile(GPT).source
    assert ('    """Network `GPT` from gpt.dln (vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, '
            'n_head=12,\n    dropout=0.1).\n    """\n') in source
    assert max(len(line) for line in source.splitlines()) <= 120
