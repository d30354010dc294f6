"""Looking at SPIFFE material: what the agent serves and what our writers left on disk.

:mod:`.describe` turns certificates, SVIDs, bundles and JWT material into plain
dicts (the JSON ``inspect`` and ``watch`` print), :mod:`.detect` finds which
format wrote a file or directory and loads it, :mod:`.checks` says what is wrong
with what was found. The CLI modules only wire arguments to these.
"""
