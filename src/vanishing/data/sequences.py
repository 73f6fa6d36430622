"""Data sets read as sequences: MNIST and Fashion-MNIST by rows, by pixels or by permuted pixels,
and the adding problem (Hochreiter and Schmidhuber 1997), generated."""

from __future__ import annotations

SEQUENCES = ("rows", "pixels", "permuted")  # how a recurrent network reads an image
ADDING = "adding"  # the generated data set's name
DEFAULT_LENGTH = 100  # the adding problem's T when none is given
