"""Measurements of THEORY.md's claims (§4 gradient flow, §5 the Hessian at a minimum), no command line here.

``params`` moves weights between the shared-name state and flat float64
vectors and computes per-layer gradients in both implementations;
``hvp`` holds the Hessian-vector products (PyTorch double backward, NumPy
central differences), the exact Hessian of a small model and the Lanczos
wrapper; ``cli`` the command-line plumbing the two commands share.
"""
