"""What the theory commands measure (docs/theory-measured.md), no command line here.

``params`` builds fresh models of both implementations from a shared-name
state, computes their gradients and moves weights to and from flat float64
vectors; ``hvp`` holds the Hessian-vector products (PyTorch double backward,
NumPy central differences), the exact Hessian of a small model and the
Lanczos wrapper. The commands are ``bench.gradflow`` and ``bench.hessian``.
"""
