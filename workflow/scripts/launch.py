"""Entry point of a rule's job: ``python workflow/scripts/launch.py --rule R [options] -- <stage command>``
(the prefix ``effnet.cluster.requests.launch_prefix`` writes); the logic is ``effnet.cluster.job``."""
import sys

from effnet.cluster.job import main

if __name__ == "__main__":
    sys.exit(main())
