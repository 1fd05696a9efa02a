"""Comparisons of ours with peers (keras.applications, plain tf.data, cat, tfrecord2idx, PIL), one module each:
``python -m effnet.benchmark.peers {step,input,reader,data,serve,accuracy}`` prints figures; not tests."""
