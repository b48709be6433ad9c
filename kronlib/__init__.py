"""kronlib: the Kronecker structure of composed convolutions, as code.

Modules:
    kronlib.kron     nearest Kronecker products (Van Loan–Pitsianis): rearrange, unrearrange, nkp
    kronlib.data     sample photos shipped with installed packages (offline)
    kronlib.viz      the book's figures
    kronlib.widgets  slider figures, live in Jupyter and static in HTML
    kronlib.testing  numerical assertions used by the book and the tests
"""

from kronlib.kron import KronFactorization, nkp, rearrange, unrearrange
from kronlib.repro import set_reproducible

__all__ = ["KronFactorization", "nkp", "rearrange", "set_reproducible", "unrearrange"]
__version__ = "0.1.0"
