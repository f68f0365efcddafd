"""Every technique side by side under the same conditions: the fair comparison.

By default the seven of ``lossbench.contract.techniques.TECHNIQUES`` (the seed's four under
``--browser seed``); ``--techniques ajax,ajax-cachebust`` adds the cache-busting variant.

    locust -f scenarios/all.py  (or lossbench/scenarios/all.py) --headless -u 200 -t 60s

With no --host it starts the reference collector on a free loopback port. Options (also as environment
variables LOSSBENCH_*): --network-profile, --exit-model, --abort, --seed, --techniques, --close-mode,
--browser, --real-time, --run-dir; see --help.
"""

from lossbench.contract.techniques import ALL_TECHNIQUES
from lossbench.loadgen.locust.user import LossbenchUser
from lossbench.runner import attach_to_locust

attach_to_locust()


class AllTechniques(LossbenchUser):
    techniques = ALL_TECHNIQUES
