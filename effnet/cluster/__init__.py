"""Running the stages on a cluster: what each rule asks SLURM for (``requests``), how its job starts the
stage (``job``), the ledger of its attempts that decides retries (``ledger``), and the attempts that ended for
memory with what the next one asks for (``memory``)."""
