"""The four techniques side by side under the same conditions: the fair comparison.

    locust -f scenarios/all.py  (or lossbench/loadgen/locust/scenarios/all.py) --headless -u 200 -t 60s

With no --host it starts the reference collector on a free loopback port. Options (also as environment
variables LOSSBENCH_*): --profile, --exit-model, --abort, --seed, --techniques, --run-dir; see --help.
"""

from lossbench.contract.techniques import TECHNIQUES
from lossbench.loadgen.locust.plugin import LossbenchUser


class AllTechniques(LossbenchUser):
    techniques = TECHNIQUES
