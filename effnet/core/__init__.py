"""Base helpers every layer may import: ``layout`` (every path under a run directory), ``config`` and
``batch_runs`` (the configuration and its runs), ``errors`` (input errors and exit statuses), ``atomic`` and
``jsonfile`` (writing and reading files safely), ``digests``, ``ranks`` and ``resources`` (where a process runs and
what it may use), ``timing``, ``provenance`` and ``environment``. What the cluster code imports from here
(``layout``, ``errors``, ``ranks``, ``resources``) loads the standard library only."""
