"""Peer backends: the MLPs users already have, run by the same harness as this project's own.

* ``sklearn:cpu`` (:mod:`bench.peers.sklearn_backend`): scikit-learn's
  ``MLPClassifier`` with the SGD solver, one ``partial_fit`` per epoch.
* ``torch-dataloader:<device>`` (:mod:`bench.peers.dataloader_backend`): the
  PyTorch backend fed through the classic torchvision pipeline (PIL image,
  ``ToTensor``, ``Normalize`` per sample, ``DataLoader``).

Both need the ``peers`` extra (``pip install '.[peers]'``); nothing here is
imported until one of them is asked for (``bench.backends``). What cannot be
made identical to the other backends, and how it is handled: docs/peers.md.
"""
