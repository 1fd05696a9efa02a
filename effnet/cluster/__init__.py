"""Running the stages on a cluster: what each rule asks SLURM for (``requests``), how its job starts the
stage (``job``), and the ledger of its attempts that decides retries (``ledger``)."""
