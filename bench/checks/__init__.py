"""The parts of ``python -m bench.check``: checking a course-style NumPy implementation.

* :mod:`bench.checks.loader` - load the user's ``modules.py`` (and ``mlp_numpy.py``)
  or an importable package into a :class:`~bench.checks.loader.CourseImpl`;
* :mod:`bench.checks.gradcheck` - tolerances, relative errors, central finite
  differences and the guarded calls into the user's code;
* :mod:`bench.checks.layers` - the four modules' cases, each checked by finite
  differences, against torch autograd and for side effects;
* :mod:`bench.checks.network` - the whole MLP against torch autograd from copied weights;
* :mod:`bench.checks.diagnose` - the usual mistakes, named when a gradient matches one;
* :mod:`bench.checks.report` - the table, the diagnosis lines and the JSON.
"""
