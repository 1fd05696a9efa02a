"""Programs that compare this project with its peers, as users of the ``effnet`` package (not installed with
it): ``python -m benchmarks.peers <what>`` from the checkout's root prints figures; README has them."""
