"""mmssl-pyg: Multi-Modal Self-Supervised Learning for Recommendation on PyTorch Geometric."""
import warnings

# torch marks CSR tensors as beta on every construction; the CSR path is the fast one here.
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta state')

__version__ = '0.1.0'
