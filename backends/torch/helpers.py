"""Small modules the generated code defines when a layer has no torch.nn class.

They are needed only where a layer must be a module: inside ``nn.Sequential`` (labelled
groups and repeats) or when the spec labels a stateless layer. Each is emitted into the
generated file only when used, so the file stays importable on its own.
"""

HELPERS: dict[str, str] = {
    "Reshape": '''
class Reshape(nn.Module):
    """Reshapes every sample to `shape` (the batch axis is kept)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)
''',
    "Permute": '''
class Permute(nn.Module):
    """Reorders the axes after the batch axis."""

    def __init__(self, dims):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(0, *self.dims)
''',
    "Abs": '''
class Abs(nn.Module):
    def forward(self, x):
        return torch.abs(x)
''',
    "Scale": '''
class Scale(nn.Module):
    """Multiplies by a constant."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor
''',
    "Shift": '''
class Shift(nn.Module):
    """Adds a constant."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return x + self.offset
''',
    "AlwaysDropout": '''
class AlwaysDropout(nn.Module):
    """Dropout that stays on at inference (Monte-Carlo dropout)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=True)
''',
}
