"""What one stage leaves for the next, each format in its own module, shared by its writer and its readers (a
reader never imports the stage that writes): TFRecord shards (``records``, ``example_proto``, ``tfrecord``,
``images``), DALI indexes (``record_index``), training checkpoints (``checkpoints``), a finished train stage
(``trained_run``), an export (``exported_model``), benchmark results (``benchmark_results``) and dllogger records
(``dllog``). File names are ``effnet.core.layout``'s."""
