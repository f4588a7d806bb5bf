"""Sweeps: a grid of settings × backends × seeds through the harness, and the crossover map.

Run it as ``python -m bench.sweep --grid batch_size=32,128 hidden_dims=64,1024``
(see ``bench/sweep/__main__.py`` for every option). The modules, one job each:

* ``grid``: parse ``--grid FIELD=V1,V2,...`` with the Config field's type;
* ``point``: run one task (point × backend × seed) with the harness of ``bench.compare``;
* ``executors``: run the tasks here one by one, or on a Dask cluster;
* ``store``: the sweep folder, its resumable ``sweep.csv``;
* ``analysis``, ``plots``, ``report``: the ratio map, accuracy and ``report.md``.
"""
