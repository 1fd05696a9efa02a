"""Base helpers every layer may import: ``layout`` (every path under a run directory), ``config`` and
``batch_runs`` (the configuration and its runs), ``errors`` (input errors and exit statuses), ``atomic`` and
``jsonfile`` (writing and reading files safely), ``digests``, ``ranks``, ``resources`` and ``cgroup`` (where a
process runs, what it may use, what its memory cgroup allows and counted), ``diskspace``, ``timing``,
``provenance`` and ``environment``. What the cluster code imports from here (``layout``, ``errors``, ``jsonfile``,
``ranks``, ``resources``, ``cgroup``) loads the standard library only."""
