"""Registers the batch tests' stub stages in a `xairobust batch` subprocess (see batch_util.subprocess_env).

Python imports ``sitecustomize`` at start-up from the path; this folder is on PYTHONPATH only in
the environment the batch tests give their subprocesses. Registering stages is code the test
suite runs -- a zoo file only names them.
"""

try:
    import batch_stages  # noqa: F401
except ImportError:  # tests/ not on the path: nothing to register
    pass
