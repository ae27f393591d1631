"""Measuring a bandwidth-extension system: objective scores, a listening test, timings, test material.

Every tool is a module run from the repository root, ``python -m eval.<tool> ...`` (``eval/README.md``
lists them); the research diagnostics are the subcommands of ``python -m eval.research``. They import
``bwe``; nothing in ``bwe`` imports them.
"""
