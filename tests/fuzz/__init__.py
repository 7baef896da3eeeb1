"""Coverage-guided fuzzing of everything chathack reads from the network.

``tests/fuzz/harnesses.py`` holds the harnesses, ``corpus/`` their seeds,
``python -m tests.fuzz`` runs a campaign (see README.md). This package
imports nothing of the project by itself: the atheris worker must import
the project under its instrumentation, after this file ran.
"""
