"""Data: TFRecord shards (prepare), DALI indexes (index) and the demo dataset."""
