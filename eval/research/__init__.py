"""Research diagnostics: questions about where a system's scores come from, asked with references.

One tool, ``python -m eval.research SUBCOMMAND ...`` (``__main__`` lists the subcommands); each
subcommand is a module of this package with a ``main(argv)``. The helpers they share: the test
material and its flags (``inputs``), scoring on the files every variant can score (``scoring``)
and resynthesis with a changed high band (``high_band``). Several read the reference to build
oracles, so their figures are diagnostics, never results: results come from ``eval.evaluate``.
"""
