"""Comparisons of ours with peers (keras.applications, plain tf.data, cat, tfrecord2idx, PIL), one module each:
``python -m benchmarks.peers {step,input,reader,data,serve,accuracy,keras-fit,finetune}`` prints figures; they are
benchmarks, not tests (``tests/test_benchmark_scripts.py`` runs each at toy size so that none of them rots)."""
