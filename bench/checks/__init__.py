"""The parts of ``python -m bench.check``: checking course-style NumPy implementations.

* :mod:`bench.checks.loader` - load the user's ``modules.py`` (and ``mlp_numpy.py``)
  or an importable package into a :class:`~bench.checks.loader.CourseImpl`;
* :mod:`bench.checks.interface` - the interface detected from the code: constructors,
  weight and bias layouts, label formats;
* :mod:`bench.checks.gradcheck` - tolerances, relative errors, central finite
  differences and the guarded calls into the user's code;
* :mod:`bench.checks.layers` - each module's cases, checked by finite
  differences, against torch autograd and for side effects;
* :mod:`bench.checks.network` - the whole MLP against torch autograd from copied weights;
* :mod:`bench.checks.diagnose` - the usual mistakes named, numerical stabilisers noted;
* :mod:`bench.checks.runner` - one implementation checked, into a report;
* :mod:`bench.checks.report` - the report's document and its Markdown text;
* :mod:`bench.checks.sandbox` - each check in a process of its own, with time and memory limits;
* :mod:`bench.checks.classwide` - a class of submissions, one table.
"""
